"""What a worker sees of its Agenda: one explicit, read-only view instead of the Agenda itself.

The run loop (``worker.py``), one run (``run.py``), fleet events and the test helpers receive a
:class:`WorkerContext` built by ``Agenda.worker_context()``. It names everything they use (the store,
the event bus, the definitions, the limits, how errors and run history are reported), so none of them
imports the Agenda or reads its internals, and a new way of running jobs (a child process, another
store) needs only this object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .definition import JobDefinition
    from .events import EventEmitter
    from .fork import ForkMethod
    from .job import Job, JobOwner
    from .store.base import JobStore

__all__ = ["WorkerContext"]


@dataclass(frozen=True)
class WorkerContext:
    """A worker's narrow view of its Agenda, taken when the worker (or a single run) starts.

    The settings are read once: an Agenda's options changed after ``start()`` apply from the next
    ``start()``. ``definitions`` is the Agenda's live mapping, so a name defined later is claimed too.
    """

    #: The worker's name (``lastModifiedBy`` of its writes, ``worker`` of its run records).
    name: str | None
    store: JobStore
    events: EventEmitter
    definitions: Mapping[str, JobDefinition]
    #: What claimed jobs are attached to (``job.agenda``): their ``save()``, ``touch()`` ... go there.
    owner: JobOwner
    #: Emits ``error`` (or logs it when nobody listens).
    report_error: Callable[[BaseException], Awaitable[None]]
    #: Whether a run of this job (with this definition) gets a run record.
    records_history: Callable[[Job, JobDefinition | None], bool]
    #: Called after a run record is finished: keeps the history of ``name`` bounded.
    trim_history: Callable[[str], Awaitable[None]]
    process_every: timedelta
    max_concurrency: int
    lock_limit: int
    default_lock_lifetime: timedelta
    dependency_check_every: timedelta
    remove_on_complete: bool
    change_streams: bool
    fork_method: ForkMethod

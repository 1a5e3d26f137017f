"""The store protocols: everything the façade and the worker need from a database.

Only implementations of :class:`JobStore` and :class:`RunStore` touch a database; the worker and the
façade work with :class:`~agendapy.job.Job` objects, aware UTC datetimes and the small dataclasses
below. Three stores exist: :class:`~agendapy.store.mongo.MongoJobStore`,
:class:`~agendapy.store.postgres.PostgresJobStore` (Node Agenda's ``agenda_jobs`` table; the
``postgres`` extra) and the in-memory :class:`~agendapy.testing.MemoryJobStore` for users' tests.

Writing a new store:

- **The rules are given, not re-invented.** Who may claim (:func:`~agendapy.store.queries.claim_filter`),
  fencing (``fence_filter``), one document per recurring job (``single_filter``/``single_update``),
  unique and debounced saves (``unique_filter``/``unique_update``), wake-ups (``WAKE_UP_PIPELINE``) and
  the run-record rules (``agendapy.store.runs``: ``takeover_filter``, ``trim_filter``, ...) are MongoDB
  filters and updates. A store sends them (MongoDB), translates them (PostgreSQL writes the claim and
  the fences in SQL, and applies the save updates and data filters with ``agendapy.store._mql``), or
  evaluates them (the in-memory store runs them all through ``agendapy.store._mql``); what a store
  returns goes through ``agendapy.store.common`` (``leased``, ``absorb``, ``count_overview``,
  ``fenced_state_write``, ...), and the batching of the state writes of runs through
  ``agendapy.store.state_batches.StateBatcher``.
- **Atomicity is the store's job.** ``claim`` must lock each job it returns in one atomic step (no two
  claims return the same job); every write through a lease must apply only while that lease's
  ``(lockedAt, lockToken)`` is still the stored one; a recurring name must never get two documents,
  even when two processes save it at once (MongoDB: the unique index ``agendapySingleJobName``).
- **Stored form.** Documents keep Node Agenda 6's field names (``agendapy.store.schema`` converts);
  dates are aware UTC with millisecond precision, as BSON stores them.
- **Optional parts, found by attribute.** ``logs`` (a log store for ``agenda.get_logs``; MongoDB's is a
  collection beside the jobs), ``run_changes`` (a feed of run state: fleet events) and
  ``worker_directory`` (a :class:`~agendapy.workers.WorkerDirectory`: ``agenda.workers()``,
  ``agenda.activity()``, the dashboard). MongoDB and PostgreSQL get a worker directory from
  ``agendapy.worker_registry`` (collections or tables beside the jobs); another store brings its own
  as a ``worker_directory`` property (looked up on its class), or lists and registers no workers, as
  the in-memory store.
- **The contract suite.** Add the store to ``BACKENDS`` in ``tests/contract/conftest.py``: every test
  of ``tests/contract`` then runs on it beside MongoDB; a store that passes it is a store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, Unpack

from ..job import Job

if TYPE_CHECKING:
    from ..schedule.ticks import RunInterval
    from .runs import RequiredRuns, RunFilter, RunRecord, RunStart, RunStatus

__all__ = [
    "ClaimQuota",
    "ClaimRequest",
    "JobCriteria",
    "JobQuery",
    "JobStore",
    "RunStore",
    "SortDirection",
    "WakeUpsUnavailable",
]


class WakeUpsUnavailable(Exception):
    """The database cannot notify changes (e.g. a standalone mongod has no change streams)."""


SortDirection = Literal["asc", "desc"]


@dataclass(frozen=True)
class JobCriteria:
    """Which jobs a cancel/disable/enable/query applies to (Agenda's RemoveJobsOptions)."""

    id: str | None = None
    ids: Sequence[str] | None = None
    name: str | None = None
    names: Sequence[str] | None = None
    not_names: Sequence[str] | None = None
    data: Any = None
    has_data: bool = False

    def is_empty(self) -> bool:
        """True when no criterion is given (Agenda then removes or changes nothing)."""
        return (
            self.id is None
            and self.ids is None
            and self.name is None
            and self.names is None
            and self.not_names is None
            and not self.has_data
        )


@dataclass(frozen=True)
class JobQuery:
    """``query_jobs`` options that the store applies (state filtering happens above it)."""

    criteria: JobCriteria = field(default_factory=JobCriteria)
    search: str | None = None
    include_disabled: bool = True
    sort: Mapping[str, SortDirection] | None = None
    skip: int = 0
    limit: int = 0


@dataclass(frozen=True)
class ClaimRequest:
    """One claim pass: lock the next job of ``names`` that is due by ``next_scan_at`` or whose lock expired.

    ``lock_deadlines`` gives, per name, the ``lockedAt`` at or before which a lock counts as expired.
    """

    names: Sequence[str]
    now: datetime
    next_scan_at: datetime
    lock_deadlines: Mapping[str, datetime]
    owner: str | None
    #: At most this many jobs of a name in one claim (its room under its own concurrency and lock
    #: limit); a name missing here is capped by the claim's total limit only.
    per_name: Mapping[str, int] | None = None
    #: The worker starts at once what this claim returns that is due by ``now`` (it claims for free
    #: slots). A store may then write the start of such a job with its lock, when the start needs
    #: nothing computed (:func:`~agendapy.store.queries.starts_with_claim`): ``start_fields`` in the
    #: same update, and a :class:`~agendapy.job.ClaimedStart` on the lease, so the run skips its start
    #: write. A store that does not ignores this (the run then writes its start as usual).
    start_due: bool = False
    #: The ids of the jobs the claiming worker holds already. Their locks are its own, kept fresh by
    #: its heartbeat: one that looks expired (a late heartbeat on a loaded machine) is never claimed
    #: again by the same worker, which would run the job a second time beside the run it has.
    held: frozenset[str] = frozenset()

    def only(self, names: Sequence[str]) -> ClaimRequest:
        """The same claim over ``names`` (a subset of this request's names)."""
        return replace(self, names=list(names))


class ClaimQuota:
    """How many more jobs one batched claim may take, in all and of each name.

    Every store picks a batch the same way: candidates in claim order, each taken while its name and
    the batch have room, so a name without room is skipped and never stops the others.
    """

    def __init__(self, request: ClaimRequest, limit: int) -> None:
        self._left = max(limit, 1)
        caps = request.per_name or {}
        self._room = {name: caps.get(name, self._left) for name in request.names}

    def open_names(self) -> list[str]:
        """The names that may still take a job (none once the batch is full)."""
        if self._left <= 0:
            return []
        return [name for name, room in self._room.items() if room > 0]

    def wanted(self) -> int:
        """How many more jobs the batch can take at most."""
        return min(self._left, sum(room for room in self._room.values() if room > 0))

    def take(self, name: object) -> bool:
        """Count one candidate of ``name`` in; False when its name or the batch has no room left."""
        if self._left <= 0 or not isinstance(name, str) or self._room.get(name, 0) <= 0:
            return False
        self._room[name] -= 1
        self._left -= 1
        return True


class RunStore(Protocol):
    """Run records: history, once-per-interval guards and dependency coverage.

    One record per run, keyed by a unique ``intervalKey`` (``agendapy.store.runs``): two starts that
    guard the same interval of the same job name cannot both record a new run.
    """

    async def start(self, **run: Unpack[RunStart]) -> str | None:
        """Record a run's start (see :class:`~agendapy.store.runs.RunStart`); with ``guard``, claim its
        interval: None when another run holds it (a run still "running" for the same job document is
        resumed instead: its id is returned). A ``"skipped"`` record is finished at once."""

    async def finish(
        self, run_id: str, *, status: RunStatus, finished_at: datetime, error: str | None
    ) -> None:
        """Record how a run ended."""

    async def trim(self, name: str) -> None:
        """Keep the newest records of ``name`` only."""

    async def query(self, *, limit: int, **where: Unpack[RunFilter]) -> list[RunRecord]:
        """Run records, newest first (of one job document with ``job_id``); ``limit`` 0: all."""

    async def coverage(self, name: str, interval: RunInterval) -> RequiredRuns:
        """The runs of ``name`` overlapping ``interval`` and the first and last interval it ran."""


class JobStore(Protocol):
    """What agendapy needs from a database (see the module's notes on writing one).

    Saving: ``save_job``, ``insert_many``. One run: ``claim``, ``save_state``,
    ``save_state_batched``, ``renew_locks``, ``release``, ``refresh_run_fields``,
    ``remove_finished``. Wake-ups:
    ``due_changes``. Reading and bulk changes: ``get_job``, ``query``, ``fetch_all_states``,
    ``overview``, ``queue_size``, ``distinct_names``, ``remove``, ``remove_all``, ``set_disabled``.
    Run records: ``runs``. Implemented by ``MongoJobStore``, ``PostgresJobStore`` and
    ``MemoryJobStore``; the optional ``logs``, ``run_changes`` and ``worker_directory`` are outside
    the protocol (see the module's notes).
    """

    @property
    def runs(self) -> RunStore:
        """Run records (history, interval guards, dependency checks)."""

    async def connect(self) -> None:
        """Open the connection and create the indexes."""

    async def close(self) -> None:
        """Release the connection if this store owns it."""

    async def save_job(
        self, job: Job, *, now: datetime, last_modified_by: str | None, lock_token: str | None = None
    ) -> Job | None:
        """Insert/update/upsert ``job`` (Agenda's saveJob); sets ``job.id`` and what the database decided.

        A job with an id updates its document (``saved_filter``); ``every()`` keeps one document per
        name (``single_filter``/``single_update``); ``unique()`` upserts into ``unique_filter`` with
        ``unique_update`` (debounce included); anything else is inserted.

        With ``lock_token``, a new plain job (no id, not ``every``, not ``unique``) is inserted already
        locked, as a claim at ``now`` with that token would have locked it, and a copy of it carrying
        the Lease is returned (locking on the fly). Otherwise, and for updates and upserts, which
        ignore the token, it returns None.
        """

    async def insert_many(self, jobs: Sequence[Job], *, last_modified_by: str | None) -> None:
        """Insert new plain jobs in bulk; sets their ids."""

    async def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None."""

    async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
        """Atomically lock up to ``limit`` jobs for this worker, in claim order, at most
        ``request.per_name[name]`` of each name (see :class:`ClaimQuota`); each returned job carries a
        Lease with ``token``.

        Claimable: ``claim_filter``, in ``CLAIM_SORT`` order; locked by ``claim_update``. No two claims
        return the same job. A document that cannot be read is failed and unlocked at once
        (``unreadable_failure``) and the next one taken in its place.
        """

    async def save_state(self, job: Job, *, fields: Sequence[str] | None = None) -> bool:
        """Write the worker-managed fields (all, or those named); fenced by the job's lease if it has one.

        Returns False when nothing matched: the job is gone, or its lock was taken over.
        """

    async def save_state_batched(self, job: Job, *, stamp: Collection[str] = ()) -> bool:
        """``save_state`` of every field; writes issued close together may be sent as one batch.

        ``stamp`` names attributes (``last_run_at``, ``last_finished_at``) the store sets to the
        moment it writes (the job holds the written value afterwards).
        """

    async def remove_finished(self, job_id: str) -> None:
        """Delete a finished one-off job by id (``remove_on_complete``, as ``remove()`` would);
        deletions issued close together may be sent as one batch."""

    def due_changes(self) -> AsyncIterator[tuple[str, datetime | None]]:
        """``(name, nextRunAt)`` of jobs that may have become claimable, as they change: the writes
        ``WAKE_UP_PIPELINE`` admits, by any writer. Raises WakeUpsUnavailable when the database cannot
        notify (the worker then polls only)."""

    async def renew_locks(self, jobs: Sequence[Job], now: datetime) -> list[Job]:
        """Move ``lockedAt`` to ``now`` for each leased job (fenced); returns the jobs whose lock was lost."""

    async def release(self, jobs: Sequence[Job], *, reschedule_at: datetime | None = None) -> None:
        """Unlock leased jobs (fenced, ``release_values``); with ``reschedule_at``, also make them due
        then; a job without a next run becomes due now, so no release strands it."""

    async def refresh_run_fields(self, job: Job) -> None:
        """Reload lastRunAt, lockedAt and lastFinishedAt from the database (raises JobNotFound)."""

    async def query(self, query: JobQuery) -> tuple[list[Job], int]:
        """Jobs matching the query, and how many match without skip/limit."""

    async def fetch_all_states(self, query: JobQuery) -> list[Job]:
        """Every matching job with the fields needed to compute its state (for state filters)."""

    async def overview(self, now: datetime) -> list[dict[str, Any]]:
        """Per job name: total and a count per state (Agenda's getJobsOverview)."""

    async def remove(self, criteria: JobCriteria) -> int:
        """Delete the matching jobs; no criteria deletes nothing."""

    async def remove_all(self) -> int:
        """Delete every job."""

    async def set_disabled(self, criteria: JobCriteria, disabled: bool) -> int:
        """Set ``disabled`` on the matching jobs; returns how many changed."""

    async def queue_size(self, now: datetime) -> int:
        """How many jobs are due (nextRunAt < now)."""

    async def distinct_names(self) -> list[str]:
        """The job names present in the collection."""


def is_job_store(obj: object) -> bool:
    """Whether ``obj`` implements JobStore (checked on its type, so no property is evaluated)."""
    kind = type(obj)
    return all(
        hasattr(kind, method) for method in ("connect", "claim", "save_job", "save_state", "renew_locks")
    )

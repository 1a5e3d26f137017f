"""What ``agenda.define`` records for a job name."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from .backoff import BackoffStrategy
    from .job import Job

__all__ = ["Handler", "JobDefinition"]

Handler: TypeAlias = Callable[["Job"], Awaitable[Any]] | Callable[["Job"], Any]


@dataclass
class JobDefinition:
    """A named handler and the options it runs with (defaults already resolved from the Agenda)."""

    name: str
    fn: Handler
    concurrency: int
    lock_limit: int
    lock_lifetime: timedelta
    priority: int
    backoff: BackoffStrategy | None = None
    remove_on_complete: bool = False
    timeout: timedelta | None = None
    #: Run each interval of a recurring schedule at most once across all workers.
    once_per_interval: bool = False
    #: Record every run in the run history (None: the Agenda's ``history`` setting decides).
    history: bool | None = None
    #: Run each job of this name in a child process (see ``agendapy.fork``).
    fork: bool = False
    #: Write this name's job log (None: the Agenda's ``logging`` setting decides).
    logging: bool | None = None
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        self.is_async = _is_async_callable(self.fn)

    def config(self) -> dict[str, Any]:
        """The definition as ``running_stats`` shows it."""
        return {
            "fn": self.fn,
            "concurrency": self.concurrency,
            "lock_limit": self.lock_limit,
            "lock_lifetime": self.lock_lifetime,
            "priority": self.priority,
            "timeout": self.timeout,
            "remove_on_complete": self.remove_on_complete,
            "once_per_interval": self.once_per_interval,
            "fork": self.fork,
        }


def _is_async_callable(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn) or asyncio.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)

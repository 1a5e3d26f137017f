"""The options of an ``Agenda``, each declared once with the converter that checks and normalizes it.

``AgendaOptions.convert(...)`` takes what a user passed to ``Agenda(...)`` and returns the settled
values (durations as ``timedelta``, counts as checked ints). Fields are converted in declaration
order, so with several bad arguments the first one reported is always the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from . import schedule as sched
from .definition import Handler, JobDefinition
from .errors import InvalidInput
from .fork import DEFAULT_METHOD, ForkMethod, check_importable
from .validate import check_job_name, parse_priority

if TYPE_CHECKING:
    from .backoff import BackoffStrategy

__all__ = ["AgendaOptions", "DefineOptions", "Duration", "HistoryMode", "job_definition", "positive_int"]

HistoryMode = Literal["all", "recurring", "none"]
#: A duration as users give it: seconds, a timedelta, or a string such as "5 minutes".
Duration = str | int | float | timedelta


def positive_int(value: Any, field_name: str, *, allow_zero: bool = False) -> int:
    """A count: an int, 1 or more (0 or more with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        limit = "0 or more" if allow_zero else "1 or more"
        raise InvalidInput(field_name, value, f"must be an int, {limit}")
    return value


def _count(value: Any, name: str) -> int:
    return positive_int(value, name)


def _limit(value: Any, name: str) -> int:
    # A lock limit: 0 means no fixed limit.
    return positive_int(value, name, allow_zero=True)


def _duration(value: Any, name: str) -> timedelta:
    return sched.to_timedelta(value, field=name)


def _optional_duration(value: Any, name: str) -> timedelta | None:
    return None if value is None else _duration(value, name)


def _flag(value: Any, name: str) -> bool:
    return bool(value)


def _history(value: Any, name: str) -> HistoryMode:
    if value not in ("all", "recurring", "none"):
        raise InvalidInput(name, value, "must be 'all', 'recurring' or 'none'")
    mode: HistoryMode = value
    return mode


def _state_write_window(value: Any, name: str) -> timedelta:
    # A plain 0 means "only the writes of one event-loop turn"; every other value is a duration.
    window = (
        timedelta(0) if value == 0 and not isinstance(value, bool) else sched.to_timedelta(value, field=name)
    )
    if window > timedelta(seconds=1):
        raise InvalidInput(name, value, "must be at most 1 second")
    return window


def _collection_name(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or "$" in value or "\x00" in value or len(value) > 120:
        raise InvalidInput(name, value, "must be a collection name (text without $ or NUL)")
    return value


def _fork_method(value: Any, name: str) -> ForkMethod:
    if value is None:
        return DEFAULT_METHOD
    if value not in ("forkserver", "spawn"):
        raise InvalidInput(name, value, "must be 'forkserver' or 'spawn'")
    method: ForkMethod = value
    return method


@dataclass(frozen=True, kw_only=True)
class AgendaOptions:
    """The converted options of an ``Agenda`` (see its docstring for what each one means)."""

    process_every: timedelta = field(metadata={"convert": _duration})
    max_concurrency: int = field(metadata={"convert": _count})
    default_concurrency: int = field(metadata={"convert": _count})
    lock_limit: int = field(metadata={"convert": _limit})
    default_lock_limit: int = field(metadata={"convert": _limit})
    default_lock_lifetime: timedelta = field(metadata={"convert": _duration})
    remove_on_complete: bool = field(metadata={"convert": _flag})
    history: HistoryMode = field(metadata={"convert": _history})
    history_ttl: timedelta = field(metadata={"convert": _duration})
    history_keep: int = field(metadata={"convert": _count})
    #: Given as None: ``process_every`` (settled by ``convert``).
    dependency_check_every: timedelta = field(metadata={"convert": _optional_duration})
    change_streams: bool = field(metadata={"convert": _flag})
    state_write_window: timedelta = field(metadata={"convert": _state_write_window})
    fork_method: ForkMethod = field(metadata={"convert": _fork_method})
    fleet_events: bool = field(metadata={"convert": _flag})
    logging: bool = field(metadata={"convert": _flag})
    logs_collection: str = field(metadata={"convert": _collection_name})
    #: None keeps log entries for good, as Agenda does.
    logs_ttl: timedelta | None = field(metadata={"convert": _optional_duration})
    workers_collection: str = field(metadata={"convert": _collection_name})
    activity_collection: str = field(metadata={"convert": _collection_name})
    heartbeat_every: timedelta = field(metadata={"convert": _duration})

    @classmethod
    def convert(cls, **given: Any) -> AgendaOptions:
        """Check and convert every option (all must be given); raises ``InvalidInput`` (or
        ``InvalidInterval`` for durations) naming the first bad argument and its value."""
        # Each field's converter takes (value, argument name) and returns the settled value.
        values = {f.name: f.metadata["convert"](given[f.name], f.name) for f in fields(cls)}
        if values["dependency_check_every"] is None:
            values["dependency_check_every"] = values["process_every"]
        return cls(**values)


class DefineOptions(TypedDict, total=False):
    """The options of ``agenda.define``; each one left out takes the Agenda's default.

    Attributes:
        concurrency: runs of this name at once in this process.
        lock_limit: jobs of this name this process may hold locked at once (0 = no fixed limit).
        lock_lifetime: how long a lock lasts without renewal.
        priority: an int or "lowest", "low", "normal", "high", "highest".
        backoff: retries after a failure: a strategy from ``agendapy.backoff`` or a callable.
        remove_on_complete: delete one-off jobs after they succeed.
        timeout: a run longer than this fails.
        once_per_interval: each interval of a recurring schedule runs at most once across all workers.
        history: record every run in ``agenda.runs()`` (default: the Agenda's ``history`` setting).
        fork: run each job in a child process that imports the handler by its module path (a
            module-level function outside ``__main__``).
        logging: write this name's job log (default: the Agenda's ``logging`` setting).
    """

    concurrency: int | None
    lock_limit: int | None
    lock_lifetime: Duration | None
    priority: int | str | None
    backoff: BackoffStrategy | None
    remove_on_complete: bool | None
    timeout: Duration | None
    once_per_interval: bool
    history: bool | None
    fork: bool
    logging: bool | None


_DEFINE_KEYWORDS = frozenset(DefineOptions.__annotations__)


def job_definition(
    name: str,
    fn: Handler,
    given: Mapping[str, Any],
    *,
    concurrency: int,
    lock_limit: int,
    lock_lifetime: timedelta,
    remove_on_complete: bool,
) -> JobDefinition:
    """Check ``define``'s arguments (``given``: its options) into a definition; the keyword-only
    arguments are the Agenda's defaults for options not given."""
    unknown = sorted(set(given) - _DEFINE_KEYWORDS)
    if unknown:
        # What Python says of a keyword no signature takes: **options must not swallow typos.
        raise TypeError(f"define() got an unexpected keyword argument {unknown[0]!r}")
    check_job_name(name)
    if not callable(fn):
        raise InvalidInput("fn", fn, "the handler must be callable")
    fork = given.get("fork", False)
    if not isinstance(fork, bool):
        raise InvalidInput("fork", fork, "must be True or False")
    if fork:
        check_importable(fn)
    logging = given.get("logging")
    if logging is not None and not isinstance(logging, bool):
        raise InvalidInput("logging", logging, "must be True, False or None")
    backoff = given.get("backoff")
    if backoff is not None and not callable(backoff):
        raise InvalidInput("backoff", backoff, "must be a strategy from agendapy.backoff or a callable")

    def option(key: str, convert: Any, default: Any) -> Any:
        value = given.get(key)
        return default if value is None else convert(value, key)

    return JobDefinition(
        name=name,
        fn=fn,
        concurrency=option("concurrency", _count, concurrency),
        lock_limit=option("lock_limit", _limit, lock_limit),
        lock_lifetime=option("lock_lifetime", _duration, lock_lifetime),
        priority=parse_priority(given.get("priority")),
        backoff=backoff,
        remove_on_complete=option("remove_on_complete", _flag, remove_on_complete),
        timeout=option("timeout", _duration, None),
        once_per_interval=bool(given.get("once_per_interval", False)),
        history=given.get("history"),
        fork=fork,
        logging=logging,
    )

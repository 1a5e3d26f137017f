"""The options of an ``Agenda``, each declared once with the converter that checks and normalizes it.

``AgendaOptions.convert(...)`` takes what a user passed to ``Agenda(...)`` and returns the settled
values (durations as ``timedelta``, counts as checked ints). Fields are converted in declaration
order, so with several bad arguments the first one reported is always the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any, Literal

from . import schedule as sched
from .errors import InvalidInput
from .fork import DEFAULT_METHOD, ForkMethod

__all__ = ["AgendaOptions", "HistoryMode", "positive_int"]

HistoryMode = Literal["all", "recurring", "none"]


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

    @classmethod
    def convert(cls, **given: Any) -> AgendaOptions:
        """Check and convert every option (all must be given); raises ``InvalidInput`` (or
        ``InvalidInterval`` for durations) naming the first bad argument and its value."""
        # Each field's converter takes (value, argument name) and returns the settled value.
        values = {f.name: f.metadata["convert"](given[f.name], f.name) for f in fields(cls)}
        if values["dependency_check_every"] is None:
            values["dependency_check_every"] = values["process_every"]
        return cls(**values)

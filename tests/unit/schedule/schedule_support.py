"""Helpers shared by the schedule unit tests (they import it as ``schedule_support``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from agendapy.errors import InvalidInput
from agendapy.schedule.next_run import compute_next_run_at

T = TypeVar("T")
NEW_YORK = ZoneInfo("America/New_York")
VIENNA = ZoneInfo("Europe/Vienna")
TOKYO = ZoneInfo("Asia/Tokyo")
AUCKLAND = ZoneInfo("Pacific/Auckland")
NOW = datetime(2024, 3, 10, 12, 34, 56, 789000, tzinfo=UTC)  # a Sunday


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def outcome(call: Callable[[], T]) -> tuple[T | None, InvalidInput | None]:
    """Run ``call``; return its result, or the input error it raised (any other exception escapes)."""
    try:
        return call(), None
    except InvalidInput as error:
        return None, error


def ms(value: float) -> timedelta:
    return timedelta(milliseconds=value)


def next_run(**kwargs: Any) -> datetime | None:
    options: dict[str, Any] = {"repeat_interval": None, "repeat_timezone": None, "repeat_at": None}
    options.update(kwargs)
    options.setdefault("now", NOW)
    options.setdefault("last_run_at", None)
    return compute_next_run_at(**options)


MS = timedelta(milliseconds=1)

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.timedeltas(),
    st.dictionaries(
        st.one_of(st.text(max_size=12), st.sampled_from(["minutes", "days"])),
        st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
        max_size=3,
    ),
    st.lists(st.integers(), max_size=3),
)

"""Durations given to the Python API: human and ISO-8601 strings, seconds, timedeltas, mappings."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from schedule_support import anything, ms, outcome

from agendapy.errors import InvalidInterval
from agendapy.schedule.durations import to_timedelta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 minutes", timedelta(minutes=3)),
        ("1 hour and 30 minutes", timedelta(minutes=90)),
        ("2 hours, 30 minutes", timedelta(minutes=150)),
        ("1.5 days", timedelta(hours=36)),
        ("one second", timedelta(seconds=1)),
        ("two hours", timedelta(hours=2)),
        ("an hour", timedelta(hours=1)),
        ("a minute", timedelta(minutes=1)),
        ("5 seconds", timedelta(seconds=5)),
        ("10ms", ms(10)),
        ("500 milliseconds", ms(500)),
        ("250 us", timedelta(microseconds=250)),
        ("1 week", timedelta(weeks=1)),
        ("2 months", timedelta(days=60)),
        ("1 year", timedelta(days=365)),
        ("minute", timedelta(minutes=1)),
        ("thirty three seconds", timedelta(seconds=33)),
        ("twenty-five minutes", timedelta(minutes=25)),
        ("hundred and three seconds and twelve minutes", timedelta(seconds=103, minutes=12)),
        ("1h30m", timedelta(minutes=90)),
        ("3 Minutes", timedelta(minutes=3)),
        ("  5 seconds  ", timedelta(seconds=5)),
        ("PT15M", timedelta(minutes=15)),
        ("P1D", timedelta(days=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P2W", timedelta(weeks=2)),
        ("P1M", timedelta(days=30)),
        ("P1Y", timedelta(days=365)),
        ("pt1.5s", timedelta(seconds=1.5)),
    ],
)
def test_to_timedelta_reads_human_and_iso_strings(text: str, expected: timedelta) -> None:
    assert to_timedelta(text, field="every") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, timedelta(seconds=5)),
        (0.25, timedelta(milliseconds=250)),
        (timedelta(minutes=2), timedelta(minutes=2)),
        ({"minutes": 15, "hours": 1}, timedelta(minutes=75)),
        ({"weeks": 1, "milliseconds": 5, "microseconds": 7}, timedelta(weeks=1, microseconds=5007)),
        ({"seconds": 0.5}, timedelta(milliseconds=500)),
    ],
)
def test_to_timedelta_reads_numbers_as_seconds_timedeltas_and_mappings(
    value: Any, expected: timedelta
) -> None:
    assert to_timedelta(value, field="every") == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.5,
        "-5 minutes",
        timedelta(seconds=-1),
        {"minutes": -1},
        0,
        0.0,
        "0 seconds",
        timedelta(0),
        {},
        {"minutes": 0},
        math.nan,
        math.inf,
        -math.inf,
        True,
        False,
        None,
        [],
        b"5 seconds",
        "",
        "   ",
        "5000",
        "0x10",
        "foo",
        "every 5 minutes",
        "5 minutes foo",
        "5 3 minutes",
        "five five seconds",
        "1 fortnight",
        "P",
        "PT-5M",
        "-PT5M",
        {"fortnights": 1},
        {"minutes": "5"},
        {"minutes": True},
        {"minutes": math.nan},
        10**30,
        "1e400 seconds",
        {"days": 10**12},
    ],
)
def test_to_timedelta_rejects_bad_durations_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidInterval) as caught:
        to_timedelta(value, field="lock_lifetime")
    assert caught.value.field == "lock_lifetime"
    assert "lock_lifetime" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_to_timedelta_accepts_zero_only_when_allowed() -> None:
    assert to_timedelta(0, field="delay", allow_zero=True) == timedelta(0)
    assert to_timedelta("0 seconds", field="delay", allow_zero=True) == timedelta(0)
    with pytest.raises(InvalidInterval):
        to_timedelta(-1, field="delay", allow_zero=True)


def test_bare_number_strings_are_refused_as_ambiguous() -> None:
    with pytest.raises(InvalidInterval, match="ambiguous"):
        to_timedelta("5000", field="interval")


@given(anything)
def test_to_timedelta_returns_a_duration_or_raises_invalid_interval(value: Any) -> None:
    result, error = outcome(lambda: to_timedelta(value, field="dur"))
    if error is not None:
        assert isinstance(error, InvalidInterval)
        assert error.field == "dur"
        return
    assert isinstance(result, timedelta)
    assert result > timedelta(0)

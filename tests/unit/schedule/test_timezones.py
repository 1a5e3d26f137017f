"""Instants and timezones: aware UTC in whole milliseconds, IANA zone names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from schedule_support import TOKYO, outcome, utc

from agendapy.errors import InvalidDate, InvalidTimezone
from agendapy.schedule.timezones import parse_timezone, to_utc, utcnow

# ---------------------------------------------------------------------------------------------------
# Instants
# ---------------------------------------------------------------------------------------------------


def test_utcnow_is_aware_utc_in_whole_milliseconds() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert now.microsecond % 1000 == 0


def test_to_utc_reads_naive_as_utc_converts_aware_and_truncates_to_milliseconds() -> None:
    assert to_utc(datetime(2024, 1, 1, 12, 0, 0, 123999)) == utc(2024, 1, 1, 12, 0, 0, 123000)
    assert to_utc(datetime(2024, 1, 1, 12, tzinfo=TOKYO)) == utc(2024, 1, 1, 3)
    assert to_utc(datetime(2024, 1, 1, 12, tzinfo=TOKYO)).tzinfo is UTC


def test_to_utc_rejects_what_is_not_a_datetime() -> None:
    with pytest.raises(InvalidDate):
        to_utc("2024-01-01")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# Timezones
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Europe/Vienna", "Europe/Vienna"),
        ("europe/vienna", "Europe/Vienna"),
        ("UTC", "UTC"),
        ("utc", "UTC"),
        ("GMT", "GMT"),
        ("America/New_York", "America/New_York"),
        ("Etc/GMT+5", "Etc/GMT+5"),
    ],
)
def test_parse_timezone(name: str, expected: str) -> None:
    zone = parse_timezone(name)
    assert zone is not None
    assert zone.key == expected


def test_parse_timezone_none_or_empty_is_no_timezone() -> None:
    assert parse_timezone(None) is None
    assert parse_timezone("") is None


@pytest.mark.parametrize(
    "name",
    ["Mars/Olympus", "../etc/passwd", "/etc/localtime", "America", "\x00", "x" * 5000, " ", 5, ["UTC"]],
)
def test_parse_timezone_rejects_unknown_names(name: Any) -> None:
    with pytest.raises(InvalidTimezone) as caught:
        parse_timezone(name, field="repeat_timezone")
    assert caught.value.field == "repeat_timezone"


@given(st.text(max_size=40))
def test_parse_timezone_returns_a_zone_or_raises_invalid_timezone(name: str) -> None:
    zone, error = outcome(lambda: parse_timezone(name))
    if error is not None:
        assert isinstance(error, InvalidTimezone)
        assert error.field == "timezone"
        return
    assert zone is None or isinstance(zone, ZoneInfo)

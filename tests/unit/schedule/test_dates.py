"""When to run: datetimes, "now", ISO-8601, "in 20 minutes", natural language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schedule_support import NEW_YORK, NOW, TOKYO, ms, outcome, utc

from agendapy.errors import InvalidDate
from agendapy.schedule.dates import parse_when


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("now", None, NOW),
        ("NOW", None, NOW),
        ("2019-04-30T22:31:00.00Z", None, datetime.fromtimestamp(1556663460, UTC)),  # Agenda #807
        ("2019-04-30T22:31:00.00Z", TOKYO, datetime.fromtimestamp(1556663460, UTC)),
        ("2024-05-01", None, utc(2024, 5, 1)),
        ("2024-05-01 10:00", TOKYO, utc(2024, 5, 1, 1)),  # no offset: wall time in the timezone
        ("2024-05-01T10:00:00+02:00", TOKYO, utc(2024, 5, 1, 8)),
        ("in 20 minutes", None, NOW + timedelta(minutes=20)),
        ("in 1 hour", None, NOW + timedelta(hours=1)),
        ("in an hour", None, NOW + timedelta(hours=1)),
        ("in 10ms", None, NOW + ms(10)),
        ("20 minutes from now", None, NOW + timedelta(minutes=20)),
        ("2 hours ago", None, NOW - timedelta(hours=2)),
        ("tomorrow at noon", None, utc(2024, 3, 11, 12)),
        ("tomorrow at noon", TOKYO, utc(2024, 3, 11, 3)),
        ("tomorrow at noon", NEW_YORK, utc(2024, 3, 11, 16)),  # EDT
        ("3:30pm", None, utc(2024, 3, 10, 15, 30)),
        ("next monday at 9am", None, utc(2024, 3, 11, 9)),
        ("Tue, 30 Apr 2019 22:31:00 GMT", None, datetime.fromtimestamp(1556663460, UTC)),
    ],
)
def test_parse_when_reads_strings(text: str, zone: ZoneInfo | None, expected: datetime) -> None:
    assert parse_when(text, now=NOW, timezone=zone) == expected


def test_parse_when_reads_datetimes() -> None:
    assert parse_when(datetime(2024, 1, 1, 12, 0, 0, 999999)) == utc(2024, 1, 1, 12, 0, 0, 999000)
    assert parse_when(datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))) == utc(2024, 1, 1, 10)


def test_parse_when_results_are_utc_in_whole_milliseconds() -> None:
    result = parse_when("in 20 minutes", now=datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC))
    assert result == utc(2024, 1, 1, 0, 20, 0, 123000)
    assert result.tzinfo is UTC


@pytest.mark.parametrize("value", ["foo", "", "   ", "in 5", 5, None, 1.5, [], b"now"])
def test_parse_when_rejects_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidDate) as caught:
        parse_when(value, now=NOW, field="start_date")
    assert caught.value.field == "start_date"
    assert "start_date" in str(caught.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=25),
        st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
        st.integers(),
        st.none(),
    )
)
def test_parse_when_returns_utc_milliseconds_or_raises_invalid_date(value: Any) -> None:
    result, error = outcome(lambda: parse_when(value, now=NOW))
    if error is not None:
        assert isinstance(error, InvalidDate)
        assert error.field == "when"
        return
    assert result is not None
    assert result.tzinfo is UTC
    assert result.microsecond % 1000 == 0

"""Ticks of a schedule and the run intervals between them, in the job's timezone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from schedule_support import VIENNA, utc

from agendapy.errors import InvalidInterval
from agendapy.schedule.repeat import RepeatSpec, interval_from_document
from agendapy.schedule.ticks import RunInterval, interval_ending_at_or_before, tick_after, tick_at_or_before

HOURLY = interval_from_document(3_600_000)
QUARTER = interval_from_document("15 minutes")
DAILY_AT_9 = interval_from_document("0 9 * * *")
KATHMANDU = ZoneInfo("Asia/Kathmandu")  # UTC+05:45: wall-clock ticks fall at odd UTC minutes


def test_fixed_lengths_tick_on_the_wall_clock_of_the_timezone() -> None:
    at = utc(2026, 1, 1, 10, 20)  # 16:05 in Kathmandu
    assert tick_at_or_before(HOURLY, at, None) == utc(2026, 1, 1, 10)
    assert tick_at_or_before(HOURLY, at, KATHMANDU) == utc(2026, 1, 1, 10, 15)  # 16:00 there
    assert tick_at_or_before(QUARTER, at, KATHMANDU) == utc(2026, 1, 1, 10, 15)
    assert tick_after(QUARTER, at, KATHMANDU) == utc(2026, 1, 1, 10, 30)


def test_cron_ticks_are_its_occurrences_in_the_timezone() -> None:
    at = utc(2026, 1, 5, 12)
    assert tick_at_or_before(DAILY_AT_9, at, VIENNA) == utc(2026, 1, 5, 8)  # 09:00 CET
    assert tick_after(DAILY_AT_9, at, VIENNA) == utc(2026, 1, 6, 8)
    assert interval_ending_at_or_before(DAILY_AT_9, at, VIENNA) == RunInterval(
        utc(2026, 1, 4, 8), utc(2026, 1, 5, 8)
    )


def test_a_tick_is_at_or_before_itself_and_the_next_one_strictly_after() -> None:
    tick = utc(2026, 3, 2, 9)
    assert tick_at_or_before(HOURLY, tick, None) == tick
    assert tick_after(HOURLY, tick, None) == utc(2026, 3, 2, 10)
    assert tick_at_or_before(DAILY_AT_9, tick, None) == tick
    assert tick_after(DAILY_AT_9, tick, None) == utc(2026, 3, 3, 9)


def test_the_run_due_at_a_tick_handles_the_interval_that_ends_there() -> None:
    # An hourly job running at 10:00 (or late, at 10:40) handles [09:00, 10:00).
    expected = RunInterval(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10))
    assert interval_ending_at_or_before(HOURLY, utc(2026, 3, 2, 10), None) == expected
    assert interval_ending_at_or_before(HOURLY, utc(2026, 3, 2, 10, 40), None) == expected


def test_a_cron_with_no_earlier_occurrence_is_refused() -> None:
    # At the first instant a datetime can hold, January 2nd has not happened yet.
    second_of_january = interval_from_document("0 0 2 1 *")
    with pytest.raises(InvalidInterval, match="no earlier occurrence"):
        tick_at_or_before(second_of_january, datetime(1, 1, 1, 12, tzinfo=UTC), None)


def test_run_intervals_contain_the_intervals_within_them() -> None:
    day = RunInterval(utc(2026, 3, 2), utc(2026, 3, 3))
    assert day.contains(RunInterval(utc(2026, 3, 2, 9), utc(2026, 3, 2, 10)))
    assert day.contains(day)
    assert not day.contains(RunInterval(utc(2026, 3, 2, 23), utc(2026, 3, 3, 1)))


specs = st.sampled_from(
    [HOURLY, QUARTER, DAILY_AT_9, interval_from_document("*/20 * * * * *"), interval_from_document(90_000)]
)
zones = st.sampled_from([None, VIENNA, KATHMANDU, ZoneInfo("America/New_York")])
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
).map(lambda at: at.replace(microsecond=at.microsecond // 1000 * 1000))


@given(specs, instants, zones)
def test_at_lies_between_the_tick_at_or_before_it_and_the_tick_after_it(
    spec: RepeatSpec, at: datetime, zone: ZoneInfo | None
) -> None:
    before, after = tick_at_or_before(spec, at, zone), tick_after(spec, at, zone)
    assert before <= at < after
    handled = interval_ending_at_or_before(spec, at, zone)
    assert handled.ended_at == before
    assert handled.started_at < handled.ended_at
    assert handled.ended_at - handled.started_at <= timedelta(days=2)  # one tick apart, DST included

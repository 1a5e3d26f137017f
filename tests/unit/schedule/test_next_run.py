"""Agenda's computeNextRunAt (its job tests 196-210) and date constraints (test/date-constraints.test.ts).

No test reads the clock: ``now`` is always passed in.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from schedule_support import AUCKLAND, NEW_YORK, NOW, ms, next_run, utc

from agendapy.errors import InvalidDate, InvalidInput, InvalidInterval, InvalidTimezone
from agendapy.schedule.next_run import apply_date_constraints, parse_skip_days

# ---------------------------------------------------------------------------------------------------
# Date constraints (Agenda's test/date-constraints.test.ts)
# ---------------------------------------------------------------------------------------------------

MONDAY = utc(2024, 1, 15, 14, 30)
SATURDAY = utc(2024, 1, 13, 14, 30)
SUNDAY = utc(2024, 1, 14, 14, 30)


def constrain(when: datetime | None, **kwargs: Any) -> datetime | None:
    options: dict[str, Any] = {"start_date": None, "end_date": None, "skip_days": None, "timezone": None}
    options.update(kwargs)
    return apply_date_constraints(when, **options)


def test_no_constraints_change_nothing() -> None:
    assert constrain(MONDAY) == MONDAY
    assert constrain(MONDAY, skip_days=[]) == MONDAY
    assert constrain(None, start_date=MONDAY) is None


def test_start_and_end_dates() -> None:
    assert constrain(SATURDAY, start_date=MONDAY) == MONDAY
    assert constrain(MONDAY, start_date=SATURDAY) == MONDAY
    assert constrain(MONDAY, end_date=SATURDAY) is None
    assert constrain(SATURDAY, start_date=SATURDAY, end_date=MONDAY) == SATURDAY


def test_skip_days_move_forward_keeping_the_time_of_day() -> None:
    assert constrain(MONDAY, skip_days=[1]) == utc(2024, 1, 16, 14, 30)
    assert constrain(SUNDAY, skip_days=[0]) == MONDAY
    assert constrain(SATURDAY, skip_days=[0, 6]) == MONDAY
    assert constrain(MONDAY, skip_days=[0, 6]) == MONDAY
    assert constrain(MONDAY, skip_days=[0, 1, 2, 3, 4, 5, 6]) is None


def test_skip_days_are_read_in_the_timezone() -> None:
    sunday_utc_monday_auckland = utc(2024, 1, 14, 20)  # Monday 09:00 in Auckland (+13)
    assert constrain(sunday_utc_monday_auckland, skip_days=[0]) == utc(2024, 1, 15, 20)
    assert (
        constrain(sunday_utc_monday_auckland, skip_days=[0], timezone=AUCKLAND) == sunday_utc_monday_auckland
    )
    assert constrain(sunday_utc_monday_auckland, skip_days=[1], timezone=AUCKLAND) == utc(2024, 1, 15, 20)


def test_skip_days_keep_the_wall_time_across_dst() -> None:
    saturday_9am_new_york = utc(2024, 3, 9, 14)  # EST
    assert constrain(saturday_9am_new_york, skip_days=[6, 0], timezone=NEW_YORK) == utc(
        2024, 3, 11, 13
    )  # EDT


def test_start_date_then_skip_days_then_end_date() -> None:
    assert constrain(utc(2024, 1, 1), start_date=SATURDAY, skip_days=[0, 6]) == MONDAY
    assert constrain(SATURDAY, skip_days=[0, 6], end_date=SUNDAY) is None


def test_constraints_tolerate_document_values() -> None:
    assert constrain(MONDAY, skip_days=[1.0]) == utc(2024, 1, 16, 14, 30)
    assert constrain(MONDAY, skip_days=["1", None]) == MONDAY


def test_parse_skip_days_sorts_and_deduplicates() -> None:
    assert parse_skip_days([6, 0, 6, 1]) == [0, 1, 6]
    assert parse_skip_days([]) == []
    assert parse_skip_days(None) is None
    assert parse_skip_days(iter([3])) == [3]


@pytest.mark.parametrize("day", [7, -1, 1.5, True, "1", None])
def test_parse_skip_days_names_the_bad_day(day: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_skip_days([1, day], field="skip_days")
    assert caught.value.field == "skip_days"
    assert caught.value.value == day
    assert "0-6" in str(caught.value)


@pytest.mark.parametrize("days", [5, "06", b"1"])
def test_parse_skip_days_needs_a_collection(days: Any) -> None:
    with pytest.raises(InvalidInput):
        parse_skip_days(days)


# ---------------------------------------------------------------------------------------------------
# computeNextRunAt (Agenda's job tests 196-210)
# ---------------------------------------------------------------------------------------------------


def test_no_interval_and_no_repeat_at_means_no_next_run() -> None:
    assert next_run() is None
    assert next_run(repeat_interval="", last_run_at=NOW) is None
    assert next_run(repeat_interval=0, last_run_at=NOW) is None  # falsy in Agenda too


def test_human_interval_runs_exactly_one_interval_after_the_last_run() -> None:
    assert next_run(repeat_interval="2 minutes", last_run_at=NOW) == NOW + ms(120_000)


def test_a_never_run_interval_job_runs_now() -> None:
    assert next_run(repeat_interval="5 minutes") == NOW
    assert next_run(repeat_interval=300_000) == NOW


def test_skip_immediate_counts_from_the_scheduled_time() -> None:
    far = utc(3000, 1, 1)
    assert next_run(repeat_interval="3 minutes", last_run_at=far) == far + ms(180_000)


def test_numeric_intervals_are_milliseconds() -> None:
    assert next_run(repeat_interval=5000, last_run_at=NOW) == NOW + ms(5000)
    assert next_run(repeat_interval="5000", last_run_at=NOW) == NOW + ms(5000)


def test_run_of_a_ten_minute_job_is_due_in_ten_minutes() -> None:
    assert next_run(repeat_interval="10 minutes", last_run_at=NOW) == NOW + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("interval", "zone", "last_run_at", "expected"),
    [
        ("*/2 * * * *", None, utc(2015, 1, 1, 6, 1), utc(2015, 1, 1, 6, 2)),
        ("0 6 * * *", "GMT", utc(2015, 1, 1, 6, 1), utc(2015, 1, 2, 6)),
        ("0 6 * * *", "GMT", utc(2015, 1, 1, 6, 0), utc(2015, 1, 2, 6)),
        ("0 16 * * *", "Europe/Vienna", utc(2015, 1, 1, 6, 1), utc(2015, 1, 1, 15)),
        ("* * * * *", None, utc(2015, 1, 1, 6, 1, 59, 999000), utc(2015, 1, 1, 6, 2)),
        ("0 0 * 1 *", None, utc(2015, 3, 1), utc(2016, 1, 1)),
        ("0 6 * * *", "America/New_York", utc(2015, 1, 1, 12), utc(2015, 1, 2, 11)),
    ],
)
def test_cron_interval(interval: str, zone: str | None, last_run_at: datetime, expected: datetime) -> None:
    assert next_run(repeat_interval=interval, repeat_timezone=zone, last_run_at=last_run_at) == expected


def test_a_never_run_cron_job_runs_at_the_next_tick() -> None:
    assert next_run(repeat_interval="0 6 * * *") == utc(2024, 3, 11, 6)


def test_repeat_at_is_used_without_an_interval() -> None:
    assert next_run(repeat_at="11:59pm") == utc(2024, 3, 10, 23, 59)
    assert next_run(repeat_at="11:59pm", repeat_timezone="Asia/Tokyo") == utc(2024, 3, 10, 14, 59)


def test_invalid_repeat_at_fails_with_agendas_reason() -> None:
    with pytest.raises(InvalidDate, match="failed to calculate repeatAt time due to invalid format"):
        next_run(repeat_at="foo")


def test_invalid_repeat_interval_fails_with_agendas_reason() -> None:
    with pytest.raises(InvalidInterval) as caught:
        next_run(repeat_interval="asd", last_run_at=NOW)
    assert caught.value.reason.startswith(
        "failed to calculate nextRunAt due to invalid repeat interval (asd): "
    )


def test_invalid_repeat_timezone_fails() -> None:
    with pytest.raises(InvalidTimezone):
        next_run(repeat_interval="0 6 * * *", repeat_timezone="Mars/Olympus")


def test_an_interval_that_overflows_the_calendar_fails() -> None:
    with pytest.raises(InvalidInterval):
        next_run(repeat_interval="1000 years", last_run_at=utc(9500, 1, 1))


def test_date_constraints_apply_to_the_next_run() -> None:
    friday = utc(2024, 3, 8, 9)
    assert next_run(repeat_interval="1 day", last_run_at=friday, skip_days=[0, 6]) == utc(2024, 3, 11, 9)
    assert next_run(repeat_interval="1 day", last_run_at=friday, end_date=utc(2024, 3, 9)) is None
    assert next_run(repeat_interval="5 minutes", start_date=utc(2025, 1, 1)) == utc(2025, 1, 1)
    assert next_run(repeat_at="3:30pm", skip_days=[0]) == utc(2024, 3, 11, 15, 30)

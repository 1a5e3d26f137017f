"""Agenda 6 ``packages/agenda/test/date-constraints.test.ts`` ("Date Constraints Utilities"), test for test.

Agenda tests five helpers; agendapy has one, ``agendapy.schedule.apply_date_constraints`` (startDate,
then skipDays, then endDate), so each helper is expressed through it:

- ``shouldSkipDay(d, days, tz)``: the skip-days rule moves ``d``;
- ``applySkipDays`` / ``applyDateRangeConstraints`` / ``applyAllDateConstraints``: the rule with only those
  constraints;
- ``isWithinDateRange(d, start, end)``: the range rule leaves ``d`` as it is.

Like Agenda's, these tests need no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from agendapy.schedule import apply_date_constraints


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def js_day(value: datetime) -> int:
    """JavaScript's getUTCDay(): Sunday 0 .. Saturday 6."""
    return value.isoweekday() % 7


def apply(
    when: datetime,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    skip: Sequence[int] | None = None,
    tz: str | None = None,
) -> datetime | None:
    return apply_date_constraints(
        when, start_date=start, end_date=end, skip_days=skip, timezone=ZoneInfo(tz) if tz else None
    )


def should_skip_day(when: datetime, skip: Sequence[int] | None, tz: str | None = None) -> bool:
    return apply(when, skip=skip, tz=tz) != when


def is_within_date_range(when: datetime, start: datetime | None = None, end: datetime | None = None) -> bool:
    return apply(when, start=start, end=end) == when


MONDAY = at("2024-01-15T10:00:00Z")
SUNDAY = at("2024-01-14T10:00:00Z")
SATURDAY = at("2024-01-13T10:00:00Z")


# -- shouldSkipDay ---------------------------------------------------------------------------------


def test_should_skip_day_returns_false_when_skip_days_is_empty() -> None:
    """shouldSkipDay: returns false when skipDays is empty"""
    assert should_skip_day(MONDAY, []) is False


def test_should_skip_day_returns_false_when_skip_days_is_undefined() -> None:
    """shouldSkipDay: returns false when skipDays is undefined"""
    assert should_skip_day(MONDAY, None) is False


def test_should_skip_day_returns_true_when_day_is_in_skip_days_monday_1() -> None:
    """shouldSkipDay: returns true when day is in skipDays (Monday=1)"""
    assert should_skip_day(MONDAY, [1]) is True


def test_should_skip_day_returns_true_when_day_is_in_skip_days_sunday_0() -> None:
    """shouldSkipDay: returns true when day is in skipDays (Sunday=0)"""
    assert should_skip_day(SUNDAY, [0]) is True


def test_should_skip_day_returns_false_when_day_is_not_in_skip_days() -> None:
    """shouldSkipDay: returns false when day is not in skipDays"""
    assert should_skip_day(MONDAY, [0, 6]) is False


def test_should_skip_day_handles_weekend_skip_saturday_6_sunday_0() -> None:
    """shouldSkipDay: handles weekend skip (Saturday=6, Sunday=0)"""
    assert should_skip_day(SATURDAY, [0, 6]) is True
    assert should_skip_day(SUNDAY, [0, 6]) is True
    assert should_skip_day(MONDAY, [0, 6]) is False


def test_should_skip_day_respects_timezone_when_checking_day() -> None:
    """shouldSkipDay: respects timezone when checking day"""
    when = at("2024-01-14T20:00:00Z")  # Sunday in UTC, Monday in Auckland
    assert should_skip_day(when, [0], "UTC") is True
    assert should_skip_day(when, [1], "Pacific/Auckland") is True


# -- applySkipDays ---------------------------------------------------------------------------------


def test_apply_skip_days_returns_original_date_when_skip_days_is_empty() -> None:
    """applySkipDays: returns original date when skipDays is empty"""
    assert apply(MONDAY, skip=[]) == MONDAY


def test_apply_skip_days_returns_original_date_when_day_is_not_skipped() -> None:
    """applySkipDays: returns original date when day is not skipped"""
    assert apply(MONDAY, skip=[0, 6]) == MONDAY


def test_apply_skip_days_moves_to_next_valid_day_when_day_is_skipped() -> None:
    """applySkipDays: moves to next valid day when day is skipped"""
    result = apply(SATURDAY, skip=[0, 6])
    assert result is not None
    assert js_day(result) == 1


def test_apply_skip_days_preserves_time_when_moving_to_next_day() -> None:
    """applySkipDays: preserves time when moving to next day"""
    result = apply(at("2024-01-13T14:30:00Z"), skip=[6])
    assert result is not None
    assert (result.hour, result.minute) == (14, 30)


def test_apply_skip_days_returns_null_when_all_days_are_skipped() -> None:
    """applySkipDays: returns null when all days are skipped"""
    assert apply(MONDAY, skip=[0, 1, 2, 3, 4, 5, 6]) is None


def test_apply_skip_days_skips_multiple_consecutive_days() -> None:
    """applySkipDays: skips multiple consecutive days"""
    result = apply(at("2024-01-12T10:00:00Z"), skip=[5, 6, 0])  # a Friday
    assert result is not None
    assert js_day(result) == 1


# -- applyDateRangeConstraints ---------------------------------------------------------------------


def test_apply_date_range_constraints_returns_original_date_when_no_constraints() -> None:
    """applyDateRangeConstraints: returns original date when no constraints"""
    assert apply(MONDAY) == MONDAY


def test_apply_date_range_constraints_moves_to_start_date_when_date_is_before_start_date() -> None:
    """applyDateRangeConstraints: moves to startDate when date is before startDate"""
    start = at("2024-01-15T10:00:00Z")
    assert apply(at("2024-01-10T10:00:00Z"), start=start) == start


def test_apply_date_range_constraints_returns_null_when_date_is_after_end_date() -> None:
    """applyDateRangeConstraints: returns null when date is after endDate"""
    assert apply(at("2024-01-20T10:00:00Z"), end=at("2024-01-15T10:00:00Z")) is None


def test_apply_date_range_constraints_returns_original_date_when_within_range() -> None:
    """applyDateRangeConstraints: returns original date when within range"""
    assert apply(MONDAY, start=at("2024-01-10T10:00:00Z"), end=at("2024-01-20T10:00:00Z")) == MONDAY


# -- applyAllDateConstraints -----------------------------------------------------------------------


def test_apply_all_date_constraints_applies_both_start_date_and_skip_days() -> None:
    """applyAllDateConstraints: applies both startDate and skipDays"""
    result = apply(at("2024-01-10T10:00:00Z"), start=SATURDAY, skip=[0, 6])
    assert result is not None
    assert js_day(result) == 1


def test_apply_all_date_constraints_returns_null_when_skip_days_moves_past_end_date() -> None:
    """applyAllDateConstraints: returns null when skip days moves past endDate"""
    assert apply(SATURDAY, skip=[0, 6], end=SUNDAY) is None


# -- isWithinDateRange -----------------------------------------------------------------------------


def test_is_within_date_range_returns_true_when_no_constraints() -> None:
    """isWithinDateRange: returns true when no constraints"""
    assert is_within_date_range(MONDAY) is True


def test_is_within_date_range_returns_false_when_before_start_date() -> None:
    """isWithinDateRange: returns false when before startDate"""
    assert is_within_date_range(at("2024-01-10T10:00:00Z"), at("2024-01-15T10:00:00Z")) is False


def test_is_within_date_range_returns_false_when_after_end_date() -> None:
    """isWithinDateRange: returns false when after endDate"""
    assert is_within_date_range(at("2024-01-20T10:00:00Z"), None, at("2024-01-15T10:00:00Z")) is False


def test_is_within_date_range_returns_true_when_within_range() -> None:
    """isWithinDateRange: returns true when within range"""
    assert is_within_date_range(MONDAY, at("2024-01-10T10:00:00Z"), at("2024-01-20T10:00:00Z")) is True

"""The next run of a job, computed as Agenda 6.2.6's ``computeNextRunAt`` does, and its date constraints.

Where Node uses the server's local time (no ``repeatTimezone``) agendapy uses UTC; every deliberate
difference from Node is listed in :mod:`agendapy.schedule.divergences`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ..errors import InvalidInput, InvalidInterval, InvalidTimezone
from .cron_times import next_cron
from .repeat import RepeatSpec, document_error, interval_from_document
from .repeat_at import next_repeat_at, read_time_of_day
from .text import clip
from .timezones import parse_timezone, to_utc, zone_or_utc

__all__ = ["apply_date_constraints", "compute_next_run_at", "parse_skip_days"]


def compute_next_run_at(
    *,
    repeat_interval: str | int | float | None,
    repeat_timezone: str | None,
    repeat_at: str | None,
    last_run_at: datetime | None,
    now: datetime,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    skip_days: Sequence[int] | None = None,
) -> datetime | None:
    """Compute a job's next run as Agenda 6.2.6's ``computeNextRunAt`` does (None: no next run).

    A fixed interval runs ``last_run_at + interval``, or ``now`` when the job never ran. A cron
    expression runs at its next time after ``last_run_at`` (or ``now``), in ``repeat_timezone``. A
    ``repeat_at`` time of day is used when there is no interval. Date constraints apply last.

    Raises:
        InvalidInterval: unreadable ``repeat_interval`` (the reason reads like Agenda's failReason).
        InvalidDate: unreadable ``repeat_at`` (the reason is Agenda's failReason).
        InvalidTimezone: unknown ``repeat_timezone`` (the reason names it).
    """
    current = to_utc(now)
    last = to_utc(last_run_at) if last_run_at is not None else None
    if repeat_interval is not None and _js_truthy(repeat_interval):
        spec = interval_from_document(repeat_interval)  # Agenda reads the interval first
        zone = _document_zone(repeat_timezone, repeat_interval)
        when = _next_from_spec(spec, last, current, zone)
    elif repeat_at:
        if not isinstance(repeat_at, str) or read_time_of_day(repeat_at) is None:
            next_repeat_at(repeat_at, last_run_at=last, now=current, timezone=None)  # Agenda's reason
        zone = _document_zone(repeat_timezone, None)
        when = next_repeat_at(repeat_at, last_run_at=last, now=current, timezone=zone)
    else:
        return None
    return apply_date_constraints(
        when, start_date=start_date, end_date=end_date, skip_days=skip_days, timezone=zone
    )


def _document_zone(name: str | None, interval: str | int | float | None) -> ZoneInfo | None:
    """The stored ``repeatTimezone``; an unknown one fails with Agenda's prefix for the interval."""
    try:
        return parse_timezone(name, field="repeatTimezone")
    except InvalidTimezone:
        shown = clip(name) if isinstance(name, str) else name
        if interval is None:
            reason = f"failed to calculate nextRunAt due to unknown repeatTimezone ({shown})"
        else:
            reason = (
                f"failed to calculate nextRunAt due to invalid repeat interval ({interval}): "
                f"unknown repeatTimezone {shown!r}"
            )
        raise InvalidTimezone("repeatTimezone", shown, reason) from None


def _js_truthy(value: object) -> bool:
    # Agenda checks `if (repeatInterval)`: None, "", 0 and NaN mean "no interval".
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value)


def _next_from_spec(
    spec: RepeatSpec, last: datetime | None, now: datetime, zone: ZoneInfo | None
) -> datetime:
    base = last or now
    if spec.every is not None:
        if last is None:
            return now  # a never-run job runs at once, as in Agenda
        try:
            return last + spec.every
        except OverflowError:
            raise document_error(spec.stored, "the next run is beyond the year 9999") from None
    assert spec.cron is not None  # a RepeatSpec has exactly one of cron and every
    try:
        when = next_cron(spec.cron, base, zone, field="repeatInterval")
        if when <= base:  # Agenda's nudge for cron results that are not after the last run
            when = next_cron(spec.cron, base + timedelta(seconds=1), zone, field="repeatInterval")
    except InvalidInterval as error:
        raise document_error(spec.stored, error.reason) from None
    return when


def apply_date_constraints(
    when: datetime | None,
    *,
    start_date: datetime | None,
    end_date: datetime | None,
    skip_days: Sequence[int] | None,
    timezone: ZoneInfo | None,
) -> datetime | None:
    """Apply Agenda's startDate, skipDays and endDate rules to a next run time (None: never runs).

    Before ``start_date`` moves to ``start_date``; a skipped weekday (0=Sunday, read in ``timezone``,
    UTC if None) moves forward a day at a time keeping the time of day; after ``end_date`` is None.
    """
    if when is None:
        return None
    result = to_utc(when)
    if start_date is not None:
        result = max(result, to_utc(start_date))
    if skip_days:
        moved = _skip_days(result, _weekdays(skip_days), zone_or_utc(timezone))
        if moved is None:
            return None
        result = moved
    if end_date is not None and result > to_utc(end_date):
        return None
    return result


def _weekdays(days: Iterable[object]) -> set[int]:
    # Documents written by Node may hold doubles (1.0); anything that is not a whole number never matches.
    return {
        int(day)
        for day in days
        if isinstance(day, int | float) and not isinstance(day, bool) and float(day).is_integer()
    }


def _skip_days(when: datetime, skip: set[int], zone: ZoneInfo) -> datetime | None:
    if len(skip & set(range(7))) >= 7:
        return None
    local = when.astimezone(zone)
    if local.isoweekday() % 7 not in skip:  # isoweekday: Monday 1 .. Sunday 7; Agenda: Sunday 0
        return when
    wall = local.replace(tzinfo=None)
    for _ in range(7):
        wall += timedelta(days=1)
        if wall.isoweekday() % 7 not in skip:
            return to_utc(wall.replace(tzinfo=zone))
    return None


def parse_skip_days(days: Iterable[int] | None, *, field: str = "skip_days") -> list[int] | None:
    """Validate days of the week to skip (0=Sunday .. 6=Saturday); return them sorted, without repeats."""
    if days is None:
        return None
    if isinstance(days, str | bytes) or not isinstance(days, Iterable):
        raise InvalidInput(field, days, "expected a list of days, 0=Sunday .. 6=Saturday")
    result: set[int] = set()
    for day in days:
        if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
            raise InvalidInput(field, day, "a skip day must be an integer 0-6 (0=Sunday, 6=Saturday)")
        result.add(day)
    return sorted(result)

"""Instants and timezones: aware UTC datetimes in whole milliseconds, IANA zones, wall-clock times.

Everything in :mod:`agendapy.schedule` works on aware UTC datetimes truncated to milliseconds (BSON
precision); schedules are read on the wall clock of a timezone (UTC when there is none) and mapped back
to instants here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from ..errors import InvalidDate, InvalidTimezone

__all__ = [
    "at_wall_time",
    "instants_at",
    "parse_timezone",
    "to_utc",
    "utc_offset",
    "utcnow",
    "zone_or_utc",
]


def utcnow() -> datetime:
    """Return the current time, aware UTC, truncated to milliseconds."""
    return to_utc(datetime.now(UTC))


def to_utc(value: datetime) -> datetime:
    """Return ``value`` as aware UTC truncated to milliseconds; a naive datetime is taken as UTC."""
    if not isinstance(value, datetime):
        raise InvalidDate("date", value, "expected a datetime")
    try:
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise InvalidDate("date", value, "the date is out of range once converted to UTC") from None
    return aware.replace(microsecond=aware.microsecond // 1000 * 1000)


def parse_timezone(name: str | None, *, field: str = "timezone") -> ZoneInfo | None:
    """Return the IANA zone called ``name`` (case-insensitive), or None for None or ""."""
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        raise InvalidTimezone(field, name, "expected an IANA timezone name such as 'Europe/Vienna'")
    canonical = _zone_names().get(name.strip().lower())
    if canonical is None:
        raise InvalidTimezone(field, name, "unknown timezone (expected an IANA name such as 'Europe/Vienna')")
    try:
        return ZoneInfo(canonical)
    # A zone listed by tzdata can still fail to load on a damaged install; report it as unknown.
    except (KeyError, ValueError, OSError) as error:
        raise InvalidTimezone(field, name, f"cannot load timezone: {error}") from None


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    # Only listed names are ever opened, so odd strings ("../etc", NUL bytes) never reach the filesystem.
    names = {zone.lower(): zone for zone in available_timezones()}
    names.setdefault("utc", "UTC")
    return names


def zone_or_utc(zone: ZoneInfo | None) -> ZoneInfo:
    """``zone``, or UTC when there is none (agendapy never uses the machine's local time)."""
    return zone or ZoneInfo("UTC")


def utc_offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    """The offset from UTC of ``zone`` at ``instant``."""
    return instant.astimezone(zone).utcoffset() or timedelta(0)


def instants_at(wall: datetime, zone: ZoneInfo, both_folds: bool) -> list[datetime]:
    """UTC instants at which wall-clock time ``wall`` happens in ``zone``.

    With ``both_folds`` a time repeated when clocks go back gives both instants and a time skipped by
    a DST gap none; without it, the first instant, a skipped time shifted forward by the gap.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if second < first:  # skipped by a DST gap: fold=0 is the gap-shifted instant
        # cron-parser shifts a skipped time by the gap, except for expressions that fire every hour,
        # which simply have no run in the missing hour (visible with Lord Howe's 30-minute change).
        return [] if both_folds else [first]
    if second == first:
        return [first]
    return [first, second] if both_folds else [first]


def at_wall_time(day: date, hour: int, minute: int, second: int, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time on ``day`` in ``zone``."""
    # fold=0: a time skipped by DST is shifted forward by the gap, a repeated one happens the first time.
    wall = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=zone)
    return wall.astimezone(UTC)

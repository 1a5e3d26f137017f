"""When a cron expression fires in a timezone: its next and previous instants, DST mapped as cron-parser does.

:mod:`agendapy.schedule.cron` reads the expression and finds wall-clock matches; this module maps them
to UTC instants in the job's timezone (UTC if None).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from ..errors import InvalidInterval
from .cron import CronError, CronSpec, cron_spec
from .timezones import instants_at, to_utc, utc_offset, zone_or_utc

__all__ = ["next_cron", "previous_cron"]

_CRON_STEP_LIMIT: Final = 20_000


def next_cron(
    expression: str, after: datetime, timezone: ZoneInfo | None, *, field: str = "cron"
) -> datetime:
    """Return the first time strictly after ``after`` that matches ``expression`` in ``timezone``.

    Cron runs on wall-clock time in ``timezone`` (UTC if None). A time skipped by a DST change runs
    shifted by the gap (02:30 becomes 03:30), as in Node's cron-parser, except that an expression firing
    every hour has no run in the missing time (as in cron-parser); a time repeated when clocks go back
    runs once, except that expressions firing every hour run in both repeated hours.

    Raises:
        InvalidInterval: the expression is not 5 or 6 fields (seconds first) or never fires.
    """
    if not isinstance(expression, str) or len(expression.split()) not in (5, 6):
        raise InvalidInterval(field, expression, "not a cron expression of 5 fields (or 6, seconds first)")
    try:
        spec = cron_spec(expression)
    except CronError as error:
        raise InvalidInterval(field, expression, f"not a valid cron expression: {error}") from None
    return _next_cron_instant(spec, expression, to_utc(after), zone_or_utc(timezone), field)


def _next_cron_instant(
    spec: CronSpec, expression: str, after: datetime, zone: ZoneInfo, field: str
) -> datetime:
    # Walk wall-clock candidates; start early enough to see a repeated hour that follows `after`.
    offsets = [utc_offset(zone, after + timedelta(hours=hours)) for hours in range(4)]
    wall: datetime | None = (after + min(offsets)).replace(tzinfo=None)
    best: datetime | None = None
    stop: datetime | None = None
    for _ in range(_CRON_STEP_LIMIT):
        assert wall is not None
        wall = spec.next_after(wall)  # None past the year 9999
        if wall is None or (best is not None and stop is not None and wall > stop):
            break
        for instant in instants_at(wall, zone, spec.every_hour):
            if instant > after and (best is None or instant < best):
                best = instant
        if best is not None and stop is None:
            stop = _search_end(best, zone)
    if best is None:
        raise InvalidInterval(field, expression, "the expression has no next occurrence")
    return best


def previous_cron(expression: str, at: datetime, timezone: ZoneInfo | None) -> datetime | None:
    """Return the last wall-clock match of ``expression`` at or before ``at`` in ``timezone``, as UTC.

    The counterpart of :func:`next_cron` for callers that need the previous tick; the syntax is
    cron-parser's. A time skipped by DST maps forward by the gap; a repeated one to its first instant.
    """
    zone = zone_or_utc(timezone)
    spec = cron_spec(expression)
    wall = to_utc(at).astimezone(zone).replace(tzinfo=None)
    while (found := spec.previous_at_or_before(wall)) is not None:
        # The same instants next_cron uses (a DST gap shifts the time, or drops it for hourly ones).
        for instant in reversed(instants_at(found, zone, spec.every_hour)):
            if instant <= at:
                return to_utc(instant)
        wall = found - timedelta(seconds=1)
    return None


def _search_end(best: datetime, zone: ZoneInfo) -> datetime:
    """Last wall-clock time that can still map to an instant before ``best`` (DST reorders them)."""
    span = timedelta(hours=3)
    offsets = {utc_offset(zone, best + delta) for delta in (-span, timedelta(0), span)}
    shift = max(offsets) - min(offsets)
    return (best + utc_offset(zone, best) + shift).replace(tzinfo=None)

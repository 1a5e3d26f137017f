"""Ticks of a recurring schedule and the run intervals between them (once per interval, misfires).

A schedule fires at *ticks*: the times a cron expression matches, or, for a fixed length, the multiples
of that length on the wall clock of the job's timezone (an hourly job ticks at :00, a 15-minute job at
:00, :15, :30, :45). The run due at tick ``T`` handles the interval that ends at ``T``: an hourly job
running at 10:00 handles [09:00, 10:00).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from ..errors import InvalidInterval
from .cron_times import next_cron, previous_cron
from .repeat import RepeatSpec
from .timezones import to_utc, zone_or_utc

__all__ = ["RunInterval", "interval_ending_at_or_before", "tick_after", "tick_at_or_before"]

_EPOCH_WALL = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class RunInterval:
    """A period of time: the half-open interval [started_at, ended_at) a run handles.

    Not to be confused with a :class:`~agendapy.schedule.repeat.RepeatSpec`, which says how often a
    job repeats.
    """

    started_at: datetime
    ended_at: datetime

    def contains(self, other: RunInterval) -> bool:
        """Whether ``other`` lies within this interval."""
        return self.started_at <= other.started_at and other.ended_at <= self.ended_at


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    return to_utc(wall.replace(tzinfo=zone).astimezone(UTC))


def tick_at_or_before(spec: RepeatSpec, at: datetime, zone: ZoneInfo | None) -> datetime:
    """The latest tick at or before ``at``."""
    tz = zone_or_utc(zone)
    if spec.every is not None:
        wall = _wall(at, tz)
        steps = (wall - _EPOCH_WALL) // spec.every
        tick = _instant(_EPOCH_WALL + steps * spec.every, tz)
        # Near a DST change the wall-clock tick can map after `at`; step back one length then.
        return tick if tick <= at else tick - spec.every
    assert spec.cron is not None
    # Not croniter directly: previous_cron reads cron-parser's syntax ("5L") and maps DST as next_cron.
    previous = previous_cron(spec.cron, at, tz)
    if previous is None:
        raise InvalidInterval("cron", spec.cron, "no earlier occurrence")
    return previous


def tick_after(spec: RepeatSpec, after: datetime, zone: ZoneInfo | None) -> datetime:
    """The earliest tick strictly after ``after``."""
    if spec.every is not None:
        return tick_at_or_before(spec, after, zone) + spec.every
    assert spec.cron is not None
    return next_cron(spec.cron, after, zone)


def interval_ending_at_or_before(spec: RepeatSpec, at: datetime, zone: ZoneInfo | None) -> RunInterval:
    """The interval whose end is the latest tick at or before ``at``."""
    end = tick_at_or_before(spec, at, zone)
    start = tick_at_or_before(spec, end - _MS, zone)
    return RunInterval(started_at=start, ended_at=end)

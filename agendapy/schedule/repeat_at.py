"""``repeatAt``: a time of day ("15:30", "3:30pm", "at 5", "noon") and its next occurrence in a timezone."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from ..errors import InvalidDate
from .text import MAX_DATE_LENGTH, clip, js_trim
from .timezones import at_wall_time, to_utc, zone_or_utc

__all__ = ["REPEAT_AT_FAILURE", "next_repeat_at", "read_time_of_day"]

#: Agenda's failReason for a repeatAt it cannot read (Agendash and Node services read it as is).
REPEAT_AT_FAILURE: Final = "failed to calculate repeatAt time due to invalid format"

# The times of day Node's date.js 0.3.3 (Agenda's repeatAt reader) reads as a time of day, each read
# the same way; its quirks (seconds dropped, "9:30 p.m." read as 09:30, "24:00" or "5:61" wrapped
# round, trailing text ignored) are refused instead: see docs/migrate/from-agenda.md.
_TIME_FORMS: Final = (
    # "15:30", "9:30", "at 9:30", "15:30:20"
    re.compile(r"(?:at\s*)?(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2}))?"),
    # "9:30pm", "9:30 am", "at 9:30pm"
    re.compile(r"(?:at\s*)?(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})\s*(?P<half>am|pm)"),
    # "9.30", "19.30", "at 9.30" and, with a space only, "9.30 pm"
    re.compile(r"(?:at\s*)?(?P<hour>[0-9]{1,2})\.(?P<minute>[0-9]{2})(?:\s+(?P<half>am|pm))?"),
    # "0930", "930", "at 0930", "0930pm"
    re.compile(r"(?:at\s*)?(?P<hour>[0-9]{1,2}?)(?P<minute>[0-9]{2})\s*(?P<half>am|pm)?"),
    # "9am", "9 pm", "at 9pm"
    re.compile(r"(?:at\s*)?(?P<hour>[0-9]{1,2})\s*(?P<half>am|pm)"),
    # "at 5", "at 17": a bare hour needs "at"
    re.compile(r"at\s*(?P<hour>[0-9]{1,2})"),
)
_NAMED_TIMES: Final = {
    "noon": time(12),
    "midnight": time(0),
    "morning": time(8),
    "afternoon": time(14),
    "evening": time(17),
    "night": time(19),
}
_AT_NAME: Final = re.compile(r"(?:at\s+)?(?P<name>[a-z]+)")


def read_time_of_day(text: str) -> time | None:
    """Read a time of day as Agenda's repeatAt does; ``None`` for anything else.

    Accepted (case-insensitive, optional leading "at"): "15:30", "15:30:20", "9.30", "0930",
    "3:30pm", "9 pm", "9.30 pm", "at 5", "noon", "midnight", "morning" (08:00), "afternoon" (14:00),
    "evening" (17:00), "night" (19:00). Hours 0-23 (1-12 with am/pm), minutes and seconds 0-59.
    """
    if len(text) > MAX_DATE_LENGTH:
        return None
    cleaned = js_trim(text).lower()
    named = _AT_NAME.fullmatch(cleaned)
    if named:
        return _NAMED_TIMES.get(named["name"])
    for form in _TIME_FORMS:
        match = form.fullmatch(cleaned)
        if match:
            return _time_of(match)
    return None


def _time_of(match: re.Match[str]) -> time | None:
    groups = match.groupdict()
    hour, half = int(groups["hour"]), groups.get("half")
    minute, second = int(groups.get("minute") or 0), int(groups.get("second") or 0)
    if half:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return time(hour, minute, second)


def next_repeat_at(
    repeat_at: str, *, last_run_at: datetime | None, now: datetime, timezone: ZoneInfo | None
) -> datetime:
    """Return the next occurrence of a time of day ("15:30", "9.30", "at 5", "3:30pm") in ``timezone``.

    Today's occurrence when it is after ``now`` and is not ``last_run_at``; tomorrow's otherwise. The
    formats are those of :func:`agendapy.read_time_of_day`.

    Raises:
        InvalidDate: ``repeat_at`` is not a time of day; its ``reason`` is Agenda's failReason text.
    """
    at = read_time_of_day(repeat_at) if isinstance(repeat_at, str) else None
    if at is None:
        shown = clip(repeat_at) if isinstance(repeat_at, str) else repeat_at
        raise InvalidDate("repeatAt", shown, REPEAT_AT_FAILURE)
    zone = zone_or_utc(timezone)
    current = to_utc(now)
    today = current.astimezone(zone).date()
    candidate = at_wall_time(today, at.hour, at.minute, at.second, zone)
    if candidate <= current or (last_run_at is not None and candidate == to_utc(last_run_at)):
        candidate = at_wall_time(today + timedelta(days=1), at.hour, at.minute, at.second, zone)
    return candidate

"""Schedule maths: durations, repeat intervals, cron, dates, timezones and Agenda's ``computeNextRunAt``.

Everything here works on aware UTC datetimes truncated to milliseconds (BSON precision). Strings are
read by :mod:`agendapy.dates`; this module validates them, raises the errors of :mod:`agendapy.errors`,
and does the arithmetic.

Two readers of repeat intervals exist on purpose:

* :func:`parse_interval` reads the Python API's input (bare numbers are seconds, "10ms" and "an hour"
  work) and decides what to store: a cron or human string only when Node's Agenda 6 reads it the same
  way, otherwise whole milliseconds, which Node reads as milliseconds.
* :func:`interval_from_document` reads a stored ``repeatInterval`` exactly as Agenda 6.2.6 does
  (numbers and numeric strings are milliseconds, human strings as human-interval 2.0.1 reads them), so
  Node and Python workers sharing one collection compute the same next run.

Where Agenda would loop forever (an interval of zero or less ms) or where Node uses the server's local
time (no ``repeatTimezone``), agendapy raises :class:`InvalidInterval` or uses UTC instead. Every such
deliberate difference is listed in :mod:`agendapy.divergences`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo, available_timezones

from agendapy import dates
from agendapy.cron import CronError, CronSpec, parse_cron
from agendapy.errors import InvalidDate, InvalidInput, InvalidInterval, InvalidPriority, InvalidTimezone

__all__ = [
    "Interval",
    "apply_date_constraints",
    "compute_next_run_at",
    "interval_from_document",
    "is_cron",
    "next_cron",
    "next_repeat_at",
    "parse_interval",
    "parse_priority",
    "parse_skip_days",
    "parse_timezone",
    "parse_when",
    "previous_cron",
    "to_timedelta",
    "to_utc",
    "utcnow",
]

_MS: Final = timedelta(milliseconds=1)
#: Agenda's failReason for a repeatAt it cannot read (Agendash and Node services read it as is).
REPEAT_AT_FAILURE: Final = "failed to calculate repeatAt time due to invalid format"
_PRIORITIES: Final = {"lowest": -20, "low": -10, "normal": 0, "high": 10, "highest": 20}
_DURATION_KEYS: Final = frozenset(
    {"weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds"}
)
# cron-parser's predefined expressions, 5 fields where the seconds are 0 (it reads a name only when it
# is the whole string).
_CRON_ALIASES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@hourly": "0 * * * *",
    "@minutely": "* * * * *",
    "@secondly": "* * * * * *",
    "@weekdays": "0 0 * * 1-5",
    "@weekends": "0 0 * * 0,6",
}
_CRON_NAMES: Final = re.compile(
    r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat"
)
_CRON_STEP_LIMIT: Final = 20_000


# ---------------------------------------------------------------------------------------------------
# Instants
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------------


def to_timedelta(
    value: str | int | float | timedelta | Mapping[str, float], *, field: str, allow_zero: bool = False
) -> timedelta:
    """Read a duration: seconds (number), ``timedelta``, human or ISO-8601 string, or a unit mapping.

    Args:
        value: ``30``/``1.5`` (seconds), ``timedelta``, "3 minutes", "1 hour and 30 minutes", "10ms",
            "PT15M", or ``{"minutes": 15}`` (weeks, days, hours, minutes, seconds, milliseconds,
            microseconds).
        field: the argument name reported in errors.
        allow_zero: accept a zero duration (never a negative one).

    Raises:
        InvalidInterval: for anything else, negative, NaN, infinite or (unless allowed) zero values.
    """
    if isinstance(value, bool):
        raise InvalidInterval(field, value, "expected a duration, not a bool")
    try:
        result = _read_duration(value, field)
    except OverflowError:
        raise InvalidInterval(field, value, "the duration is too long") from None
    if result < timedelta(0):
        raise InvalidInterval(field, value, "a duration cannot be negative")
    if result == timedelta(0) and not allow_zero:
        raise InvalidInterval(field, value, "a duration must be longer than zero")
    return result


def _read_duration(value: object, field: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidInterval(field, value, "a duration must be a finite number of seconds")
        return timedelta(seconds=value)
    if isinstance(value, str):
        return _string_duration(value, field)
    if isinstance(value, Mapping):
        return _mapping_duration(value, field)
    raise InvalidInterval(field, value, "expected seconds, a timedelta, a duration string or a mapping")


def _string_duration(text: str, field: str) -> timedelta:
    if len(text) > dates.MAX_DATE_LENGTH:
        raise InvalidInterval(field, _clip(text), f"longer than {dates.MAX_DATE_LENGTH} characters")
    stripped = text.strip()
    if not stripped:
        raise InvalidInterval(field, text, "the duration is empty")
    if math.isfinite(dates.js_to_number(stripped)):
        raise InvalidInterval(
            field,
            text,
            "a bare number in a string is ambiguous (Agenda reads milliseconds, the Python "
            "API seconds): pass a number of seconds or add a unit, e.g. '5 seconds'",
        )
    ms = dates.read_iso_duration_ms(stripped)
    if ms is None:
        ms = dates.read_duration_ms(stripped)
    if ms is None:
        if stripped.startswith("-"):
            raise InvalidInterval(field, text, "a duration cannot be negative")
        raise InvalidInterval(
            field, text, "not a duration (try '3 minutes', '1 hour and 30 minutes', 'PT15M')"
        )
    if not math.isfinite(ms):
        raise InvalidInterval(field, text, "the duration is too long")
    return timedelta(milliseconds=ms)


def _mapping_duration(mapping: Mapping[object, object], field: str) -> timedelta:
    parts: dict[str, float] = {}
    for key, amount in mapping.items():
        if key not in _DURATION_KEYS:
            raise InvalidInterval(
                field, mapping, f"unknown unit {key!r} (use {', '.join(sorted(_DURATION_KEYS))})"
            )
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
            raise InvalidInterval(field, mapping, f"{key} must be a finite number")
        if amount < 0:
            raise InvalidInterval(field, mapping, f"{key} cannot be negative")
        parts[str(key)] = amount
    if not parts:
        raise InvalidInterval(field, mapping, "the mapping names no unit")
    return timedelta(**parts)


def _whole_ms(duration: timedelta) -> int:
    # Node adds milliseconds to a Date, which drops any fraction; so do we.
    return duration // _MS


# ---------------------------------------------------------------------------------------------------
# Repeat intervals
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A normalised repeat interval: either a cron expression or a fixed length.

    Attributes:
        cron: a 5-field cron expression, or 6 fields with seconds first (as Node's cron-parser).
        every: a fixed length, a whole number of milliseconds.
        stored: the ``repeatInterval`` to store: a cron or human string Node reads the same way, or
            whole milliseconds.
    """

    cron: str | None
    every: timedelta | None
    stored: str | int


def is_cron(expression: str) -> bool:
    """Tell whether ``expression`` is a cron expression of 5 fields, or 6 with seconds first.

    The syntax is Node's cron-parser 5's (see :mod:`agendapy.cron`): ``5L`` is the last Friday of the
    month, ``L5`` and ``15W`` are refused as Node refuses them.
    """
    if not isinstance(expression, str) or len(expression.split()) not in (5, 6):
        return False
    try:
        _cron_spec(expression)
    except CronError:
        return False
    return True


@lru_cache(maxsize=512)
def _cron_spec(expression: str) -> CronSpec:
    return parse_cron(expression)


def parse_interval(
    value: str | int | float | timedelta | Mapping[str, float], *, field: str = "interval"
) -> Interval:
    """Read a repeat interval given to the Python API (cron, alias, human/ISO string, seconds, ...).

    As in Agenda, a string that is a valid cron expression is cron; any other string must be a
    duration. Numbers are seconds. The returned ``stored`` value reads back identically in Node.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _CRON_ALIASES:
            return _alias_interval(text.lower(), field)
        if len(text) > dates.MAX_TEXT_LENGTH:
            raise InvalidInterval(field, _clip(text), f"longer than {dates.MAX_TEXT_LENGTH} characters")
        if is_cron(text):
            return _cron_interval(text, text, field)
        if _looks_like_cron(text):
            try:
                _cron_spec(text)
            except CronError as error:
                raise InvalidInterval(field, value, f"not a valid cron expression: {error}") from None
            raise InvalidInterval(
                field, value, "not a valid cron expression (5 fields, or 6 with seconds first)"
            )
        every = _interval_length(to_timedelta(value, field=field), value, field)
        return Interval(
            cron=None, every=every, stored=text if _node_agrees(text, every) else _whole_ms(every)
        )
    every = _interval_length(to_timedelta(value, field=field), value, field)
    return Interval(cron=None, every=every, stored=_whole_ms(every))


def _looks_like_cron(text: str) -> bool:
    """Tell whether ``text`` is shaped like cron (so a "not a duration" message would mislead)."""
    fields = text.split()
    cron_chars = set("0123456789*/,?#-lwh")
    return len(fields) in (5, 6) and all(
        set(_CRON_NAMES.sub("", field.lower())) <= cron_chars for field in fields
    )


def _node_agrees(text: str, every: timedelta) -> bool:
    """Tell whether Node's human-interval reads ``text`` as ``every`` too (then the string can be stored)."""
    node_ms = dates.node_human_interval(text)
    return (
        math.isfinite(node_ms)
        and abs(node_ms) < 1e15
        and _whole_ms(timedelta(milliseconds=node_ms)) == _whole_ms(every)
    )


def _interval_length(duration: timedelta, value: object, field: str) -> timedelta:
    whole = _whole_ms(duration)
    if whole < 1:
        raise InvalidInterval(field, value, "a repeat interval must be at least 1 millisecond")
    return timedelta(milliseconds=whole)


def _alias_interval(alias: str, field: str) -> Interval:
    # Node reads "@hourly" etc. as a human interval ("hour"), so store the expression those aliases mean.
    expression = _CRON_ALIASES[alias]
    stored = alias if math.isnan(dates.node_human_interval(alias)) else expression
    return _cron_interval(expression, stored, field)


def _cron_interval(expression: str, stored: str, field: str) -> Interval:
    if not math.isnan(dates.node_human_interval(stored)):
        raise InvalidInterval(
            field, stored, "Node's Agenda would read this cron expression as a human interval"
        )
    try:
        spec = _cron_spec(expression)
    except CronError as error:
        raise InvalidInterval(field, stored, f"not a valid cron expression: {error}") from None
    fields = expression.split()
    # Keep the expression as written when it has 5 or 6 fields; fewer fields get cron-parser's defaults.
    return Interval(cron=" ".join(fields) if len(fields) >= 5 else spec.text, every=None, stored=stored)


def interval_from_document(value: str | int | float) -> Interval:
    """Read a stored ``repeatInterval`` as Agenda 6.2.6 does.

    Numbers and purely numeric strings are milliseconds; other strings are human intervals when
    human-interval reads them (that wins, as in Agenda), else cron expressions as cron-parser 5 reads
    them (1 to 6 fields, an exact ``@daily``-style name).
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _document_error(value, "expected a string or a number")
    if isinstance(value, int | float):
        return _document_ms(value, value)
    if len(value) > dates.MAX_TEXT_LENGTH:
        raise _document_error(_clip(value), f"longer than {dates.MAX_TEXT_LENGTH} characters")
    numeric = dates.js_to_number(value) if dates.js_trim(value) else math.nan
    if math.isfinite(numeric):
        return _document_ms(numeric, value)
    node_ms = dates.node_human_interval(value)
    if not math.isnan(node_ms):
        return _document_ms(node_ms, value)
    expression = _CRON_ALIASES.get(value, value)
    try:
        spec = _cron_spec(expression)
    except CronError as error:
        detail = f"not a cron expression ({error}) and no readable human interval"
        raise _document_error(value, detail) from None
    fields = expression.split()
    return Interval(cron=" ".join(fields) if len(fields) >= 5 else spec.text, every=None, stored=value)


def _document_ms(ms: float, value: str | int | float) -> Interval:
    try:
        whole = _whole_ms(timedelta(milliseconds=ms))
    except (OverflowError, ValueError):  # NaN, infinite or beyond timedelta's range
        raise _document_error(value, f"the interval is {ms:g} ms, not a usable length") from None
    if whole < 1:
        raise _document_error(value, f"the interval is {ms:g} ms; it must be at least 1 ms")
    stored: str | int = value if isinstance(value, str | int) else whole
    return Interval(cron=None, every=timedelta(milliseconds=whole), stored=stored)


def _clip(text: str) -> str:
    """``text`` cut short for an error message (an oversized input is named, not echoed whole)."""
    return text if len(text) <= 60 else f"{text[:60]}... ({len(text)} characters)"


def _document_error(value: object, detail: str) -> InvalidInterval:
    reason = f"failed to calculate nextRunAt due to invalid repeat interval ({value}): {detail}"
    return InvalidInterval("repeatInterval", value, reason)


# ---------------------------------------------------------------------------------------------------
# Cron
# ---------------------------------------------------------------------------------------------------


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
        spec = _cron_spec(expression)
    except CronError as error:
        raise InvalidInterval(field, expression, f"not a valid cron expression: {error}") from None
    return _next_cron_instant(spec, expression, to_utc(after), timezone or ZoneInfo("UTC"), field)


def _next_cron_instant(
    spec: CronSpec, expression: str, after: datetime, zone: ZoneInfo, field: str
) -> datetime:
    # Walk wall-clock candidates; start early enough to see a repeated hour that follows `after`.
    offsets = [_offset(zone, after + timedelta(hours=hours)) for hours in range(4)]
    wall: datetime | None = (after + min(offsets)).replace(tzinfo=None)
    best: datetime | None = None
    stop: datetime | None = None
    for _ in range(_CRON_STEP_LIMIT):
        assert wall is not None
        wall = spec.next_after(wall)  # None past the year 9999
        if wall is None or (best is not None and stop is not None and wall > stop):
            break
        for instant in _instants(wall, zone, spec.every_hour):
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
    zone = timezone or ZoneInfo("UTC")
    spec = _cron_spec(expression)
    wall = to_utc(at).astimezone(zone).replace(tzinfo=None)
    while (found := spec.previous_at_or_before(wall)) is not None:
        # The same instants next_cron uses (a DST gap shifts the time, or drops it for hourly ones).
        for instant in reversed(_instants(found, zone, spec.every_hour)):
            if instant <= at:
                return to_utc(instant)
        wall = found - timedelta(seconds=1)
    return None


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    return instant.astimezone(zone).utcoffset() or timedelta(0)


def _instants(wall: datetime, zone: ZoneInfo, both_folds: bool) -> list[datetime]:
    """UTC instants at which wall-clock time ``wall`` happens in ``zone``."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if second < first:  # skipped by a DST gap: fold=0 is the gap-shifted instant
        # cron-parser shifts a skipped time by the gap, except for expressions that fire every hour,
        # which simply have no run in the missing hour (visible with Lord Howe's 30-minute change).
        return [] if both_folds else [first]
    if second == first:
        return [first]
    return [first, second] if both_folds else [first]


def _search_end(best: datetime, zone: ZoneInfo) -> datetime:
    """Last wall-clock time that can still map to an instant before ``best`` (DST reorders them)."""
    span = timedelta(hours=3)
    offsets = {_offset(zone, best + delta) for delta in (-span, timedelta(0), span)}
    shift = max(offsets) - min(offsets)
    return (best + _offset(zone, best) + shift).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------------------
# Timezones, priorities, skip days
# ---------------------------------------------------------------------------------------------------


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


def parse_priority(value: int | str | None, *, field: str = "priority") -> int:
    """Return the numeric priority: an int as is, or lowest -20, low -10, normal 0, high 10, highest 20."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InvalidPriority(field, value, "expected an int or lowest/low/normal/high/highest")
    if isinstance(value, int | float) and not (-(2**63) <= value <= 2**63 - 1):
        raise InvalidPriority(field, value, "must fit in a 64-bit integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _PRIORITIES:
        return _PRIORITIES[value.strip().lower()]
    raise InvalidPriority(field, value, "expected an int or lowest/low/normal/high/highest")


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


# ---------------------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------------------


def parse_when(
    value: datetime | str,
    *,
    now: datetime | None = None,
    timezone: ZoneInfo | None = None,
    field: str = "when",
) -> datetime:
    """Read when to run: a datetime (naive is UTC) or a string ("now", ISO-8601, "in 20 minutes", ...).

    Strings are tried as "now", an ISO-8601 date (its wall time in ``timezone`` when it has no offset),
    "in <duration>" / "<duration> from now" / "<duration> ago", then natural language
    ("tomorrow at noon", "3:30pm", "next monday at 9am") read in ``timezone`` (UTC if None).
    """
    if isinstance(value, str) and len(value) > dates.MAX_DATE_LENGTH:
        raise InvalidDate(field, _clip(value), f"longer than {dates.MAX_DATE_LENGTH} characters")
    if isinstance(value, datetime):
        parsed: datetime | None = value
    elif isinstance(value, str) and value.strip():
        parsed = _read_date_string(value.strip(), to_utc(now) if now is not None else utcnow(), timezone)
    else:
        raise InvalidDate(field, value, "expected a datetime or a non-empty date string")
    if parsed is None:
        raise InvalidDate(field, value, "not a date (try 'now', 'in 20 minutes', 'tomorrow at noon')")
    try:
        return to_utc(parsed)
    except InvalidDate:
        raise InvalidDate(field, value, "the date is out of range") from None


def _read_date_string(text: str, now: datetime, zone: ZoneInfo | None) -> datetime | None:
    if text.lower() == "now":
        return now
    iso = dates.read_iso_datetime(text, zone)
    if iso is not None:
        return iso
    relative = dates.read_relative(text)
    if relative is not None:
        if math.isfinite(dates.js_to_number(relative[0])):
            return None  # "in 5": five what? (dateparser would guess May)
        try:
            delta = to_timedelta(relative[0], field="when", allow_zero=True)
            return now + delta * relative[1]
        except (InvalidInterval, OverflowError):
            pass  # not a duration: let the natural-language reader try
    return dates.read_natural_date(text, now=now, timezone_=zone)


def next_repeat_at(
    repeat_at: str, *, last_run_at: datetime | None, now: datetime, timezone: ZoneInfo | None
) -> datetime:
    """Return the next occurrence of a time of day ("15:30", "9.30", "at 5", "3:30pm") in ``timezone``.

    Today's occurrence when it is after ``now`` and is not ``last_run_at``; tomorrow's otherwise. The
    formats are those of :func:`agendapy.dates.read_time_of_day`.

    Raises:
        InvalidDate: ``repeat_at`` is not a time of day; its ``reason`` is Agenda's failReason text.
    """
    at = dates.read_time_of_day(repeat_at) if isinstance(repeat_at, str) else None
    if at is None:
        shown = _clip(repeat_at) if isinstance(repeat_at, str) else repeat_at
        raise InvalidDate("repeatAt", shown, REPEAT_AT_FAILURE)
    zone = timezone or ZoneInfo("UTC")
    current = to_utc(now)
    today = current.astimezone(zone).date()
    candidate = _at_wall_time(today, at.hour, at.minute, at.second, zone)
    if candidate <= current or (last_run_at is not None and candidate == to_utc(last_run_at)):
        candidate = _at_wall_time(today + timedelta(days=1), at.hour, at.minute, at.second, zone)
    return candidate


def _at_wall_time(day: date, hour: int, minute: int, second: int, zone: ZoneInfo) -> datetime:
    # fold=0: a time skipped by DST is shifted forward by the gap, a repeated one happens the first time.
    wall = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=zone)
    return wall.astimezone(UTC)


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
        moved = _skip_days(result, _weekdays(skip_days), timezone or ZoneInfo("UTC"))
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


# ---------------------------------------------------------------------------------------------------
# computeNextRunAt
# ---------------------------------------------------------------------------------------------------


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
        interval = interval_from_document(repeat_interval)  # Agenda reads the interval first
        zone = _document_zone(repeat_timezone, repeat_interval)
        when = _next_from_interval(interval, last, current, zone)
    elif repeat_at:
        if not isinstance(repeat_at, str) or dates.read_time_of_day(repeat_at) is None:
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
        shown = _clip(name) if isinstance(name, str) else name
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


def _next_from_interval(
    interval: Interval, last: datetime | None, now: datetime, zone: ZoneInfo | None
) -> datetime:
    base = last or now
    if interval.every is not None:
        if last is None:
            return now  # a never-run job runs at once, as in Agenda
        try:
            return last + interval.every
        except OverflowError:
            raise _document_error(interval.stored, "the next run is beyond the year 9999") from None
    assert interval.cron is not None  # an Interval has exactly one of cron and every
    try:
        when = next_cron(interval.cron, base, zone, field="repeatInterval")
        if when <= base:  # Agenda's nudge for cron results that are not after the last run
            when = next_cron(interval.cron, base + timedelta(seconds=1), zone, field="repeatInterval")
    except InvalidInterval as error:
        raise _document_error(interval.stored, error.reason) from None
    return when

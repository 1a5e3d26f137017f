"""Cron expressions read exactly as Node's cron-parser 5.10 (the version Agenda 6.2.6 uses) reads them.

A ``repeatInterval`` written by Node must mean the same schedule here, and one Node refuses must be
refused here, so this module follows cron-parser's syntax rather than croniter's:

* 1 to 6 fields; with fewer than 6 the missing leading fields are ``0`` (seconds) then ``*``, so
  ``"* * *"`` is every minute and 5 fields are minute, hour, day of month, month, day of week.
* ``*`` and ``?`` as a whole list item (optionally with a step), lists, ranges, steps (``*/5``,
  ``3/2`` meaning ``3-max/2``), month names and weekday names (any run of three letters is read as a
  name, case-insensitive), day of week 0-7 (7 is Sunday).
* ``L`` alone in the day of month (last day), ``<weekday>L`` in the day of week (last such weekday of
  the month, e.g. ``5L``), ``<weekday>#<n>`` (n 1-5, alone in the field).
* When both the day of month and the day of week are restricted, a day matching either runs.
* Refused like cron-parser: ``W``, ``L5``, a standalone ``L`` in the day of week, ``L-2``, duplicate
  values (``0,7``), out-of-range values, empty list items, steps of 0, more than 6 fields, more than
  1024 characters, and an explicit day of month no listed month has (``0 0 30 2 *``).
* ``H`` (a hashed value) is refused: cron-parser draws it at random on every computation unless the
  caller gives a seed, and Agenda gives none, so Node's schedule for it changes from run to run.

This module reads that syntax (no Python library does) and rewrites each expression in croniter's
syntax (6 fields, seconds first, explicit lists; cron-parser's ``5L`` is croniter's ``L5``); croniter
finds the occurrences. Times are wall-clock times without a zone; :mod:`agendapy.schedule.cron_times`
maps them to instants in a timezone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Final

from .text import JS_SPACE

__all__ = ["MAX_CRON_LENGTH", "CronError", "CronSpec", "cron_spec", "is_cron", "parse_cron"]

#: cron-parser refuses longer expressions; so do we (it also bounds the work spent reading one).
MAX_CRON_LENGTH: Final = 1024
_MONTH_NAMES: Final = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS: Final = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}
_WEEKDAY_NAMES: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_WEEKDAYS: Final = {name: number for number, name in enumerate(_WEEKDAY_NAMES)}
# cron-parser's longest month lengths, February counted as 29 days.
_LONGEST: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# JavaScript's String.prototype.trim / split(/\s+/) whitespace.
_SPLIT: Final = re.compile(f"[{JS_SPACE}]+")
_NAME: Final = re.compile(r"[a-zA-Z]{3}")
_DIGITS: Final = re.compile(r"[0-9]+\Z")
_FIELDS: Final = ("second", "minute", "hour", "day of month", "month", "day of week")
_BOUNDS: Final = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_VALID_CHARS: Final = (
    re.compile(r"[?,*0-9/\-]+\Z"),
    re.compile(r"[?,*0-9/\-]+\Z"),
    re.compile(r"[?,*0-9/\-]+\Z"),
    re.compile(r"[?,*0-9L/\-]+\Z"),
    re.compile(r"[?,*0-9/\-]+\Z"),
    re.compile(r"[?,*0-9L#/\-]+\Z"),
)


class CronError(ValueError):
    """An expression cron-parser would refuse; the message says which part and why."""


@dataclass(frozen=True)
class CronSpec:
    """A parsed expression and its schedule as croniter expressions, which compute the occurrences.

    Attributes:
        text: the expression with its 6 fields (seconds first) separated by single spaces.
        every_hour: whether it runs in every hour of the day (:mod:`agendapy.schedule.cron_times` treats DST
            changes differently then, as cron-parser does).
        croniter_expressions: one or two 6-field expressions (seconds first) in croniter's syntax whose
            occurrences together are this expression's occurrences: two when both the day of month and
            the day of week are restricted (see :func:`parse_cron`).
    """

    text: str
    every_hour: bool
    croniter_expressions: tuple[str, ...]

    def next_after(self, wall: datetime) -> datetime | None:
        """The first wall-clock time strictly after ``wall`` (to the second) that matches, or None.

        None when no time matches within croniter's search window (50 years) or before the year 10000.
        With two croniter expressions (see :attr:`croniter_expressions`) the earlier result wins.
        """
        start = wall.replace(microsecond=0)
        found = [t for e in self.croniter_expressions if (t := _occurrence(e, start, forward=True))]
        return min(found, default=None)

    def previous_at_or_before(self, wall: datetime) -> datetime | None:
        """The last wall-clock time at or before ``wall`` (to the second) that matches, or None.

        None as for :meth:`next_after`, and from the last second of the year 9999 (croniter searches
        back from the second after ``wall``).
        """
        start = wall.replace(microsecond=0)
        found = [t for e in self.croniter_expressions if (t := _occurrence(e, start, forward=False))]
        return max(found, default=None)


def _occurrence(expression: str, start: datetime, *, forward: bool) -> datetime | None:
    """croniter's next occurrence after ``start``, or its last one at or before ``start``."""
    # Imported here: a worker without cron schedules never needs it (~20 ms of every start-up).
    from croniter import CroniterBadDateError, croniter

    # A naive start makes croniter work on wall-clock time without a zone, as cron_times needs.
    try:
        if forward:
            found: datetime = croniter(expression, start, second_at_beginning=True).get_next(datetime)
        else:  # get_prev is strictly before its start: start one second later to include `start`
            walker = croniter(expression, start + timedelta(seconds=1), second_at_beginning=True)
            found = walker.get_prev(datetime)
    except (CroniterBadDateError, OverflowError):  # none within croniter's 50-year search or years 1-9999
        return None
    return found


def parse_cron(expression: str) -> CronSpec:
    """Read ``expression`` as cron-parser 5.10 does (predefined ``@`` names are the caller's business).

    Raises:
        CronError: the expression is one cron-parser refuses, or uses ``H``.
    """
    if len(expression) > MAX_CRON_LENGTH:
        raise CronError(f"longer than {MAX_CRON_LENGTH} characters")
    atoms = _SPLIT.split(expression.strip(JS_SPACE))
    if len(atoms) > 6:
        raise CronError(f"{len(atoms)} fields; at most 6 (seconds first)")
    raw = ["0", "*", "*", "*", "*", "*"][: 6 - len(atoms)] + atoms
    values = [_parse_field(index, text) for index, text in enumerate(raw[:5])]
    nth = 0
    weekday_text = _replace_names(5, raw[5])
    if "#" in weekday_text:
        nth, weekday_values = _parse_nth(weekday_text)
    else:
        weekday_values = _parse_field(5, raw[5])
    seconds, minutes, hours, day_values, month_values = ({int(v) for v in vs if v != "L"} for vs in values)
    last_day = "L" in values[3]
    day_restricted = raw[3] not in ("*", "?")
    weekday_restricted = raw[5] not in ("*", "?")
    longest = max(_LONGEST[m - 1] for m in month_values)
    if day_restricted and not last_day and not weekday_restricted and min(day_values) > longest:
        raise CronError(f"day of month {min(day_values)} never occurs in the months listed")
    weekdays = {v % 7 for v in weekday_values if isinstance(v, int)}
    last_weekdays = {int(v[0]) % 7 for v in weekday_values if isinstance(v, str)}
    # Days no listed month has never match (cron-parser keeps them only to run the other day field).
    days = [str(d) for d in sorted(day_values) if d <= longest] + (["L"] if last_day else [])
    if nth or last_weekdays:
        # croniter refuses to mix plain weekdays with "#"/"L" ones; every Monday is a 1st-5th Monday.
        week = [f"{w}#{n}" for w in sorted(weekdays) for n in ([nth] if nth else range(1, 6))]
        week_field = ",".join(week + [f"L{w}" for w in sorted(last_weekdays)])  # croniter's "5L" is "L5"
    else:
        week_field = _croniter_list(weekdays, 7)
    times = " ".join(_croniter_list(v, size) for v, size in ((seconds, 60), (minutes, 60), (hours, 24)))
    month = _croniter_list(month_values, 12)
    if day_restricted and weekday_restricted:
        # cron-parser runs on a day matching either field. croniter's own union (day_or) keeps "#" and
        # "L" weekdays as a filter on both sides, and reads a full list as "*" only sometimes, so each
        # field gets an expression of its own (the other field "*") and the union is taken here.
        halves = [f"{times} {','.join(days)} {month} *"] if days else []
        expressions = (*halves, f"{times} * {month} {week_field}")
    else:
        day_field = ",".join(days) if day_restricted else "*"
        expressions = (f"{times} {day_field} {month} {week_field if weekday_restricted else '*'}",)
    return CronSpec(text=" ".join(raw), every_hour=len(hours) == 24, croniter_expressions=expressions)


def is_cron(expression: str) -> bool:
    """Tell whether ``expression`` is a cron expression of 5 fields, or 6 with seconds first.

    The syntax is Node's cron-parser 5's: ``5L`` is the last Friday of the month, ``L5`` and ``15W``
    are refused as Node refuses them.
    """
    if not isinstance(expression, str) or len(expression.split()) not in (5, 6):
        return False
    try:
        cron_spec(expression)
    except CronError:
        return False
    return True


@lru_cache(maxsize=512)
def cron_spec(expression: str) -> CronSpec:
    """:func:`parse_cron`, cached: workers read the same few stored expressions over and over."""
    return parse_cron(expression)


def _croniter_list(values: set[int], size: int) -> str:
    """``values`` as a croniter list, ``*`` when it holds all ``size`` of the field's values."""
    return "*" if len(values) == size else ",".join(str(v) for v in sorted(values))


def _replace_names(index: int, text: str) -> str:
    if index not in (4, 5):
        return text
    names = _MONTHS if index == 4 else _WEEKDAYS

    def number(match: re.Match[str]) -> str:
        name = match.group(0).lower()
        if name not in names:
            raise CronError(f"unknown {'month' if index == 4 else 'weekday'} name {match.group(0)!r}")
        return str(names[name])

    return _NAME.sub(number, text)


def _parse_nth(text: str) -> tuple[int, list[int | str]]:
    parts = text.split("#")
    for char in ",-/L":
        if char in text:
            raise CronError(f"'#' cannot be combined with {char!r} in the day of week ({text!r})")
    if len(parts) != 2 or not _DIGITS.match(parts[1]) or not 1 <= int(parts[1]) <= 5:
        raise CronError(f"the occurrence after '#' must be 1-5 ({text!r})")
    return int(parts[1]), _parse_field(5, parts[0])


def _parse_field(index: int, text: str) -> list[int | str]:
    name = _FIELDS[index]
    low, high = _BOUNDS[index]
    value = _replace_names(index, text)
    if not _VALID_CHARS[index].match(value):
        problem = "bad characters"
        if "H" in value.upper():
            problem = "'H' (a random value in Node) is not supported"
        raise CronError(f"{name} field {text!r}: {problem}")
    result: list[int | str] = []
    for item in value.split(","):
        if not item:
            raise CronError(f"{name} field {text!r}: empty list item")
        if item.split("/", 1)[0] in ("*", "?"):
            item = f"{low}-{high}" + item[1:]
        if "*" in item or "?" in item:
            raise CronError(f"{name} field {text!r}: '*' and '?' must stand alone or before a step")
        result.extend(_parse_item(index, item, text))
    if index == 5 and "L" in result:
        raise CronError(f"day of week field {text!r}: 'L' needs a weekday before it, e.g. '5L'")
    seen: set[int | str] = set()
    for item_value in result:
        if item_value in seen:
            raise CronError(f"{name} field {text!r}: {item_value} is listed twice")
        seen.add(item_value)
    return result


def _parse_item(index: int, item: str, text: str) -> list[int | str]:
    name = _FIELDS[index]
    low, high = _BOUNDS[index]
    parts = item.split("/")
    if len(parts) > 2:
        raise CronError(f"{name} field {text!r}: more than one '/' in {item!r}")
    step = 1
    body = parts[0]
    if len(parts) == 2:
        if not _DIGITS.match(parts[1]) or int(parts[1]) == 0:
            raise CronError(f"{name} field {text!r}: the step must be a whole number above 0")
        step = int(parts[1])
        if "-" not in body:
            body = f"{body}-{high}"
    bounds = body.split("-")
    if len(bounds) == 1:
        return [_single(index, body, text)]
    if len(bounds) > 2 or not all(_DIGITS.match(bound) for bound in bounds):
        raise CronError(f"{name} field {text!r}: {body!r} is not a range of numbers")
    first, last = int(bounds[0]), int(bounds[1])
    if first < low or last > high:
        raise CronError(f"{name} field {text!r}: the range {first}-{last} is outside {low}-{high}")
    if first > last:
        raise CronError(f"{name} field {text!r}: the range {first}-{last} runs backwards")
    values: list[int | str] = list(range(first, last + 1, step))
    if index == 5 and last == 7 and (last - first) % step == 0 and 0 not in values:
        values.insert(0, 0)  # cron-parser: a day-of-week range reaching 7 also means Sunday (0)
    return values


def _single(index: int, value: str, text: str) -> int | str:
    name = _FIELDS[index]
    low, high = _BOUNDS[index]
    if _DIGITS.match(value):
        number = int(value)
        if not low <= number <= high:
            raise CronError(f"{name} field {text!r}: {number} is outside {low}-{high}")
        return number % 7 if index == 5 else number
    if "L" in value:
        if index == 3 and value == "L":
            return "L"
        if index == 5 and re.fullmatch(r"[0-7]?L", value):
            return value
        expected = "'L' alone" if index == 3 else "a weekday 0-7 followed by 'L', e.g. '5L'"
        raise CronError(f"{name} field {text!r}: {value!r} is not valid (expected {expected})")
    raise CronError(f"{name} field {text!r}: {value!r} is not a number")

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

Times are wall-clock times without a zone; :mod:`agendapy.schedule` maps them to instants.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from calendar import monthrange
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final

__all__ = ["MAX_CRON_LENGTH", "CronError", "CronSpec", "parse_cron"]

#: cron-parser refuses longer expressions; so do we (it also bounds the work spent reading one).
MAX_CRON_LENGTH: Final = 1024
# The search for the next or previous occurrence gives up after this many days (about 30 years).
_SEARCH_DAYS: Final = 11_000
_MONTH_NAMES: Final = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS: Final = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}
_WEEKDAY_NAMES: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_WEEKDAYS: Final = {name: number for number, name in enumerate(_WEEKDAY_NAMES)}
# cron-parser's longest month lengths, February counted as 29 days.
_LONGEST: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# JavaScript's String.prototype.trim / split(/\s+/) whitespace.
_JS_SPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_SPLIT: Final = re.compile(f"[{_JS_SPACE}]+")
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
    """A parsed expression: the values each field allows, and the day rules.

    Attributes:
        text: the expression with its 6 fields (seconds first) separated by single spaces.
        seconds, minutes, hours, months: sorted allowed values.
        days: allowed days of the month (numbers); ``last_day`` adds the last day of the month.
        weekdays: allowed weekdays, 0=Sunday; ``last_weekdays`` the weekdays allowed only in the
            last week of the month (``5L``); ``nth`` restricts ``weekdays`` to the nth one (1-5, 0: any).
        day_restricted, weekday_restricted: the field is not ``*``/``?`` (both restricted: either matches).
    """

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    last_day: bool
    months: frozenset[int]
    weekdays: frozenset[int]
    last_weekdays: frozenset[int]
    nth: int
    day_restricted: bool
    weekday_restricted: bool

    @property
    def every_hour(self) -> bool:
        """Whether the expression runs in every hour of the day."""
        return len(self.hours) == 24

    def day_matches(self, day: date) -> bool:
        """Whether ``day`` is a day the expression runs on (cron-parser's rules, OR when both restricted)."""
        if day.month not in self.months:
            return False
        last = monthrange(day.year, day.month)[1]
        on_day = day.day in self.days or (self.last_day and day.day == last)
        weekday = day.isoweekday() % 7
        on_weekday = (weekday in self.weekdays and (self.nth == 0 or (day.day + 6) // 7 == self.nth)) or (
            weekday in self.last_weekdays and day.day > last - 7
        )
        if self.day_restricted and self.weekday_restricted:
            return on_day or on_weekday
        if self.weekday_restricted:
            return on_weekday
        return on_day

    def next_after(self, wall: datetime) -> datetime | None:
        """The first wall-clock time strictly after ``wall`` that matches, or None within ~30 years."""
        start = wall.replace(microsecond=0) + timedelta(seconds=1)
        day, floor = start.date(), start.time()
        for _ in range(_SEARCH_DAYS):
            if self.day_matches(day):
                found = self._first_time_from(floor)
                if found is not None:
                    return datetime.combine(day, found)
            day, floor = day + timedelta(days=1), time(0)
        return None

    def previous_at_or_before(self, wall: datetime) -> datetime | None:
        """The last wall-clock time at or before ``wall`` that matches, or None within ~30 years."""
        day, ceiling = wall.date(), wall.replace(microsecond=0).time()
        for _ in range(_SEARCH_DAYS):
            if self.day_matches(day):
                found = self._last_time_to(ceiling)
                if found is not None:
                    return datetime.combine(day, found)
            day, ceiling = day - timedelta(days=1), time(23, 59, 59)
        return None

    def _first_time_from(self, floor: time) -> time | None:
        for hour in self.hours[bisect_left(self.hours, floor.hour) :]:
            minute_floor = floor.minute if hour == floor.hour else 0
            for minute in self.minutes[bisect_left(self.minutes, minute_floor) :]:
                second_floor = floor.second if (hour, minute) == (floor.hour, floor.minute) else 0
                index = bisect_left(self.seconds, second_floor)
                if index < len(self.seconds):
                    return time(hour, minute, self.seconds[index])
        return None

    def _last_time_to(self, ceiling: time) -> time | None:
        for hour in reversed([h for h in self.hours if h <= ceiling.hour]):
            minute_top = ceiling.minute if hour == ceiling.hour else 59
            for minute in reversed([m for m in self.minutes if m <= minute_top]):
                second_top = ceiling.second if (hour, minute) == (ceiling.hour, ceiling.minute) else 59
                fitting = [s for s in self.seconds if s <= second_top]
                if fitting:
                    return time(hour, minute, fitting[-1])
        return None


def parse_cron(expression: str) -> CronSpec:
    """Read ``expression`` as cron-parser 5.10 does (predefined ``@`` names are the caller's business).

    Raises:
        CronError: the expression is one cron-parser refuses, or uses ``H``.
    """
    if len(expression) > MAX_CRON_LENGTH:
        raise CronError(f"longer than {MAX_CRON_LENGTH} characters")
    atoms = _SPLIT.split(expression.strip(_JS_SPACE))
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
    values.append(weekday_values)
    seconds, minutes, hours, day_values, month_values, weekday_values = values
    months = frozenset(int(v) for v in month_values)
    days = [v for v in day_values if isinstance(v, int)]
    last_day = any(v == "L" for v in day_values)
    if len(months) == 1:  # cron-parser drops days the only month never has (unless none is left)
        fitting = [d for d in days if d <= _LONGEST[next(iter(months)) - 1]]
        days = fitting or days
    weekday_restricted = raw[5] not in ("*", "?")
    if not last_day and not weekday_restricted and days:
        longest = max(_LONGEST[m - 1] for m in months)
        if min(days) > longest:
            raise CronError(f"day of month {min(days)} never occurs in the months listed")
    last_weekdays = frozenset(int(str(v)[0]) % 7 for v in weekday_values if isinstance(v, str))
    return CronSpec(
        text=" ".join(raw),
        seconds=tuple(sorted(int(v) for v in seconds)),
        minutes=tuple(sorted(int(v) for v in minutes)),
        hours=tuple(sorted(int(v) for v in hours)),
        days=frozenset(days),
        last_day=last_day,
        months=months,
        weekdays=frozenset(int(v) % 7 for v in weekday_values if isinstance(v, int)),
        last_weekdays=last_weekdays,
        nth=nth,
        day_restricted=raw[3] not in ("*", "?"),
        weekday_restricted=weekday_restricted,
    )


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

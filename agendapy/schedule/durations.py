"""Durations: "3 minutes", "1 hour and 30 minutes", "10ms", "PT15M", seconds, ``timedelta``, unit mappings.

:func:`to_timedelta` reads what the Python API accepts and raises :class:`~agendapy.errors.InvalidInterval`
naming the field; the raw readers below it return ``None`` for what they cannot read. Stored
``repeatInterval`` strings are read as Node does by :mod:`agendapy.schedule.human_interval` instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Final

from ..errors import InvalidInterval
from .human_interval import DAY, HOUR, MINUTE, MONTH, NUMBER_NAMES, SECOND, TENS_NAMES, YEAR
from .text import MAX_DATE_LENGTH, clip, js_to_number

__all__ = ["read_duration_ms", "read_iso_duration_ms", "to_timedelta", "whole_ms"]

_MS: Final = timedelta(milliseconds=1)
_DURATION_KEYS: Final = frozenset(
    {"weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds"}
)


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
    if len(text) > MAX_DATE_LENGTH:
        raise InvalidInterval(field, clip(text), f"longer than {MAX_DATE_LENGTH} characters")
    stripped = text.strip()
    if not stripped:
        raise InvalidInterval(field, text, "the duration is empty")
    if math.isfinite(js_to_number(stripped)):
        raise InvalidInterval(
            field,
            text,
            "a bare number in a string is ambiguous (Agenda reads milliseconds, the Python "
            "API seconds): pass a number of seconds or add a unit, e.g. '5 seconds'",
        )
    ms = read_iso_duration_ms(stripped)
    if ms is None:
        ms = read_duration_ms(stripped)
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


def whole_ms(duration: timedelta) -> int:
    """``duration`` in whole milliseconds, any fraction dropped."""
    # Node adds milliseconds to a Date, which drops any fraction; so do we.
    return duration // _MS


def _unit_table() -> dict[str, float]:
    spellings = {
        0.001: "us µs usec usecs microsecond microseconds",
        1.0: "ms msec msecs millisecond milliseconds",
        SECOND: "s sec secs second seconds",
        MINUTE: "m min mins minute minutes",
        HOUR: "h hr hrs hour hours",
        DAY: "d day days",
        7 * DAY: "w wk wks week weeks",
        MONTH: "mo mos month months",
        YEAR: "y yr yrs year years",
    }
    return {name: length for length, names in spellings.items() for name in names.split()}


_UNITS: Final = _unit_table()
_ONES: Final = {name: value for value, name in enumerate(NUMBER_NAMES) if 1 <= value <= 9}
_WHOLE: Final = {name: value for value, name in enumerate(NUMBER_NAMES) if value == 0 or value >= 10}
_TENS: Final = {name: 20 + 10 * index for index, name in enumerate(TENS_NAMES)}
_TOKEN: Final = re.compile(
    r"\s*(?:(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)|(?P<word>[a-zµ]+)|(?P<mark>[,&-]))"
)


def read_duration_ms(text: str) -> float | None:
    """Read a human duration ("3 minutes", "1 hour and 30 minutes", "10ms", "an hour") in milliseconds.

    Terms are a quantity (digits, English number words up to "ninety nine hundred", "a"/"an", or
    nothing, meaning one) followed by a unit; "and", "," and "&" may separate terms. Returns ``None``
    for anything else, including negative quantities.
    """
    tokens = _tokens(text.lower())
    if tokens is None:
        return None
    total, terms = 0.0, 0
    number: float | None = None
    words: list[str] = []
    for kind, token in tokens:
        if kind == "number":
            if number is not None or words:
                return None
            number = float(token)
        elif token in _UNITS:
            quantity = number if number is not None else (_word_number(words) if words else 1.0)
            if quantity is None:
                return None
            total += quantity * _UNITS[token]
            terms, number, words = terms + 1, None, []
        elif kind == "word" and token != "and":
            if number is not None:
                return None
            words.append(token)
        elif (token == "-" and not words) or (token in ",&" and (words or number is not None)):
            return None  # a minus sign or a separator in the middle of a term
    return total if terms and number is None and not words else None


def _tokens(text: str) -> list[tuple[str, str]] | None:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            return None
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _word_number(words: list[str]) -> float | None:
    """Value of English number words such as "twenty five", "a hundred and three", "an"."""
    hundreds = 0
    value, tens, ones = 0, False, False
    for index, word in enumerate(words):
        if word in ("a", "an") and index == 0:
            value, ones = 1, True
        elif word == "hundred" and not hundreds and 0 <= value <= 99:
            hundreds, value, tens, ones = 100 * (value or 1), 0, False, False
        elif word in _TENS and not (tens or ones):
            value, tens = value + _TENS[word], True
        elif word in _ONES and not ones:
            value, ones = value + _ONES[word], True
        elif word in _WHOLE and not (tens or ones):
            value, ones = value + _WHOLE[word], True
        else:
            return None
    return float(hundreds + value)


def read_iso_duration_ms(text: str) -> float | None:
    """Read an ISO-8601 duration ("PT15M", "P1DT2H", "P2W") in milliseconds, or ``None``.

    Years and months have no fixed length; they count as 365 and 30 days, as in human-interval.
    """
    candidate = text.strip().upper()
    if not re.match(r"[+-]?P", candidate):
        return None
    import isodate  # type: ignore[import-untyped]  # only needed for this rare form

    try:
        parsed = isodate.parse_duration(candidate)
    except (isodate.ISO8601Error, ValueError, ArithmeticError, TypeError):
        return None
    if isinstance(parsed, timedelta):
        return parsed / timedelta(milliseconds=1)
    calendar_days = float(parsed.years) * 365 + float(parsed.months) * 30
    rest: timedelta = parsed.tdelta
    return calendar_days * DAY + rest / timedelta(milliseconds=1)

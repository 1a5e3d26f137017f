"""Readers for duration and date strings; they return ``None`` (or NaN) instead of raising.

:mod:`agendapy.schedule` turns these raw readings into validated values and errors; this module only
reads text. It holds three families of readers:

* ``node_human_interval`` reads a string exactly as Node's ``human-interval`` 2.0.1 (and the ``numbered``
  1.1.0 package it uses for number words) does, quirks included: case-sensitive, the letters "and" are
  dropped anywhere (so "thousand" reads as "thous"), words before a unit that are not number words count
  as zero ("an hour" is 0 ms), "milliseconds" is read as "milli" + "seconds" (so "500 milliseconds" is
  500 s), trailing text without a unit is ignored, month = 30 days, year = 365 days. Agenda and agendapy
  share ``repeatInterval`` strings in one collection, so both must read a stored string to the same
  number of milliseconds; no Python library reproduces that reading, which is why it is hand-written here.
* ``read_duration_ms`` / ``read_iso_duration_ms`` are the friendlier readers of the Python API ("10ms",
  "an hour", "1h30m", "PT15M"); :mod:`agendapy.schedule` stores such a string only when Node reads it to
  the same value, and stores milliseconds otherwise.
* ``read_time_of_day``, ``read_iso_datetime``, ``read_relative`` and ``read_natural_date`` read dates
  and times of day ("3:30pm", "2019-04-30T22:31:00.00Z", "in 20 minutes", "tomorrow at noon").
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo

__all__ = [
    "MAX_DATE_LENGTH",
    "MAX_TEXT_LENGTH",
    "js_to_number",
    "js_trim",
    "node_human_interval",
    "read_duration_ms",
    "read_iso_datetime",
    "read_iso_duration_ms",
    "read_natural_date",
    "read_relative",
    "read_time_of_day",
]

#: Longest repeat interval or cron string read (cron-parser's own limit); longer input is refused.
MAX_TEXT_LENGTH: Final = 1024
#: Longest date, duration or time-of-day string read; longer input is refused before any parsing.
MAX_DATE_LENGTH: Final = 256
# Every pattern below runs in time linear in its input (no nested or overlapping quantifiers), and
# inputs are bounded by the limits above, so no string can stall the event loop.

_SECOND: Final = 1000.0
_MINUTE: Final = 60 * _SECOND
_HOUR: Final = 60 * _MINUTE
_DAY: Final = 24 * _HOUR
# human-interval's month and year lengths; the Python API uses the same so both sides agree.
_MONTH: Final = 30 * _DAY
_YEAR: Final = 365 * _DAY

# ---------------------------------------------------------------------------------------------------
# JavaScript number semantics needed to read strings as Node does
# ---------------------------------------------------------------------------------------------------

# JavaScript's WhiteSpace and LineTerminator code points (String.prototype.trim, Number()).
_JS_SPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# "[0-9]+(?:\.[0-9]*)?" rather than "[0-9]+\.?[0-9]*": the latter backtracks quadratically on digits.
_JS_DECIMAL: Final = r"[+-]?(?:Infinity|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
_JS_DECIMAL_FULL: Final = re.compile(_JS_DECIMAL + r"\Z")
_JS_DECIMAL_PREFIX: Final = re.compile(_JS_DECIMAL)
_JS_RADIX: Final = (
    (re.compile(r"0[xX]([0-9a-fA-F]+)\Z"), 16),
    (re.compile(r"0[oO]([0-7]+)\Z"), 8),
    (re.compile(r"0[bB]([01]+)\Z"), 2),
)


def js_trim(text: str) -> str:
    """Return ``text`` without the leading and trailing whitespace JavaScript's ``trim()`` removes."""
    return text.strip(_JS_SPACE)


def js_to_number(text: str) -> float:
    """Return what JavaScript's ``Number(text)`` gives for a string (NaN when it is not a number)."""
    stripped = text.strip(_JS_SPACE)
    if not stripped:
        return 0.0
    for pattern, base in _JS_RADIX:
        match = pattern.match(stripped)
        if match:
            return _int_to_float(int(match.group(1), base))
    if _JS_DECIMAL_FULL.match(stripped):
        return float(stripped)
    return math.nan


def _int_to_float(value: int) -> float:
    # Python refuses ints beyond the float range where JavaScript gives Infinity.
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _js_parse_float(text: str) -> float:
    """Return what JavaScript's ``parseFloat(text)`` gives: the longest numeric prefix, else NaN."""
    match = _JS_DECIMAL_PREFIX.match(text.lstrip(_JS_SPACE))
    return float(match.group(0)) if match else math.nan


def _js_number_str(value: float) -> str:
    """Return what JavaScript's ``String(value)`` prints for a number."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr() gives the shortest round-tripping digits, as JavaScript does; only the layout differs.
    parts = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, parts.digits))
    exponent = int(parts.exponent)
    point = len(digits) + exponent  # position of the decimal point relative to the digits
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        body = digits + "0" * (point - count)
    elif 0 < point <= 21:
        body = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        body = "0." + "0" * -point + digits
    else:
        power = point - 1
        mark = f"e{'+' if power >= 0 else '-'}{abs(power)}"
        body = digits + mark if count == 1 else digits[0] + "." + digits[1:] + mark
    return sign + body


def _pow10(power: int) -> float:
    try:
        return 10.0**power
    except OverflowError:  # JavaScript's Math.pow gives Infinity
        return math.inf


# ---------------------------------------------------------------------------------------------------
# Node's human-interval 2.0.1 and numbered 1.1.0
# ---------------------------------------------------------------------------------------------------

_NODE_UNITS: Final = {
    "second": _SECOND,
    "minute": _MINUTE,
    "hour": _HOUR,
    "day": _DAY,
    "week": 7 * _DAY,
    "month": _MONTH,
    "year": _YEAR,
}
_NODE_NOISE: Final = re.compile(r"(?:[^a-z0-9.\-]|and)+")
_NODE_UNIT: Final = re.compile(r"(second|minute|hour|day|week|month|year)s?")
_NODE_WORD_SPLIT: Final = re.compile(r"[^A-Za-z0-9_]+")

_NUMBER_NAMES: Final = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS_NAMES: Final = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALE_NAMES: Final = {
    2: "hundred",
    3: "thousand",
    6: "million",
    9: "billion",
    12: "trillion",
    15: "quadrillion",
    18: "quintillion",
    21: "sextillion",
    24: "septillion",
    27: "octillion",
    30: "nonillion",
    33: "decillion",
    36: "undecillion",
    39: "duodecillion",
    42: "tredecillion",
    45: "quattuordecillion",
    48: "quindecillion",
    51: "sexdecillion",
    54: "septendecillion",
    57: "octodecillion",
    60: "novemdecillion",
    63: "vigintillion",
    100: "googol",
    303: "centillion",
}


def _numbered_words() -> dict[str, float | str]:
    words: dict[str, float | str] = {"nil": 0.0, "naught": 0.0, "period": ".", "decimal": "."}
    words.update({"point": ".", "negative": "-"})
    words.update({name: float(value) for value, name in enumerate(_NUMBER_NAMES)})
    words.update({name: float(20 + 10 * index) for index, name in enumerate(_TENS_NAMES)})
    words.update({name: float(f"1e{power}") for power, name in _SCALE_NAMES.items()})
    return words


_NUMBERED_WORDS: Final = _numbered_words()


def node_human_interval(text: str) -> float:
    """Read ``text`` as Node's human-interval 2.0.1 does: milliseconds, or NaN when unreadable.

    The result may be zero, negative, fractional or infinite, exactly as in Node.
    """
    if not text:
        return math.nan  # human-interval hands back "" itself, which Agenda treats as unreadable
    rest = _NODE_NOISE.sub(" ", text)
    result = math.nan
    while match := _NODE_UNIT.search(rest):
        quantity = rest[: match.start()].strip(" ")
        number = 1.0
        if quantity:
            number = _js_parse_float(quantity)
            if math.isnan(number):
                number = _numbered_parse(quantity)
        if math.isnan(result):
            result = 0.0
        result += number * _NODE_UNITS[match.group(1)]
        rest = rest[match.end() :]
    return result


def _interval_of(value: float | str) -> int | str:
    """numbered's ``intervals()``: digits after the first one, as a string for exponent notation."""
    text = "." if isinstance(value, str) else _js_number_str(value)
    exponent = re.search(r"e\+(\d+)", text)
    return exponent.group(1) if exponent else len(text) - 1


def _js_less(left: int | str, right: int | str) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return left < right  # JavaScript compares two strings by code unit
    return float(left) < float(right)


def _total_stack(stack: list[float], largest: float) -> float:
    total = 0.0
    for index in range(len(stack) - 1, -1, -1):
        following = stack[index + 1] if index + 1 < len(stack) else None
        total = (
            total * stack[index]
            if following is not None and stack[index] > following
            else total + stack[index]
        )
    return total * largest


def _numbered_parse(text: str) -> float:
    """Read number words as the ``numbered`` package's ``parse`` does (unknown words are ignored)."""
    modifier = 1.0
    tokens: list[float | str] = []
    for word in _NODE_WORD_SPLIT.split(text):
        value = _NUMBERED_WORDS.get(word.lower())
        if value == "-":
            modifier = -1.0
        elif value is not None:
            tokens.append(value)
    memo, largest, largest_interval, zeros = 0.0, 0.0, _interval_of(0.0), 0
    stack: list[float] = []
    # numbered folds the words from the right; this loop keeps its state machine step for step.
    for token in reversed(tokens):
        interval = _interval_of(token)
        if isinstance(token, float) and _js_less(interval, largest_interval):
            stack.append(token)
            if len(stack) == 1:
                memo -= largest
            continue
        memo += _total_stack(stack, largest)
        stack = []
        if isinstance(token, str):  # the decimal point
            decimals = zeros + len(_js_number_str(memo))
            zeros, largest, largest_interval = 0, 0.0, 0
            memo *= _pow10(-decimals)
        elif token == 0:
            zeros += 1
        elif memo >= 1 and type(interval) is type(largest_interval) and interval == largest_interval:
            memo = js_to_number(_js_number_str(token) + "0" * zeros + _js_number_str(memo))
            zeros = 0
        else:
            largest, largest_interval = token, interval
            memo = (memo + token) * _pow10(zeros)
    return modifier * (memo + _total_stack(stack, largest))


# ---------------------------------------------------------------------------------------------------
# The Python API's duration reader
# ---------------------------------------------------------------------------------------------------


def _unit_table() -> dict[str, float]:
    spellings = {
        0.001: "us µs usec usecs microsecond microseconds",
        1.0: "ms msec msecs millisecond milliseconds",
        _SECOND: "s sec secs second seconds",
        _MINUTE: "m min mins minute minutes",
        _HOUR: "h hr hrs hour hours",
        _DAY: "d day days",
        7 * _DAY: "w wk wks week weeks",
        _MONTH: "mo mos month months",
        _YEAR: "y yr yrs year years",
    }
    return {name: length for length, names in spellings.items() for name in names.split()}


_UNITS: Final = _unit_table()
_ONES: Final = {name: value for value, name in enumerate(_NUMBER_NAMES) if 1 <= value <= 9}
_WHOLE: Final = {name: value for value, name in enumerate(_NUMBER_NAMES) if value == 0 or value >= 10}
_TENS: Final = {name: 20 + 10 * index for index, name in enumerate(_TENS_NAMES)}
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
    return calendar_days * _DAY + rest / timedelta(milliseconds=1)


# ---------------------------------------------------------------------------------------------------
# Dates and times of day
# ---------------------------------------------------------------------------------------------------

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


def read_iso_datetime(text: str, timezone_: ZoneInfo | None) -> datetime | None:
    """Read an ISO-8601 date or date-time; one without an offset is in ``timezone_`` (UTC if None)."""
    candidate = text.strip()
    if not re.match(r"[0-9]{4}-?[0-9]{2}", candidate):
        return None
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone_ or UTC)
    return parsed


_IN: Final = re.compile(r"in\s+(?P<amount>.+)", re.IGNORECASE | re.DOTALL)


def read_relative(text: str) -> tuple[str, int] | None:
    r"""Split "in 20 minutes" / "20 minutes from now" / "2 hours ago" into (duration text, +1 or -1).

    The suffixes are cut off word by word with string operations, not a pattern such as
    ``(.+?)\s+ago``, which takes quadratic time on a long run of spaces.
    """
    candidate = text.strip()
    match = _IN.fullmatch(candidate)
    if match:
        return match["amount"], 1
    for words, sign in ((("now", "from"), 1), (("ago",), -1)):
        rest: str | None = candidate
        for word in words:
            rest = _cut_word(rest, word) if rest is not None else None
        if rest:
            return rest, sign
    return None


def _cut_word(text: str, word: str) -> str | None:
    """``text`` without a final ``word`` and the whitespace before it; None unless both are there."""
    if len(text) <= len(word) or text[-len(word) :].lower() != word:
        return None
    rest = text[: -len(word)]
    trimmed = rest.rstrip()
    return trimmed if len(trimmed) < len(rest) and trimmed else None


def read_natural_date(text: str, *, now: datetime, timezone_: ZoneInfo | None) -> datetime | None:
    """Read natural language ("tomorrow at noon", "next monday at 9am") relative to ``now``.

    Wall-clock words are read in ``timezone_`` (UTC if None); the result is aware, in UTC.
    """
    import dateparser  # slow to import, and only natural-language dates need it

    zone = timezone_ or ZoneInfo("UTC")
    settings = {
        "RELATIVE_BASE": now.astimezone(zone).replace(tzinfo=None),
        "PREFER_DATES_FROM": "future",
        "TIMEZONE": zone.key,
        "TO_TIMEZONE": "UTC",
        "RETURN_AS_TIMEZONE_AWARE": True,
    }
    try:
        parsed = dateparser.parse(text, languages=["en"], settings=settings)
    # dateparser can raise almost anything on odd input (OverflowError, re errors, ...); all mean
    # "not a date" here.
    except Exception:
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

"""A string read exactly as Node's ``human-interval`` 2.0.1 reads it (``numbered`` 1.1.0 for number words).

Agenda and agendapy share ``repeatInterval`` strings in one collection, so both must read a stored string
to the same number of milliseconds; no Python library reproduces that reading, which is why it is
hand-written here, quirks included: case-sensitive, the letters "and" are dropped anywhere (so
"thousand" reads as "thous"), words before a unit that are not number words count as zero ("an hour" is
0 ms), "milliseconds" is read as "milli" + "seconds" (so "500 milliseconds" is 500 s), trailing text
without a unit is ignored, month = 30 days, year = 365 days.
"""

from __future__ import annotations

import math
import re
from typing import Final

from .text import js_number_str, js_parse_float, js_to_number, pow10

__all__ = [
    "DAY",
    "HOUR",
    "MINUTE",
    "MONTH",
    "NUMBER_NAMES",
    "SECOND",
    "TENS_NAMES",
    "YEAR",
    "node_human_interval",
]

#: Unit lengths in milliseconds.
SECOND: Final = 1000.0
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
# human-interval's month and year lengths; the Python API uses the same so both sides agree.
MONTH: Final = 30 * DAY
YEAR: Final = 365 * DAY

_NODE_UNITS: Final = {
    "second": SECOND,
    "minute": MINUTE,
    "hour": HOUR,
    "day": DAY,
    "week": 7 * DAY,
    "month": MONTH,
    "year": YEAR,
}
_NODE_NOISE: Final = re.compile(r"(?:[^a-z0-9.\-]|and)+")
_NODE_UNIT: Final = re.compile(r"(second|minute|hour|day|week|month|year)s?")
_NODE_WORD_SPLIT: Final = re.compile(r"[^A-Za-z0-9_]+")

NUMBER_NAMES: Final = [
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
TENS_NAMES: Final = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
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
    words.update({name: float(value) for value, name in enumerate(NUMBER_NAMES)})
    words.update({name: float(20 + 10 * index) for index, name in enumerate(TENS_NAMES)})
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
            number = js_parse_float(quantity)
            if math.isnan(number):
                number = _numbered_parse(quantity)
        if math.isnan(result):
            result = 0.0
        result += number * _NODE_UNITS[match.group(1)]
        rest = rest[match.end() :]
    return result


def _interval_of(value: float | str) -> int | str:
    """numbered's ``intervals()``: digits after the first one, as a string for exponent notation."""
    text = "." if isinstance(value, str) else js_number_str(value)
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
            decimals = zeros + len(js_number_str(memo))
            zeros, largest, largest_interval = 0, 0.0, 0
            memo *= pow10(-decimals)
        elif token == 0:
            zeros += 1
        elif memo >= 1 and type(interval) is type(largest_interval) and interval == largest_interval:
            memo = js_to_number(js_number_str(token) + "0" * zeros + js_number_str(memo))
            zeros = 0
        else:
            largest, largest_interval = token, interval
            memo = (memo + token) * pow10(zeros)
    return modifier * (memo + _total_stack(stack, largest))

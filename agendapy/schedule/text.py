"""Bounded input text, and strings read as JavaScript reads them (``trim()``, ``Number()``, ``String()``).

Node's Agenda reads stored strings with JavaScript's rules; the readers of this package use these
helpers to read them the same way. Every string is bounded before it is parsed.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Final

__all__ = [
    "JS_SPACE",
    "MAX_DATE_LENGTH",
    "MAX_TEXT_LENGTH",
    "clip",
    "js_number_str",
    "js_parse_float",
    "js_to_number",
    "js_trim",
    "pow10",
]

#: Longest repeat interval or cron string read (cron-parser's own limit); longer input is refused.
MAX_TEXT_LENGTH: Final = 1024
#: Longest date, duration or time-of-day string read; longer input is refused before any parsing.
MAX_DATE_LENGTH: Final = 256
# Every pattern in this package runs in time linear in its input (no nested or overlapping
# quantifiers), and inputs are bounded by the limits above, so no string can stall the event loop.

# JavaScript's WhiteSpace and LineTerminator code points (String.prototype.trim, Number()).
JS_SPACE: Final = (
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
    return text.strip(JS_SPACE)


def js_to_number(text: str) -> float:
    """Return what JavaScript's ``Number(text)`` gives for a string (NaN when it is not a number)."""
    stripped = text.strip(JS_SPACE)
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


def js_parse_float(text: str) -> float:
    """Return what JavaScript's ``parseFloat(text)`` gives: the longest numeric prefix, else NaN."""
    match = _JS_DECIMAL_PREFIX.match(text.lstrip(JS_SPACE))
    return float(match.group(0)) if match else math.nan


def js_number_str(value: float) -> str:
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


def pow10(power: int) -> float:
    try:
        return 10.0**power
    except OverflowError:  # JavaScript's Math.pow gives Infinity
        return math.inf


def clip(text: str) -> str:
    """``text`` cut short for an error message (an oversized input is named, not echoed whole)."""
    return text if len(text) <= 60 else f"{text[:60]}... ({len(text)} characters)"

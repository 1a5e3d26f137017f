"""Text for a terminal: control characters from the database shown as escapes, never acted on."""

from __future__ import annotations

import re

__all__ = ["JSON_UNSAFE", "json_printable", "printable"]

#: What a terminal may act on: C0 controls but tab and newline (ESC starts escape sequences), DEL, C1
#: controls (U+009B is a one-character CSI), and the bidirectional overrides that reorder what is shown.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: The same, for text inside a JSON document: json.dumps escapes C0 itself but lets DEL, C1 and bidi through.
JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character a terminal would act on shown as an escape (``\\x1b``)."""
    return _CONTROL.sub(_escaped, text)


def json_printable(document: str) -> str:
    """A JSON document with the characters :func:`json.dumps` leaves raw (``ensure_ascii=False``) but a
    terminal acts on written as ``\\uXXXX``: they can only stand inside strings, so it is the same JSON."""
    return JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", document)

"""When to run: a datetime, "now", an ISO-8601 date, "in 20 minutes", "2 hours ago", "tomorrow at noon".

:func:`parse_when` validates and raises :class:`~agendapy.errors.InvalidDate` naming the field; the
readers below it return ``None`` for what they cannot read. Every string is bounded
(:data:`~agendapy.schedule.text.MAX_DATE_LENGTH`) before it is read.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo

from ..errors import InvalidDate, InvalidInterval
from .durations import to_timedelta
from .text import MAX_DATE_LENGTH, clip, js_to_number
from .timezones import to_utc, utcnow, zone_or_utc

__all__ = ["parse_when", "read_iso_datetime", "read_natural_date", "read_relative"]


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
    if isinstance(value, str) and len(value) > MAX_DATE_LENGTH:
        raise InvalidDate(field, clip(value), f"longer than {MAX_DATE_LENGTH} characters")
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
    iso = read_iso_datetime(text, zone)
    if iso is not None:
        return iso
    relative = read_relative(text)
    if relative is not None:
        if math.isfinite(js_to_number(relative[0])):
            return None  # "in 5": five what? (dateparser would guess May)
        try:
            delta = to_timedelta(relative[0], field="when", allow_zero=True)
            return now + delta * relative[1]
        except (InvalidInterval, OverflowError):
            pass  # not a duration: let the natural-language reader try
    return read_natural_date(text, now=now, timezone_=zone)


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

    zone = zone_or_utc(timezone_)
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

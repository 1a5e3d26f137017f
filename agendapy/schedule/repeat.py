"""Repeat specs: what ``every()`` / ``repeat_every()`` are given, and what a stored ``repeatInterval`` means.

Two readers exist on purpose:

* :func:`parse_interval` reads the Python API's input (bare numbers are seconds, "10ms" and "an hour"
  work) and decides what to store: a cron or human string only when Node's Agenda 6 reads it the same
  way, otherwise whole milliseconds, which Node reads as milliseconds.
* :func:`interval_from_document` reads a stored ``repeatInterval`` exactly as Agenda 6.2.6 does
  (numbers and numeric strings are milliseconds, human strings as human-interval 2.0.1 reads them), so
  Node and Python workers sharing one collection compute the same next run.

Where Agenda would loop forever (an interval of zero or less ms) agendapy raises
:class:`~agendapy.errors.InvalidInterval` instead; every deliberate difference is listed in
:mod:`agendapy.schedule.divergences`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from ..errors import InvalidInterval
from .cron import CronError, cron_spec, is_cron
from .durations import to_timedelta, whole_ms
from .human_interval import node_human_interval
from .text import MAX_TEXT_LENGTH, clip, js_to_number, js_trim

__all__ = ["RepeatSpec", "document_error", "interval_from_document", "parse_interval"]

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


@dataclass(frozen=True)
class RepeatSpec:
    """How a job repeats: either a cron expression or a fixed length (a ``repeatInterval``, read).

    Attributes:
        cron: a 5-field cron expression, or 6 fields with seconds first (as Node's cron-parser).
        every: a fixed length, a whole number of milliseconds.
        stored: the ``repeatInterval`` to store: a cron or human string Node reads the same way, or
            whole milliseconds.
    """

    cron: str | None
    every: timedelta | None
    stored: str | int


def parse_interval(
    value: str | int | float | timedelta | Mapping[str, float], *, field: str = "interval"
) -> RepeatSpec:
    """Read a repeat interval given to the Python API (cron, alias, human/ISO string, seconds, ...).

    As in Agenda, a string that is a valid cron expression is cron; any other string must be a
    duration. Numbers are seconds. The returned ``stored`` value reads back identically in Node.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _CRON_ALIASES:
            return _alias_interval(text.lower(), field)
        if len(text) > MAX_TEXT_LENGTH:
            raise InvalidInterval(field, clip(text), f"longer than {MAX_TEXT_LENGTH} characters")
        if is_cron(text):
            return _cron_interval(text, text, field)
        if _looks_like_cron(text):
            try:
                cron_spec(text)
            except CronError as error:
                raise InvalidInterval(field, value, f"not a valid cron expression: {error}") from None
            raise InvalidInterval(
                field, value, "not a valid cron expression (5 fields, or 6 with seconds first)"
            )
        every = _interval_length(to_timedelta(value, field=field), value, field)
        return RepeatSpec(
            cron=None, every=every, stored=text if _node_agrees(text, every) else whole_ms(every)
        )
    every = _interval_length(to_timedelta(value, field=field), value, field)
    return RepeatSpec(cron=None, every=every, stored=whole_ms(every))


def _looks_like_cron(text: str) -> bool:
    """Tell whether ``text`` is shaped like cron (so a "not a duration" message would mislead)."""
    fields = text.split()
    cron_chars = set("0123456789*/,?#-lwh")
    return len(fields) in (5, 6) and all(
        set(_CRON_NAMES.sub("", field.lower())) <= cron_chars for field in fields
    )


def _node_agrees(text: str, every: timedelta) -> bool:
    """Tell whether Node's human-interval reads ``text`` as ``every`` too (then the string can be stored)."""
    node_ms = node_human_interval(text)
    return (
        math.isfinite(node_ms)
        and abs(node_ms) < 1e15
        and whole_ms(timedelta(milliseconds=node_ms)) == whole_ms(every)
    )


def _interval_length(duration: timedelta, value: object, field: str) -> timedelta:
    whole = whole_ms(duration)
    if whole < 1:
        raise InvalidInterval(field, value, "a repeat interval must be at least 1 millisecond")
    return timedelta(milliseconds=whole)


def _alias_interval(alias: str, field: str) -> RepeatSpec:
    # Node reads "@hourly" etc. as a human interval ("hour"), so store the expression those aliases mean.
    expression = _CRON_ALIASES[alias]
    stored = alias if math.isnan(node_human_interval(alias)) else expression
    return _cron_interval(expression, stored, field)


def _cron_interval(expression: str, stored: str, field: str) -> RepeatSpec:
    if not math.isnan(node_human_interval(stored)):
        raise InvalidInterval(
            field, stored, "Node's Agenda would read this cron expression as a human interval"
        )
    try:
        spec = cron_spec(expression)
    except CronError as error:
        raise InvalidInterval(field, stored, f"not a valid cron expression: {error}") from None
    fields = expression.split()
    # Keep the expression as written when it has 5 or 6 fields; fewer fields get cron-parser's defaults.
    return RepeatSpec(cron=" ".join(fields) if len(fields) >= 5 else spec.text, every=None, stored=stored)


def interval_from_document(value: str | int | float) -> RepeatSpec:
    """Read a stored ``repeatInterval`` as Agenda 6.2.6 does.

    Numbers and purely numeric strings are milliseconds; other strings are human intervals when
    human-interval reads them (that wins, as in Agenda), else cron expressions as cron-parser 5 reads
    them (1 to 6 fields, an exact ``@daily``-style name).
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise document_error(value, "expected a string or a number")
    if isinstance(value, int | float):
        return _document_ms(value, value)
    if len(value) > MAX_TEXT_LENGTH:
        raise document_error(clip(value), f"longer than {MAX_TEXT_LENGTH} characters")
    numeric = js_to_number(value) if js_trim(value) else math.nan
    if math.isfinite(numeric):
        return _document_ms(numeric, value)
    node_ms = node_human_interval(value)
    if not math.isnan(node_ms):
        return _document_ms(node_ms, value)
    expression = _CRON_ALIASES.get(value, value)
    try:
        spec = cron_spec(expression)
    except CronError as error:
        detail = f"not a cron expression ({error}) and no readable human interval"
        raise document_error(value, detail) from None
    fields = expression.split()
    return RepeatSpec(cron=" ".join(fields) if len(fields) >= 5 else spec.text, every=None, stored=value)


def _document_ms(ms: float, value: str | int | float) -> RepeatSpec:
    try:
        whole = whole_ms(timedelta(milliseconds=ms))
    except (OverflowError, ValueError):  # NaN, infinite or beyond timedelta's range
        raise document_error(value, f"the interval is {ms:g} ms, not a usable length") from None
    if whole < 1:
        raise document_error(value, f"the interval is {ms:g} ms; it must be at least 1 ms")
    stored: str | int = value if isinstance(value, str | int) else whole
    return RepeatSpec(cron=None, every=timedelta(milliseconds=whole), stored=stored)


def document_error(value: object, detail: str) -> InvalidInterval:
    """The error for an unreadable stored ``repeatInterval``; its reason reads like Agenda's failReason."""
    reason = f"failed to calculate nextRunAt due to invalid repeat interval ({value}): {detail}"
    return InvalidInterval("repeatInterval", value, reason)

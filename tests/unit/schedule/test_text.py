"""Bounded input, linear time: no string can stall the event loop, however it is shaped."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from agendapy.errors import InvalidInput
from agendapy.schedule.cron_times import next_cron
from agendapy.schedule.dates import parse_when, read_iso_datetime, read_relative
from agendapy.schedule.durations import read_duration_ms, read_iso_duration_ms, to_timedelta
from agendapy.schedule.human_interval import node_human_interval
from agendapy.schedule.repeat import interval_from_document, parse_interval
from agendapy.schedule.repeat_at import REPEAT_AT_FAILURE, next_repeat_at, read_time_of_day
from agendapy.schedule.text import MAX_DATE_LENGTH, MAX_TEXT_LENGTH, js_to_number

NOW = datetime(2026, 4, 1, 13, 45, 12, 345000, tzinfo=UTC)


PARSERS: dict[str, Callable[[str], object]] = {
    "date": lambda text: parse_when(text, now=NOW),
    "duration": lambda text: to_timedelta(text, field="d"),
    "interval": parse_interval,
    "stored interval": interval_from_document,
    "cron": lambda text: next_cron(text, NOW, None),
    "repeat_at": lambda text: next_repeat_at(text, last_run_at=None, now=NOW, timezone=None),
    "human-interval": node_human_interval,
    "time of day": read_time_of_day,
}
LIMITS = {"date": MAX_DATE_LENGTH, "duration": MAX_DATE_LENGTH,
          "repeat_at": MAX_DATE_LENGTH, "time of day": MAX_DATE_LENGTH}  # fmt: skip


def _adversarial(size: int) -> list[str]:
    """Inputs of ``size`` characters shaped to make backtracking patterns blow up."""
    body = max(size - 2, 1)
    return [
        "a" + " " * body + "x",  # the issue's case: a long run of spaces before "from now" / "ago"
        " " * body + "ago",
        "1" * body + "x",  # digits that a "[0-9]+\\.?[0-9]*" pattern backtracks over
        "in " + " " * (body - 3),
        ("5 minutes and " * size)[:size],
        ("0 " * size)[:size],
        ("1," * size)[:size],
        "at " + "9" * (body - 3),
        ("from now " * size)[:size],
    ]


def _worst_time(parser: Callable[[str], object], inputs: list[str]) -> float:
    """The slowest input's time, each the best of 3 calls (a busy machine only ever adds time)."""
    worst = 0.0
    for text in inputs:
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            with contextlib.suppress(InvalidInput):  # the documented error
                parser(text)
            best = min(best, time.perf_counter() - started)
        worst = max(worst, best)
    return worst


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_text_parsers_have_no_blowup_up_to_their_limit(name: str) -> None:
    parser = PARSERS[name]
    limit = LIMITS.get(name, MAX_TEXT_LENGTH)
    _worst_time(parser, ["warm up"])  # first-call imports (dateparser) are not the parser's cost
    small, large = _worst_time(parser, _adversarial(limit // 16)), _worst_time(parser, _adversarial(limit))
    # 16 times the input: linear code takes ~16 times as long, quadratic ~256 times. The absolute
    # floor keeps a loaded machine's noise on tiny timings from failing the test.
    assert large < max(64 * small, 0.25), (name, small, large)


@pytest.mark.parametrize("name", ["date", "duration", "repeat_at", "interval", "stored interval"])
def test_input_over_the_limit_is_refused_at_once_with_a_clear_error(name: str) -> None:
    text = "a" + " " * 1_000_000 + "x"
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as caught:
        PARSERS[name](text)
    assert time.perf_counter() - started < 1.0  # a guard against blowups, far above the real cost
    message = str(caught.value)
    assert len(message) < 400
    assert "characters" in message or caught.value.reason == REPEAT_AT_FAILURE


def test_the_issue_reproduction_is_refused_quickly() -> None:
    # POST /api/jobs {"schedule": "a" + " " * 16000 + "x"} took 4.2 s before the bound.
    with pytest.raises(InvalidInput, match="longer than 256 characters"):
        parse_when("a" + " " * 16000 + "x", now=NOW)


READERS: dict[str, Callable[[str], object]] = {
    "read_relative": read_relative,
    "node_human_interval": node_human_interval,
    "read_duration_ms": read_duration_ms,
    "read_iso_duration_ms": read_iso_duration_ms,
    "js_to_number": js_to_number,
    "read_iso_datetime": lambda text: read_iso_datetime(text, None),
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_the_readers_behind_the_bounds_run_in_linear_time(name: str) -> None:
    # The readers themselves take any length, so their scaling shows beyond the API's bounds: 16 times
    # the input must not cost ~256 times as long (the old "(.+?)\s+ago" pattern took 5 s at 16k
    # characters, Number()'s "[0-9]+\.?[0-9]*\Z" 6.6 s).
    reader = READERS[name]
    small, large = _worst_time(reader, _adversarial(1000)), _worst_time(reader, _adversarial(16_000))
    assert large < max(64 * small, 0.5), (name, small, large)

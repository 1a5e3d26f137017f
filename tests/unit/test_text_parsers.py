"""Text parsers: cron read as Node's cron-parser 5, repeatAt as Agenda reads it, bounded linear-time input.

The expected cron and repeatAt results were taken from running cron-parser 5.10.6 and date.js 0.3.3
(Agenda 6.2.6's dependencies) on the same strings; tests/interop/test_next_run_oracle.py checks the
whole next-run computation against Node itself.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from agendapy import dates
from agendapy.cron import parse_cron
from agendapy.divergences import DIVERGENCES
from agendapy.errors import InvalidInput
from agendapy.schedule import (
    REPEAT_AT_FAILURE,
    compute_next_run_at,
    interval_from_document,
    is_cron,
    next_cron,
    next_repeat_at,
    parse_interval,
    parse_when,
    previous_cron,
    to_timedelta,
)

NOW = datetime(2026, 4, 1, 13, 45, 12, 345000, tzinfo=UTC)
MS = timedelta(milliseconds=1)
DOCS = Path(__file__).parents[2] / "docs" / "migrate" / "from-agenda.md"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 0 * * 5L", utc(2026, 4, 24)),  # last Friday of April 2026
        ("0 0 * * 7L", utc(2026, 4, 26)),
        ("0 0 L * *", utc(2026, 4, 30)),
        ("0 0 * * 5#2", utc(2026, 4, 10)),
        ("0 0 L * 5", utc(2026, 4, 3)),  # day of month and day of week both restricted: either
        ("0 0 * * 5/2", utc(2026, 4, 3)),
        ("0 0 * * 1-7/2", utc(2026, 4, 3)),
        ("0 0 * jan-mar mon", utc(2027, 1, 4)),
        ("*/90 * * * *", utc(2026, 4, 1, 1)),
        ("0 0 29 2 1", utc(2027, 2, 1)),
        ("0 12 * * 1#5", utc(2026, 6, 29, 12)),
    ],
)
def test_cron_reads_like_cron_parser(expression: str, expected: datetime) -> None:
    assert next_cron(expression, utc(2026, 4, 1), None) == expected


@pytest.mark.parametrize(
    "expression",
    ["0 0 * * L5", "0 0 * * L", "0 0 5L * *", "0 0 L-2 * *", "0 0 15W * *", "0 0 LW * *", "0 0 * * 5#6",
     "0 0 * * 1#1,2", "0 0 * * 0,7", "0 0 30 2 *", "0 0 31 4 *", "0 0 * * H", "1,,2 * * * *",
     "0 0 * * */0", "0 0 * foo *", "0 0 * * 9L", "0 0 * * 5L-6", "0 0 5-1 * *"],
)  # fmt: skip
def test_cron_refuses_what_cron_parser_refuses(expression: str) -> None:
    assert not is_cron(expression)
    with pytest.raises(InvalidInput) as caught:
        interval_from_document(expression)
    reason = caught.value.reason
    assert reason.startswith(f"failed to calculate nextRunAt due to invalid repeat interval ({expression}): ")
    assert "2000" not in reason  # no probe date or other internals


def test_stored_cron_with_fewer_fields_reads_like_node() -> None:
    # cron-parser fills missing leading fields with "0" (seconds) and "*": "* * *" is every minute.
    assert interval_from_document("* * *").cron == "0 * * * * *"
    result = compute_next_run_at(
        repeat_interval="* * *", repeat_timezone=None, repeat_at=None, last_run_at=None, now=NOW
    )
    assert result == utc(2026, 4, 1, 13, 46)


def test_last_weekday_interval_from_the_python_api() -> None:
    assert parse_interval("0 0 * * 5L").cron == "0 0 * * 5L"
    with pytest.raises(InvalidInput, match="'L5'"):
        parse_interval("0 0 * * L5")


def test_never_firing_cron_names_the_input_not_a_probe_date() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_interval("0 0 30 2 *")
    assert "'0 0 30 2 *'" in str(caught.value)
    assert "2000" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9.30", utc(2026, 4, 2, 9, 30)),
        ("at 5", utc(2026, 4, 2, 5)),
        ("at5", utc(2026, 4, 2, 5)),
        ("AT 5", utc(2026, 4, 2, 5)),
        ("0930", utc(2026, 4, 2, 9, 30)),
        ("930", utc(2026, 4, 2, 9, 30)),
        ("15:30", utc(2026, 4, 1, 15, 30)),
        ("15:30:20", utc(2026, 4, 1, 15, 30, 20)),
        ("3:30pm", utc(2026, 4, 1, 15, 30)),
        ("9.30 pm", utc(2026, 4, 1, 21, 30)),
        ("0930pm", utc(2026, 4, 1, 21, 30)),
        ("12am", utc(2026, 4, 2)),
        ("12pm", utc(2026, 4, 2, 12)),
        ("noon", utc(2026, 4, 2, 12)),
        ("evening", utc(2026, 4, 1, 17)),
        ("  9:30  ", utc(2026, 4, 2, 9, 30)),
    ],
)
def test_repeat_at_reads_the_times_agenda_reads(text: str, expected: datetime) -> None:
    assert next_repeat_at(text, last_run_at=None, now=NOW, timezone=None) == expected


@pytest.mark.parametrize(
    "text", ["5", "9.30am", "9.3", "24:00", "5:61", "13pm", "9:30 p.m.", "tomorrow", "9:30am!", "foo"]
)
def test_repeat_at_fails_with_agendas_exact_reason(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        compute_next_run_at(
            repeat_interval=None, repeat_timezone=None, repeat_at=text, last_run_at=None, now=NOW
        )
    assert (
        caught.value.reason == REPEAT_AT_FAILURE == "failed to calculate repeatAt time due to invalid format"
    )


def test_docs_table_lists_exactly_the_divergences_in_the_code() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Next-run computation: where agendapy differs from Node on purpose", 1)[1]
    section = section.split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE)
    assert documented == [divergence.id for divergence in DIVERGENCES]


# ---------------------------------------------------------------------------------------------------
# Bounded input, linear time
# ---------------------------------------------------------------------------------------------------

PARSERS: dict[str, Callable[[str], object]] = {
    "date": lambda text: parse_when(text, now=NOW),
    "duration": lambda text: to_timedelta(text, field="d"),
    "interval": parse_interval,
    "stored interval": interval_from_document,
    "cron": lambda text: next_cron(text, NOW, None),
    "repeat_at": lambda text: next_repeat_at(text, last_run_at=None, now=NOW, timezone=None),
    "human-interval": dates.node_human_interval,
    "time of day": dates.read_time_of_day,
}
LIMITS = {"date": dates.MAX_DATE_LENGTH, "duration": dates.MAX_DATE_LENGTH,
          "repeat_at": dates.MAX_DATE_LENGTH, "time of day": dates.MAX_DATE_LENGTH}  # fmt: skip


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
    limit = LIMITS.get(name, dates.MAX_TEXT_LENGTH)
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
    "read_relative": dates.read_relative,
    "node_human_interval": dates.node_human_interval,
    "read_duration_ms": dates.read_duration_ms,
    "read_iso_duration_ms": dates.read_iso_duration_ms,
    "js_to_number": dates.js_to_number,
    "read_iso_datetime": lambda text: dates.read_iso_datetime(text, None),
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_the_readers_behind_the_bounds_run_in_linear_time(name: str) -> None:
    # The readers themselves take any length, so their scaling shows beyond the API's bounds: 16 times
    # the input must not cost ~256 times as long (the old "(.+?)\s+ago" pattern took 5 s at 16k
    # characters, Number()'s "[0-9]+\.?[0-9]*\Z" 6.6 s).
    reader = READERS[name]
    small, large = _worst_time(reader, _adversarial(1000)), _worst_time(reader, _adversarial(16_000))
    assert large < max(64 * small, 0.5), (name, small, large)


@pytest.mark.parametrize("zone_name", ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize(
    "expression", ["0 * * * *", "*/15 * * * *", "30 2 * * *", "0 9 * * 1-5", "0 0 1 * *", "*/20 * * * * *"]
)
def test_previous_cron_agrees_with_croniter_where_both_read_the_syntax(
    expression: str, zone_name: str
) -> None:
    # intervals.py used croniter's get_prev; previous_cron replaces it so that "5L" works there too.
    # Away from DST changes both agree; around them previous_cron sees the instants next_cron uses
    # (checked by the next test), where croniter's differ (it shifts a skipped time differently and
    # picks the second of two repeated times).
    zone = ZoneInfo(zone_name)
    seconds = len(expression.split()) == 6
    for start in (utc(2026, 5, 1), utc(2026, 7, 31, 23, 59, 59), utc(2026, 12, 5)):
        at = start
        for _ in range(20):
            walker = croniter(expression, (at + MS).astimezone(zone), second_at_beginning=seconds)
            expected = walker.get_prev(datetime).astimezone(UTC)
            assert previous_cron(expression, at, zone) == expected, (expression, zone_name, at)
            at = expected - timedelta(minutes=7)


@pytest.mark.parametrize("zone_name", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("expression", ["0 * * * *", "30 2 * * *", "0 2 * * *", "*/20 * * * *", "0 0 * * 5L"])
def test_previous_cron_and_next_cron_see_the_same_ticks(expression: str, zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    for start in (utc(2026, 3, 8, 5), utc(2026, 3, 28, 22), utc(2026, 10, 3, 13), utc(2026, 10, 24, 22)):
        tick = next_cron(expression, start, zone)
        for _ in range(40):
            following = next_cron(expression, tick, zone)
            assert previous_cron(expression, following, zone) == following
            assert previous_cron(expression, following - MS, zone) == tick, (expression, zone_name, tick)
            tick = following


def test_previous_cron_reads_cron_parsers_last_weekday() -> None:
    assert previous_cron("0 0 * * 5L", utc(2026, 5, 1), None) == utc(2026, 4, 24)
    assert previous_cron("0 0 * * 5L", utc(2026, 4, 24), None) == utc(2026, 4, 24)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("* * *", ("0 * * * * *",)),
        ("0 0 * * 5L", ("0 0 0 * * L5",)),  # cron-parser's last Friday in croniter's spelling
        ("0 0 * * 7", ("0 0 0 * * 0",)),
        ("0 0 1 jan-mar *", ("0 0 0 1 1,2,3 *",)),
        ("3/20 0 0 * * *", ("3,23,43 0 0 * * *",)),
        ("0 0 * * 1,5L", ("0 0 0 * * 1#1,1#2,1#3,1#4,1#5,L5",)),  # croniter mixes no plain weekday with L
        ("0 0 15 * 5L", ("0 0 0 15 * *", "0 0 0 * * L5")),  # either day field: one expression each
        ("0 0 30,31 2 1", ("0 0 0 * 2 1",)),  # no February has a 30th: only the Mondays are left
    ],
)
def test_cron_parsers_syntax_is_rewritten_for_croniter(expression: str, expected: tuple[str, ...]) -> None:
    assert parse_cron(expression).croniter_expressions == expected


@pytest.mark.parametrize(
    ("expression", "start", "following", "preceding"),
    [
        ("0 0 15 * 5L", utc(2026, 5, 1), [(5, 15), (5, 29), (6, 15), (6, 26), (7, 15), (7, 31)],
         [(4, 24), (4, 15), (3, 27)]),
        ("0 0 * * 1,5L", utc(2026, 5, 1), [(5, 4), (5, 11), (5, 18), (5, 25), (5, 29), (6, 1)],
         [(4, 27), (4, 24), (4, 20)]),
        ("0 0 * * *#2", utc(2026, 5, 1), [(5, 8), (5, 9), (5, 10), (5, 11), (5, 12), (5, 13)],
         [(4, 14), (4, 13), (4, 12)]),
        ("0 0 1,L * 5#2", utc(2026, 5, 1), [(5, 8), (5, 31), (6, 1), (6, 12), (6, 30), (7, 1)],
         [(4, 30), (4, 10), (4, 1)]),
        ("0 0 * * 1L,5L", utc(2026, 5, 1), [(5, 25), (5, 29), (6, 26), (6, 29), (7, 27), (7, 31)],
         [(4, 27), (4, 24), (3, 30)]),
        ("0 0 31 2 1", utc(2026, 5, 16), [(2, 1), (2, 8), (2, 15), (2, 22), (2, 7), (2, 14)],
         [(2, 23), (2, 16), (2, 9)]),
    ],
)  # fmt: skip
def test_cron_day_rules_step_like_cron_parser(
    expression: str, start: datetime, following: list[tuple[int, int]], preceding: list[tuple[int, int]]
) -> None:
    # Occurrences taken from cron-parser 5.10.6 (next() and prev() from `start`, in UTC); the dates
    # after the first wrap of the month belong to the following (or preceding) year.
    def dates_of(ticks: list[datetime]) -> list[tuple[int, int]]:
        return [(tick.month, tick.day) for tick in ticks]

    ticks, at = [], start
    for _ in following:
        at = next_cron(expression, at, None)
        ticks.append(at)
    assert dates_of(ticks) == following
    assert all(tick.time() == datetime.min.time() for tick in ticks)
    ticks, at = [], start
    for _ in preceding:
        found = previous_cron(expression, at - MS, None)
        assert found is not None
        ticks.append(at := found)
    assert dates_of(ticks) == preceding


def test_cron_finds_an_occurrence_decades_away_as_cron_parser_does() -> None:
    # A fifth Monday in February needs a leap year whose February starts on a Monday: after 2072 the
    # next is in 2112 (cron-parser finds it too). The first search gave up after 30 years.
    assert next_cron("15 ? ? FEB 1#5", utc(2073, 7, 25, 15, 22, 49), None) == utc(2112, 2, 29, 0, 15)
    assert previous_cron("15 ? ? FEB 1#5", utc(2111, 1, 1), None) == utc(2072, 2, 29, 23, 15)

"""Cron expressions read as Node's cron-parser 5.10 reads them (results taken from cron-parser 5.10.6)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from schedule_support import utc

from agendapy.errors import InvalidInput
from agendapy.schedule.cron import is_cron, parse_cron
from agendapy.schedule.cron_times import next_cron
from agendapy.schedule.next_run import compute_next_run_at
from agendapy.schedule.repeat import interval_from_document, parse_interval

NOW = datetime(2026, 4, 1, 13, 45, 12, 345000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("* * * * *", True),
        ("0 6 * * *", True),
        ("*/15 0-6 1,15 jan-jun mon-fri", True),
        ("0 0 L * *", True),
        ("0 0 * * 1#2", True),
        ("0 0 ? * *", True),
        ("*/10 * * * * *", True),
        ("0 0 * * 7", True),
        ("* * * *", False),
        ("* * * * * * *", False),
        ("60 * * * *", False),
        ("0 24 * * *", False),
        ("0 0 * * 8", False),
        ("@daily", False),
        ("H * * * *", False),
        ("R * * * *", False),
        ("0 0 15W * *", False),
        ("asd", False),
        ("", False),
        ("٣ * * * *", False),
    ],
)
def test_is_cron(expression: str, expected: bool) -> None:
    assert is_cron(expression) is expected


def test_is_cron_refuses_non_strings() -> None:
    assert is_cron(5) is False  # type: ignore[arg-type]


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

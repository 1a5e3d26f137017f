"""repeatAt: the times of day Agenda reads (date.js 0.3.3 on the same strings) and their next occurrence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from schedule_support import NEW_YORK, NOW, TOKYO, utc

from agendapy.errors import InvalidDate, InvalidInput
from agendapy.schedule.next_run import compute_next_run_at
from agendapy.schedule.repeat_at import REPEAT_AT_FAILURE, next_repeat_at

NOW_2026 = datetime(2026, 4, 1, 13, 45, 12, 345000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("repeat_at", "zone", "expected"),
    [
        ("3:30pm", None, utc(2024, 3, 10, 15, 30)),
        ("3:30 pm", None, utc(2024, 3, 10, 15, 30)),
        ("15:30", None, utc(2024, 3, 10, 15, 30)),
        ("11:59pm", None, utc(2024, 3, 10, 23, 59)),
        ("at 9am", None, utc(2024, 3, 11, 9)),  # already past today
        ("noon", None, utc(2024, 3, 11, 12)),
        ("midnight", None, utc(2024, 3, 11, 0)),
        ("12am", None, utc(2024, 3, 11, 0)),
        ("15:30:20", None, utc(2024, 3, 10, 15, 30, 20)),
        ("3:30pm", NEW_YORK, utc(2024, 3, 10, 19, 30)),  # EDT since this morning
        ("3:30pm", TOKYO, utc(2024, 3, 11, 6, 30)),  # 21:34 in Tokyo: tomorrow
    ],
)
def test_next_repeat_at(repeat_at: str, zone: ZoneInfo | None, expected: datetime) -> None:
    assert next_repeat_at(repeat_at, last_run_at=None, now=NOW, timezone=zone) == expected


def test_next_repeat_at_moves_to_tomorrow_when_today_is_the_last_run_or_not_after_now() -> None:
    now = utc(2024, 3, 10, 12, 33)
    assert next_repeat_at("12:34pm", last_run_at=None, now=now, timezone=None) == utc(2024, 3, 10, 12, 34)
    assert next_repeat_at("12:34pm", last_run_at=utc(2024, 3, 10, 12, 34), now=now, timezone=None) == utc(
        2024, 3, 11, 12, 34
    )
    assert next_repeat_at("12:34pm", last_run_at=None, now=utc(2024, 3, 10, 12, 34), timezone=None) == utc(
        2024, 3, 11, 12, 34
    )


def test_next_repeat_at_in_a_dst_gap_shifts_forward() -> None:
    assert next_repeat_at("2:30am", last_run_at=None, now=utc(2024, 3, 10, 5), timezone=NEW_YORK) == utc(
        2024, 3, 10, 7, 30
    )


@pytest.mark.parametrize("repeat_at", ["foo", "", "25:00", "13pm", "15", "3:60pm", None])
def test_next_repeat_at_rejects_with_agendas_reason(repeat_at: Any) -> None:
    with pytest.raises(InvalidDate) as caught:
        next_repeat_at(repeat_at, last_run_at=None, now=NOW, timezone=None)
    assert caught.value.field == "repeatAt"
    assert caught.value.reason == "failed to calculate repeatAt time due to invalid format"


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
    assert next_repeat_at(text, last_run_at=None, now=NOW_2026, timezone=None) == expected


@pytest.mark.parametrize(
    "text", ["5", "9.30am", "9.3", "24:00", "5:61", "13pm", "9:30 p.m.", "tomorrow", "9:30am!", "foo"]
)
def test_repeat_at_fails_with_agendas_exact_reason(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        compute_next_run_at(
            repeat_interval=None, repeat_timezone=None, repeat_at=text, last_run_at=None, now=NOW_2026
        )
    assert (
        caught.value.reason == REPEAT_AT_FAILURE == "failed to calculate repeatAt time due to invalid format"
    )

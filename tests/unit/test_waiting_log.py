"""The one WARNING of a pipeline stuck on a requirement (``dependencies.log_waiting``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from agendapy.dependencies import log_waiting
from agendapy.schedule.ticks import RunInterval

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
#: A one-minute interval: a wait is stuck from one minute past its end (09:02).
INTERVAL = RunInterval(START, START + timedelta(minutes=1))
STUCK_AT = START + timedelta(minutes=2)
EVERY = timedelta(seconds=5)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _check(due: datetime, now: datetime) -> None:
    log_waiting(
        "report",
        "id-1",
        INTERVAL,
        "'load' has not completed",
        changed=False,
        now=now,
        due=due,
        check_every=EVERY,
    )


def test_the_first_check_past_the_moment_warns_even_when_it_comes_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="agendapy")
    # The previous check came 2 s before the moment and set this one 5 s later; a busy worker ran it
    # 20 s late. It is still the first check past the moment: it warns.
    _check(due=STUCK_AT + timedelta(seconds=3), now=STUCK_AT + timedelta(seconds=23))
    assert len(_warnings(caplog)) == 1


def test_later_checks_do_not_warn_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agendapy")
    _check(due=STUCK_AT + timedelta(seconds=8), now=STUCK_AT + timedelta(seconds=8))  # previous at +3 s
    _check(due=STUCK_AT + timedelta(seconds=13), now=STUCK_AT + timedelta(seconds=40))  # late, not first
    assert _warnings(caplog) == []


def test_checks_before_the_moment_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agendapy")
    _check(due=STUCK_AT - timedelta(seconds=1), now=STUCK_AT - timedelta(seconds=1))
    assert _warnings(caplog) == []


def test_a_first_wait_long_after_the_moment_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agendapy")
    # Due at the interval's end, run an hour later (the worker was down): the first check, and past it.
    _check(due=INTERVAL.ended_at, now=INTERVAL.ended_at + timedelta(hours=1))
    assert len(_warnings(caplog)) == 1

"""Retries: agendapy's own tests of backoff (Agenda's retry, backoff and removeOnComplete suites are
ported in tests/agenda/)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agendapy import Agenda, Job, backoff

from support import EventLog


def utcnow() -> datetime:
    return datetime.now(UTC)


def flaky(failures: int, attempts: list[int], message: str = "flaky") -> Any:
    """A handler that fails ``failures`` times, then succeeds; records each attempt."""

    async def handler(job: Job) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) <= failures:
            raise RuntimeError(message)

    return handler


def delays(strategy: Any, job: Job, attempts: int, error: BaseException | None = None) -> list[float | None]:
    error = error or RuntimeError("boom")
    return [strategy(attempt, error, job) for attempt in range(1, attempts + 1)]


# -- backoff strategies (pure) ---------------------------------------------------------------------


async def test_default_max_retries_is_three(agenda: Agenda) -> None:
    job = agenda.create("b")
    assert delays(backoff.constant(delay=1), job, 4) == [1, 1, 1, None]


# -- backoff while processing ----------------------------------------------------------------------


async def test_event_order_with_retry(agenda: Agenda) -> None:
    attempts: list[int] = []
    agenda.define("ordered", flaky(1, attempts), backoff=backoff.constant(delay=0.05))
    events = ("start", "success", "fail", "retry", "retry exhausted", "complete")
    log = EventLog(agenda, *(f"{e}:ordered" for e in events))
    await agenda.now("ordered")
    await agenda.start()
    await log.wait("success:ordered")
    await log.wait("complete:ordered", 2)
    assert log.names() == [
        "start:ordered", "fail:ordered", "retry:ordered", "complete:ordered",
        "start:ordered", "success:ordered", "complete:ordered",
    ]  # fmt: skip


async def test_documents_after_retries(agenda: Agenda, jobs_collection: Any) -> None:
    """A success after retries resets failCount; exhausted retries leave no next run; a recurring job's
    retry does not move its interval."""
    attempts: list[int] = []
    hopeless: list[int] = []
    agenda.define("retried", flaky(2, attempts), backoff=backoff.constant(delay=0.05, max_retries=5))
    agenda.define("hopeless", flaky(99, hopeless), backoff=backoff.constant(delay=0.05, max_retries=1))
    agenda.define("hourly", flaky(1, []), backoff=backoff.constant(delay=0.05))
    log = EventLog(agenda, "complete:retried", "complete:hopeless", "success:hourly")
    await agenda.now("retried")
    await agenda.now("hopeless")
    await agenda.every("1 hour", "hourly")
    await agenda.start()
    await log.wait("complete:retried", 3)
    await log.wait("complete:hopeless", 2)
    await log.wait("success:hourly")
    await agenda.stop()
    retried = await jobs_collection.find_one({"name": "retried"})
    assert retried["failCount"] == 0
    assert retried["lastFinishedAt"] is not None
    exhausted = await jobs_collection.find_one({"name": "hopeless"})
    assert exhausted["failCount"] == 2
    assert exhausted["nextRunAt"] is None
    hourly = await jobs_collection.find_one({"name": "hourly"})
    assert abs(hourly["nextRunAt"] - (hourly["lastRunAt"] + timedelta(hours=1))) < timedelta(seconds=1)


async def test_backoff_must_be_callable(agenda: Agenda) -> None:
    with pytest.raises(ValueError, match="backoff"):
        agenda.define("bad backoff", lambda job: None, backoff=5)

"""Agenda 6 ``packages/agenda/test/shared/retry-test-suite.ts`` ("Retry"), test for test.

Agenda's first two tests fail through the ``done(err)`` callback; an agendapy handler fails by raising
(there is no callback, docs/migrate/from-agenda.md:140), which is what these ports do.
"""

from __future__ import annotations

from typing import Any

from agendapy import Agenda, Job

from .common import utcnow
from support import EventLog


def failing_first(failures: int, attempts: list[int]) -> Any:
    async def handler(job: Job) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) <= failures:
            raise RuntimeError(f"Attempt {len(attempts)} failed")

    return handler


def retry_via_next_run_at(error: BaseException, job: Job) -> None:
    job.next_run_at = utcnow()


async def retry_via_schedule(error: BaseException, job: Job) -> None:
    await job.schedule("now").save()


async def test_should_retry_a_job_via_attrs_next_run_at(agenda: Agenda) -> None:
    """should retry a job - via attrs.nextRunAt"""
    attempts: list[int] = []
    agenda.define("a job", failing_first(1, attempts))
    agenda.on("fail:a job", retry_via_next_run_at)
    log = EventLog(agenda, "success:a job")
    await agenda.now("a job")
    await agenda.start()
    await log.wait("success:a job")
    assert attempts == [1, 2]


async def test_should_retry_a_job_via_schedule(agenda: Agenda) -> None:
    """should retry a job - via schedule()"""
    attempts: list[int] = []
    agenda.define("a job", failing_first(1, attempts))
    agenda.on("fail:a job", retry_via_schedule)
    log = EventLog(agenda, "success:a job")
    await agenda.now("a job")
    await agenda.start()
    await log.wait("success:a job")
    assert attempts == [1, 2]


async def test_should_track_fail_count_on_retry_via_attrs_next_run_at(agenda: Agenda) -> None:
    """should track failCount on retry - via attrs.nextRunAt"""
    attempts: list[int] = []
    agenda.define("failing-job", failing_first(2, attempts))
    agenda.on("fail:failing-job", retry_via_next_run_at)
    log = EventLog(agenda, "success:failing-job")
    await agenda.now("failing-job")
    await agenda.start()
    await log.wait("success:failing-job")
    assert attempts == [1, 2, 3]


async def test_should_track_fail_count_on_retry_via_schedule(agenda: Agenda) -> None:
    """should track failCount on retry - via schedule()"""
    attempts: list[int] = []
    agenda.define("failing-job", failing_first(2, attempts))
    agenda.on("fail:failing-job", retry_via_schedule)
    log = EventLog(agenda, "success:failing-job")
    await agenda.now("failing-job")
    await agenda.start()
    await log.wait("success:failing-job")
    assert attempts == [1, 2, 3]

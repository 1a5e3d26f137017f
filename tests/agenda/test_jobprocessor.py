"""Agenda 6 ``packages/agenda/test/shared/jobprocessor-test-suite.ts`` ("JobProcessor"), test for test.

Agenda's suite builds ``new Agenda({maxConcurrency: 4, defaultConcurrency: 1, lockLimit: 15,
defaultLockLimit: 6, processEvery: 100, name: 'agendaTest'})`` for each test; ``agenda_test`` does the same.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest

from agendapy import Agenda, Job, NotRunning

from .common import cite, hold
from support import EventLog, wait_until


@pytest.fixture
async def agenda_test(make_agenda: Any) -> Agenda:
    return await make_agenda(
        name="agendaTest",
        max_concurrency=4,
        default_concurrency=1,
        lock_limit=15,
        default_lock_limit=6,
        process_every=0.1,
    )


# -- getRunningStats -------------------------------------------------------------------------------


async def test_get_running_stats_throws_an_error_when_agenda_is_not_running(agenda_test: Agenda) -> None:
    """getRunningStats: throws an error when agenda is not running"""
    with pytest.raises(NotRunning, match="agenda not running!"):
        await agenda_test.running_stats()


async def test_get_running_stats_contains_the_agenda_version(agenda_test: Agenda) -> None:
    """getRunningStats: contains the agendaVersion"""
    await agenda_test.start()
    stats = await agenda_test.running_stats()
    assert re.search(r"\d+\.\d+\.\d+", stats.version)


async def test_get_running_stats_shows_the_correct_job_status(agenda_test: Agenda) -> None:
    """getRunningStats: shows the correct job status"""

    async def handler(job: Job) -> None:
        await job.stopping()  # Agenda: delay(30000); stopping() ends it at teardown

    agenda_test.define("test", handler)
    log = EventLog(agenda_test, "start:test")
    await agenda_test.now("test")
    await agenda_test.start()
    await log.wait("start:test")
    stats = await agenda_test.running_stats()
    status = stats.job_status["test"]
    assert status["locked"] == 1
    assert status["running"] == 1
    config = status["config"]
    assert callable(config["fn"])
    assert config["concurrency"] == 1
    assert config["lock_lifetime"] == timedelta(milliseconds=600000)
    assert config["priority"] == 0
    assert config["lock_limit"] == 6


async def test_get_running_stats_shows_queue_name(agenda_test: Agenda) -> None:
    """getRunningStats: shows queueName"""
    await agenda_test.start()
    stats = await agenda_test.running_stats()
    assert isinstance(stats.queue_name, str)
    assert stats.queue_name == "agendaTest"


async def test_get_running_stats_shows_total_queue_size_db(agenda_test: Agenda) -> None:
    """getRunningStats: shows totalQueueSizeDB"""
    await agenda_test.start()
    stats = await agenda_test.running_stats()
    assert isinstance(stats.total_queue_size_db, int)
    assert stats.total_queue_size_db == 0


# -- processing ------------------------------------------------------------------------------------


async def test_ensure_new_jobs_are_always_filling_up_running_queue(agenda_test: Agenda) -> None:
    """ensure new jobs are always filling up running queue"""
    short_one_finished = asyncio.Event()

    async def long_job(job: Job) -> None:
        await asyncio.sleep(1)

    async def short_job(job: Job) -> None:
        short_one_finished.set()
        await asyncio.sleep(0.005)

    agenda_test.define("test long", long_job)
    agenda_test.define("test short", short_job)
    await agenda_test.start()
    for _ in range(100):  # queue up long ones
        await agenda_test.now("test long")
    await asyncio.sleep(1.5)  # as Agenda: the long ones hold the worker when the short ones arrive
    for _ in range(100):
        await agenda_test.now("test short")
    # Agenda waits 2 s; a generous bound here, the point is that a short job runs at all
    await asyncio.wait_for(short_one_finished.wait(), 15)


@pytest.mark.xfail(
    strict=True,
    reason=cite("must call `touch()`", "locks are renewed by a heartbeat, so a slow job never times out"),
)
async def test_ensure_slow_jobs_time_out(agenda_test: Agenda) -> None:
    """ensure slow jobs time out"""
    job_started: list[bool] = []

    async def handler(job: Job) -> None:
        job_started.append(True)
        await asyncio.sleep(2.5)

    agenda_test.define("test long", handler, lock_lifetime=0.5)
    log = EventLog(agenda_test, "error", "success")
    await agenda_test.now("test long")
    await agenda_test.start()
    await wait_until(lambda: log.calls)
    assert job_started == [True]
    event, args = log.calls[0]
    assert event == "error"
    assert isinstance(args[0], Exception)


async def test_ensure_slow_jobs_do_not_time_out_when_calling_touch(agenda_test: Agenda) -> None:
    """ensure slow jobs do not time out when calling touch"""

    async def handler(job: Job) -> None:
        for _ in range(10):
            await asyncio.sleep(0.1)
            await job.touch()

    agenda_test.define("test long", handler, lock_lifetime=0.5)
    log = EventLog(agenda_test, "error", "success")
    await agenda_test.start()
    await agenda_test.now("test long")
    await wait_until(lambda: log.calls)
    assert log.names()[0] == "success"
    assert log.count("error") == 0


async def test_ensure_concurrency_is_filled_up(make_agenda: Any) -> None:
    """ensure concurrency is filled up"""
    agenda = await make_agenda(
        name="agendaTest",
        max_concurrency=300,
        lock_limit=150,
        default_lock_limit=20,
        default_concurrency=10,
        process_every=0.1,
    )

    async def handler(job: Job) -> None:
        await hold(job, 5)

    for i in range(10):
        agenda.define(f"test job {i}", handler, lock_lifetime=10)
    for i in range(10):
        for _ in range(25):
            await agenda.now(f"test job {i}")
    await agenda.start()

    async def running() -> bool:
        return (await agenda.running_stats()).running_jobs >= 90  # type: ignore[operator]

    # Agenda bounds this at 2.5 s; we wait on the condition instead of asserting a time (a loaded CI
    # machine is slow). Before per-name claims the count never passed 10, so the wait still fails then.
    await wait_until(running, timeout=30, interval=0.05)

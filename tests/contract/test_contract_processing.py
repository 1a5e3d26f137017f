"""A worker's claiming on both backends: each name within its own limits, and start() taking what is due."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from contract_helpers import MakeAgenda, utcnow

from agendapy import Agenda, DrainResult, Job

from support import wait_until


async def test_a_name_at_its_lock_limit_does_not_stop_other_names(agenda: Agenda) -> None:
    release = asyncio.Event()
    started: list[str] = []

    @agenda.define("busy", lock_limit=1)
    async def busy(job: Job) -> None:
        started.append("busy")
        await release.wait()

    @agenda.define("other")
    async def other(job: Job) -> None:
        started.append("other")

    await agenda.now("busy")
    await agenda.now("busy")
    await agenda.start()
    try:
        await wait_until(lambda: "busy" in started)
        await agenda.now("other")
        await wait_until(lambda: "other" in started, timeout=20)
        stats = await agenda.running_stats()
        assert stats.job_status["busy"]["locked"] == 1, "busy went over its lock_limit"
    finally:
        release.set()


async def test_agendas_scenario_fills_every_names_concurrency(make_agenda: MakeAgenda) -> None:
    # Agenda's jobprocessor suite: 10 names x 25 due jobs, defaultConcurrency 10, defaultLockLimit 20,
    # lockLimit 150, maxConcurrency 300: at least 90 run at once soon after start.
    agenda = await make_agenda(
        max_concurrency=300, lock_limit=150, default_lock_limit=20, default_concurrency=10
    )
    names = [f"name {n}" for n in range(10)]
    release = asyncio.Event()
    running: Counter[str] = Counter()
    peak = 0

    async def hold(job: Job) -> None:
        nonlocal peak
        running[job.name] += 1
        peak = max(peak, running.total())
        try:
            await release.wait()
        finally:
            running[job.name] -= 1

    for name in names:
        agenda.define(name, hold)
    # Name by name, the first name's jobs due first, as Agenda's test creates them.
    base = utcnow() - timedelta(minutes=1)
    await agenda.insert_many(
        [
            agenda.create(name, {"n": n}).schedule(base + timedelta(milliseconds=i * 25 + n))
            for i, name in enumerate(names)
            for n in range(25)
        ]
    )
    await agenda.start()
    try:
        await wait_until(lambda: running.total() >= 90, timeout=60)
        stats = await agenda.running_stats()
        assert isinstance(stats.running_jobs, int) and stats.running_jobs >= 90
        assert isinstance(stats.locked_jobs, int) and stats.locked_jobs <= 150
        for name in names:
            assert stats.job_status[name]["running"] <= 10
            assert stats.job_status[name]["locked"] <= 20
        assert max(running.values()) <= 10
    finally:
        release.set()
    assert peak <= 100


@pytest.mark.parametrize("attempt", range(5))
async def test_drain_right_after_start_runs_every_due_job(agenda: Agenda, attempt: int) -> None:
    ran: list[object] = []
    draining = asyncio.Event()

    @agenda.define("work")
    async def work(job: Job) -> None:
        # Held until drain() has begun: start()'s pass ends with a look-ahead claim, and a run that
        # finished during it (a slow round trip on a loaded machine) would not count as drained.
        await draining.wait()
        await asyncio.sleep(0.1)
        ran.append(job.data)

    for n in range(3):
        await agenda.now("work", n)
    await agenda.start()
    drain = asyncio.create_task(agenda.drain(timeout=30))
    await asyncio.sleep(0)  # drain() takes its count of completed runs in its first step
    draining.set()
    result = await drain
    assert sorted(ran) == [0, 1, 2]
    assert result == DrainResult(completed=3, running=0, timed_out=False)
    assert not agenda.is_running


async def test_start_takes_due_jobs_within_the_limits_and_leaves_the_rest(agenda: Agenda) -> None:
    release = asyncio.Event()

    @agenda.define("work", concurrency=2, lock_limit=3)
    async def work(job: Job) -> None:
        await release.wait()

    for n in range(5):
        await agenda.now("work", n)
    await agenda.start()
    try:
        stats = await agenda.running_stats()
        # Two start at once; one more waits locked in the look-ahead (lock_limit 3); two stay free.
        assert stats.job_status["work"]["running"] == 2
        assert stats.job_status["work"]["locked"] == 3
        unlocked = [j for j in (await agenda.query_jobs(name="work")).jobs if j.locked_at is None]
        assert len(unlocked) == 2
    finally:
        release.set()


async def test_the_worker_lock_limit_goes_to_the_highest_priority_across_names(
    make_agenda: MakeAgenda,
) -> None:
    agenda = await make_agenda(lock_limit=2)
    release = asyncio.Event()

    async def hold(job: Job) -> None:
        await release.wait()

    agenda.define("low", hold, priority="low")
    agenda.define("high", hold, priority="high")
    due = utcnow() - timedelta(seconds=5)
    for name in ("low", "low", "high", "high", "low"):
        await agenda.create(name).schedule(due).save()
    await agenda.start()
    try:
        stats = await agenda.running_stats()
        assert stats.job_status["high"]["running"] == 2
        assert stats.job_status["low"]["locked"] == 0
    finally:
        release.set()


async def test_one_worker_does_not_hoard_a_backlog(agenda: Agenda) -> None:
    release = asyncio.Event()

    @agenda.define("work", concurrency=2)
    async def work(job: Job) -> None:
        await release.wait()

    await agenda.insert_many([agenda.create("work", {"n": n}) for n in range(20)])
    await agenda.start()
    try:
        await asyncio.sleep(0.3)  # several polls: the look-ahead must stay as small as it was
        stats = await agenda.running_stats()
        # Two running and a look-ahead of one concurrency's worth; the rest is left for other workers.
        assert stats.job_status["work"] == {**stats.job_status["work"], "running": 2, "locked": 4}
        unlocked = [j for j in (await agenda.query_jobs(name="work")).jobs if j.locked_at is None]
        assert len(unlocked) == 16
    finally:
        release.set()

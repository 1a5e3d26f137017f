"""Locking on the fly, on both backends: a started worker that saves a job due now, with a free slot for
it, inserts it already locked by itself and starts it before ``now()`` returns (Agenda's lockOnTheFly);
without a slot the job is left for the claim passes of any worker."""

from __future__ import annotations

import asyncio

import pytest
from contract_helpers import MakeAgenda

from agendapy import Agenda, DrainResult, Job

from support import EventLog, wait_until


def running_ids(agenda: Agenda) -> set[str | None]:
    """The ids this worker is running right now (read without a round trip, so nothing can race it)."""
    processor = agenda._processor
    assert processor is not None
    return {job.id for job in processor.running_jobs}


async def test_now_on_a_started_worker_returns_with_the_job_locked_and_running(
    make_agenda: MakeAgenda,
) -> None:
    # A poll far away: only locking on the fly can have the job running when now() returns.
    agenda = await make_agenda(name="worker-a", process_every="10 minutes")
    release = asyncio.Event()
    log = EventLog(agenda, "start:work")

    @agenda.define("work")
    async def work(job: Job) -> None:
        await release.wait()

    await agenda.start()
    try:
        job = await agenda.now("work", {"n": 1})
        assert job.id in running_ids(agenda), "now() returned before this worker took its job"
        stored = await agenda.get_job(job.id)
        assert stored.locked_at is not None
        assert stored.last_modified_by == "worker-a"
        processor = agenda._processor
        assert processor is not None
        (running,) = processor.running_jobs
        assert running.lease is not None and running.lease.locked_at == stored.locked_at
        (started,) = await log.wait("start:work")
        assert started[0].id == job.id and started[0].data == {"n": 1}
    finally:
        release.set()
    await wait_until(lambda: not running_ids(agenda))
    done = await agenda.get_job(job.id)
    assert done.locked_at is None and done.last_finished_at is not None, "the run's fenced writes failed"


async def test_schedule_due_now_and_save_lock_on_the_fly_too(make_agenda: MakeAgenda) -> None:
    agenda = await make_agenda(process_every="10 minutes")
    release = asyncio.Event()

    @agenda.define("work")
    async def work(job: Job) -> None:
        await release.wait()

    await agenda.start()
    try:
        scheduled = await agenda.schedule("now", "work")
        saved = await agenda.create("work", {"n": 2}).save()
        assert {scheduled.id, saved.id} <= running_ids(agenda)
    finally:
        release.set()


async def test_without_an_immediate_slot_the_job_is_left_for_other_workers(make_agenda: MakeAgenda) -> None:
    busy = await make_agenda(name="busy", process_every="10 minutes")
    release = asyncio.Event()
    ran_by: list[str] = []

    async def work(job: Job) -> None:
        ran_by.append(str(job.data))
        await release.wait()

    # One running job fills both this name's concurrency and its lock limit on the busy worker.
    busy.define("work", work, concurrency=1, lock_limit=1)
    await busy.start()
    try:
        first = await busy.now("work", "first")
        assert first.id in running_ids(busy)
        second = await busy.now("work", "second")
        assert second.id not in running_ids(busy)
        stored = await busy.get_job(second.id)
        assert stored.locked_at is None, "a worker without room locked the job"
        other = await make_agenda(name="other")
        other.define("work", work)
        await other.start()
        await wait_until(lambda: "second" in ran_by, timeout=20)
        assert (await busy.get_job(second.id)).last_modified_by == "other"
    finally:
        release.set()


async def test_the_slot_rules_hold_for_concurrent_saves(make_agenda: MakeAgenda) -> None:
    agenda = await make_agenda(process_every="10 minutes", max_concurrency=3)
    release = asyncio.Event()

    @agenda.define("work", concurrency=2)
    async def work(job: Job) -> None:
        await release.wait()

    @agenda.define("other")
    async def other(job: Job) -> None:
        await release.wait()

    await agenda.start()
    try:
        await asyncio.gather(*(agenda.now("work", n) for n in range(4)), agenda.now("other"))
        processor = agenda._processor
        assert processor is not None
        # Saved together, each one checked against the slots the others had been promised.
        assert processor.running_count("work") == 2
        assert processor.running_count() == 3
    finally:
        release.set()


@pytest.mark.parametrize("attempt", range(5))
async def test_drain_right_after_concurrent_now_calls_runs_them_all(agenda: Agenda, attempt: int) -> None:
    # Agenda's "drain: should wait for all running jobs to complete", on both backends.
    ran: list[object] = []

    @agenda.define("work")
    async def work(job: Job) -> None:
        await asyncio.sleep(0.1)
        ran.append(job.data)

    await agenda.start()
    await asyncio.gather(*(agenda.now("work", n) for n in range(3)))
    result = await agenda.drain(timeout=30)
    assert sorted(ran) == [0, 1, 2]
    assert result == DrainResult(completed=3, running=0, timed_out=False)


async def test_a_worker_that_is_not_started_only_saves(agenda: Agenda) -> None:
    agenda.define("work", lambda job: None)
    job = await agenda.now("work")
    stored = await agenda.get_job(job.id)
    assert stored.locked_at is None and stored.next_run_at is not None

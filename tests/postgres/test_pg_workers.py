"""Several agendapy workers on one PostgreSQL table: every job runs exactly once, and a job saved by a
process that does not run it wakes the idle workers (no polling needed)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from agendapy import Agenda, Job
from agendapy.schedule.timezones import utcnow
from agendapy.store.postgres import PostgresJobStore


@pytest.fixture
async def agendas() -> AsyncIterator[list[Agenda]]:
    made: list[Agenda] = []
    try:
        yield made
    finally:
        for agenda in made:
            await agenda.stop(grace=1.0)
            await agenda.close()


async def test_three_workers_run_every_job_exactly_once(pg_url: str, agendas: list[Agenda]) -> None:
    ran: Counter[str] = Counter()
    all_done = asyncio.Event()
    total = 600

    for n in range(3):
        worker = Agenda(PostgresJobStore(pg_url), process_every=0.05, max_concurrency=30,
                        default_concurrency=30, name=f"w{n}")  # fmt: skip
        agendas.append(worker)

        async def work(job: Job) -> None:
            ran[job.id or ""] += 1
            if len(ran) == total:
                all_done.set()

        worker.define("work", work)
        await worker.start()
    store = PostgresJobStore(pg_url)
    await store.connect()
    try:
        jobs = [Job(name="work", next_run_at=utcnow(), data={"n": n}) for n in range(total)]
        await store.insert_many(jobs, last_modified_by="client")
        await asyncio.wait_for(all_done.wait(), 60)
        await asyncio.sleep(0.3)  # a duplicate run would show up meanwhile
        assert sorted(ran) == sorted(job.id or "" for job in jobs)
        assert set(ran.values()) == {1}
    finally:
        await store.close()


async def test_a_job_saved_elsewhere_wakes_an_idle_worker_long_before_its_poll(
    pg_url: str, agendas: list[Agenda]
) -> None:
    worker = Agenda(PostgresJobStore(pg_url), process_every=60, name="worker")
    client = Agenda(PostgresJobStore(pg_url), name="client")
    agendas.extend([worker, client])
    started = asyncio.Event()

    async def ping(job: Job) -> None:
        started.set()

    worker.define("ping", ping)
    await worker.start()
    await client.connect()
    await asyncio.sleep(0.5)  # the worker's first poll is over: only a wake-up can start the job now
    await client.schedule("now", "ping")
    await asyncio.wait_for(started.wait(), 10)

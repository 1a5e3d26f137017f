"""Fleet events on PostgreSQL: a process that defines nothing hears the runs of another, through the
state channel's notifications (Node's format) and the job rows they name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agendapy import Agenda, Job, RemoteFailure, backoff
from agendapy.store.postgres import PostgresJobStore

from support import EventLog


@pytest.fixture
async def agendas(pg_url: str) -> AsyncIterator[list[Agenda]]:
    made: list[Agenda] = []
    try:
        yield made
    finally:
        for agenda in made:
            await agenda.stop(grace=1.0)
            await agenda.close()


async def on_postgres(pg_url: str, agendas: list[Agenda], **options: Any) -> Agenda:
    agenda = Agenda(PostgresJobStore(pg_url), process_every=0.05, **options)
    agendas.append(agenda)
    await agenda.connect()
    return agenda


async def test_another_processs_runs_reach_a_process_that_defines_nothing(
    pg_url: str, agendas: list[Agenda]
) -> None:
    watcher = await on_postgres(pg_url, agendas, fleet_events=True, name="web")
    await watcher.start()
    worker = await on_postgres(pg_url, agendas, name="worker-1")
    events = EventLog(watcher, "start", "progress", "success", "complete", "fail", "retry", "success:greet")

    async def greet(job: Job) -> None:
        await job.touch(40)

    @worker.define("flaky", backoff=backoff.constant(delay=30, max_retries=1))
    async def flaky(job: Job) -> None:
        raise RuntimeError("no luck")

    worker.define("greet", greet)
    await worker.start()
    job = await watcher.now("greet", {"to": "ada"})
    await events.wait("complete", timeout=30)
    assert events.names() == ["start", "progress", "success", "success:greet", "complete"]
    for (seen,) in events.args("start") + events.args("success") + events.args("complete"):
        assert (seen.remote, seen.worker, seen.id) == (True, "worker-1", job.id)
        assert seen.data == {"to": "ada"}  # the job's row, read for its events
    assert events.args("progress")[0][0].progress == 40

    failing = await watcher.now("flaky")
    await events.wait("complete", 2, timeout=30)
    ((error, failed),) = events.args("fail")
    assert isinstance(error, RemoteFailure) and str(error) == "no luck" and failed.id == failing.id
    ((retried, details),) = events.args("retry")
    assert retried.id == failing.id and details.attempt == 1 and 29 < details.delay < 31
    await asyncio.sleep(0.2)
    assert events.names().count("complete") == 2  # each run heard once

"""A PostgreSQL server that went away (its postmaster killed): every path of the PostgreSQL store raises
agendapy's ``DatabaseUnavailable`` (the error the run path retries and a stop gives up on), never a raw
psycopg error, and psycopg's pool does not log a warning per failed reconnection attempt."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId
from pg_run_support import add_jobs, request_for

from agendapy.errors import DatabaseUnavailable
from agendapy.job import Job
from agendapy.schedule.timezones import utcnow
from agendapy.store.postgres import PostgresJobStore, connection
from agendapy.store.postgres.claims import claim
from agendapy.workers_postgres import PostgresWorkerDirectory

from support import wait_until


@pytest.fixture
def server() -> Iterator[Any]:
    from pg_server import PostgresServer

    own = PostgresServer(durable=True)  # the tables outlive a kill
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
async def store(server: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PostgresJobStore]:
    # A request for a connection gives up after 1 s instead of 10 (the test's patience, not the point).
    monkeypatch.setattr(connection, "_CONNECT_TIMEOUT", 1.0)
    made = PostgresJobStore(server.url, max_size=3)
    await made.connect()
    try:
        yield made
    finally:
        await made.close()


async def _unavailable(call: Callable[[], Awaitable[Any]]) -> str:
    with pytest.raises(DatabaseUnavailable) as raised:
        await call()
    return str(raised.value)


async def test_every_path_raises_database_unavailable_when_the_server_is_gone(
    server: Any, store: PostgresJobStore
) -> None:
    await add_jobs(store, "work", 4)
    jobs = await claim(store.pool, store.table, request_for(["work"]), "tok", 4, writes=store._path.writes)
    assert len(jobs) == 4
    directory = PostgresWorkerDirectory(store.pool, jobs_table=store.table)
    await directory.ensure()

    server.kill()

    def stamped(job: Job) -> Job:
        job.last_run_at = utcnow()
        return job

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "save_state_batched": lambda: store.save_state_batched(stamped(jobs[0])),
        "save_state": lambda: store.save_state(stamped(jobs[1])),
        "claim": lambda: store.claim(request_for(["work"]), "tok2", 2),
        "renew_locks": lambda: store.renew_locks(jobs[2:], utcnow()),
        "save_job": lambda: store.save_job(
            Job(name="new", next_run_at=utcnow()), last_modified_by=None, now=utcnow()
        ),
        "runs.start": lambda: store.runs.start(
            name="work", job_id=None, interval=None, guard=False, started_at=utcnow(), worker="w"
        ),
        "runs.trim": lambda: store.runs.trim("work"),
        "logs.write": lambda: store.logs.write([{"_id": ObjectId(), "message": "m", "timestamp": utcnow()}]),
        "workers.write": lambda: directory.write(ObjectId(), {"name": "w", "lastSeenAt": utcnow()}),
        "workers.workers": lambda: directory.workers(include_stopped=True),
        "workers.activity": lambda: directory.activity(5),
        "run_changes": store.run_changes,
    }
    for what, call in calls.items():
        message = await _unavailable(call)
        assert "cannot reach PostgreSQL" in message, (what, message)


async def test_the_pool_reports_an_outage_once_not_per_reconnection_attempt(
    server: Any, store: PostgresJobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server.kill()
    # Enough failed attempts for the pool to log several "error connecting" lines on its own.
    for _ in range(4):
        await _unavailable(lambda: store.queue_size(utcnow()))
    await wait_until(lambda: any("unreachable" in r.getMessage() for r in caplog.records), timeout=10)
    pool_warnings = [
        r
        for r in caplog.records
        if r.name.startswith("psycopg.pool") and "error connecting" in r.getMessage()
    ]
    assert pool_warnings == []
    outage_lines = [
        r for r in caplog.records if r.name.startswith("agendapy") and "unreachable" in r.getMessage()
    ]
    assert len(outage_lines) == 1, [r.getMessage() for r in outage_lines]

    server.restart()

    async def answers() -> bool:
        try:
            await store.queue_size(utcnow() + timedelta(days=1))
        except DatabaseUnavailable:
            return False
        return True

    await wait_until(answers, timeout=30, interval=0.2)
    await wait_until(
        lambda: any(
            "reachable again" in r.getMessage() for r in caplog.records if r.name.startswith("agendapy")
        ),
        timeout=10,
    )


async def test_the_pool_reconnects_within_about_a_second_of_the_servers_return(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg_pool alone doubles the wait between reconnection attempts (1, 2, 4, 8 s ...): after an
    8 s outage its next attempt came some 6 s after the server was back, longer than a lock lifetime of
    a few seconds, so the worker's renewals failed while the server answered. Attempts are at most a
    second apart here, so the store answers well within 3 s of the server's return."""
    monkeypatch.setattr(connection, "_CONNECT_TIMEOUT", 1.0)
    store = PostgresJobStore(server.url, min_size=1, max_size=1)  # one connection: no growth hides it
    await store.connect()
    try:
        server.kill()
        await _unavailable(lambda: store.queue_size(utcnow()))  # the pool finds its connection broken
        await asyncio.sleep(8)  # the outage: the pool retries meanwhile, unasked
        await asyncio.to_thread(server.restart)

        async def answers() -> bool:
            try:
                await store.queue_size(utcnow())
            except DatabaseUnavailable:
                return False
            return True

        await wait_until(answers, timeout=3, interval=0.1)
    finally:
        await store.close()

"""The workers list and per-minute activity in PostgreSQL tables (what ``agenda.workers()``,
``agenda.activity()`` and the dashboard read on a PostgreSQL store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agendapy.workers_postgres import PostgresWorkerDirectory


@pytest.fixture
async def pool(pg_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(
        pg_url, min_size=1, max_size=4, kwargs={"autocommit": True, "row_factory": dict_row}, open=False
    )
    await p.open()
    async with p.connection() as conn:
        # The columns of Node Agenda's jobs table that the held-jobs lookup reads.
        await conn.execute(
            "CREATE TABLE agenda_jobs (id UUID PRIMARY KEY DEFAULT gen_random_uuid(), name TEXT NOT NULL, "
            "locked_at TIMESTAMPTZ, last_modified_by VARCHAR(255))"
        )
    try:
        yield p
    finally:
        await p.close()


def entry(name: str, *, every: float = 5.0, state: str = "running") -> dict[str, Any]:
    return {
        "name": name,
        "host": "h",
        "pid": 7,
        "version": "1.0",
        "startedAt": datetime.now(UTC),
        "heartbeatEvery": every,
        "definitions": ["a", "b"],
        "running": 1,
        "locked": 2,
        "done": 3,
        "failed": 4,
        "state": state,
    }


async def test_reading_before_any_worker_registered_lists_nothing(pool: AsyncConnectionPool[Any]) -> None:
    directory = PostgresWorkerDirectory(pool, jobs_table="agenda_jobs")
    assert await directory.workers(include_stopped=True) == []
    minutes = await directory.activity(3)
    assert [m["done"] for m in minutes] == [0, 0, 0] and minutes[0]["queued"] is None


async def test_entries_are_live_lost_with_their_held_jobs_or_stopped(pool: AsyncConnectionPool[Any]) -> None:
    directory = PostgresWorkerDirectory(pool, jobs_table="agenda_jobs")
    await directory.ensure()
    await asyncio.gather(directory.ensure(), directory.ensure())  # several processes starting at once
    live, lost, stopped = ObjectId(), ObjectId(), ObjectId()
    await directory.write(live, entry("live-1"))
    await directory.write(lost, entry("lost-1", every=0.05))
    await directory.write(stopped, {**entry("stopped-1"), "state": "stopped", "stoppedAt": datetime.now(UTC)})
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO agenda_jobs (name, locked_at, last_modified_by) VALUES "
            "('held', now(), 'lost-1'), ('unlocked', NULL, 'lost-1'), ('other', now(), 'live-1')"
        )
    await asyncio.sleep(0.2)  # three of lost-1's 50 ms heartbeats lapse
    await directory.write(live, {**entry("live-1"), "done": 10})  # a refresh updates in place

    workers = await directory.workers(include_stopped=False)
    assert [(w.name, w.state) for w in workers] == [("live-1", "live"), ("lost-1", "lost")]
    assert workers[0].done == 10 and workers[0].definitions == ["a", "b"] and workers[0].id == str(live)
    assert workers[0].last_seen is not None and workers[0].last_seen.tzinfo is not None
    assert workers[0].held_jobs == []  # a live worker's locks are its business
    assert [job["name"] for job in workers[1].held_jobs] == ["held"]
    every = await directory.workers(include_stopped=True)
    assert [w.state for w in every] == ["live", "lost", "stopped"]


async def test_activity_adds_runs_per_minute_and_keeps_the_largest_queue_sample(
    pool: AsyncConnectionPool[Any],
) -> None:
    directory = PostgresWorkerDirectory(pool, jobs_table="agenda_jobs")
    await directory.ensure()
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    await asyncio.gather(
        directory.add_activity(minute, done=2, failed=0, queued=None),
        directory.add_activity(minute, done=1, failed=1, queued=5),
        directory.add_activity(minute, done=0, failed=2, queued=3),
    )
    await directory.add_activity(minute - timedelta(minutes=1), done=4, failed=0, queued=None)
    series = await directory.activity(2)
    assert [(m["done"], m["failed"], m["queued"]) for m in series] == [(4, 0, None), (3, 3, 5)]
    assert series[-1]["minute"] == minute


async def test_expired_entries_and_buckets_are_deleted_when_a_worker_registers(
    pool: AsyncConnectionPool[Any],
) -> None:
    directory = PostgresWorkerDirectory(pool, jobs_table="agenda_jobs")
    await directory.ensure()
    await directory.write(ObjectId(), entry("old"))
    await directory.add_activity(datetime.now(UTC) - timedelta(days=3), done=1, failed=0, queued=None)
    async with pool.connection() as conn:
        await conn.execute("UPDATE agendapy_workers SET last_seen = now() - interval '2 days'")
    await directory.ensure()
    assert await directory.workers(include_stopped=True) == []
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) AS n FROM agendapy_activity")).fetchone()
    assert row is not None and row["n"] == 0

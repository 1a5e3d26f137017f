"""Shared by the PostgreSQL run-path tests (claims, state writes, notifications): a connected store on
the test's own database, the batched writer over its pool, and small builders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from psycopg.rows import dict_row

from agendapy.job import Job
from agendapy.schedule.timezones import utcnow
from agendapy.store.base import ClaimRequest
from agendapy.store.postgres import PostgresJobStore
from agendapy.store.postgres.state_writes import StateWrites

LOCK_LIFETIME = timedelta(minutes=10)


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[PostgresJobStore]:
    """A connected PostgreSQL store (schema created) on this test's own database."""
    store = PostgresJobStore(pg_url, max_size=12)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def writes(pg_store: PostgresJobStore) -> AsyncIterator[StateWrites]:
    """Fenced (and batched) writes to the store's table; drained at the end."""
    writer = StateWrites(lambda: pg_store.pool, pg_store.table, window=0.005, channel=pg_store.channel)
    try:
        yield writer
    finally:
        await writer.drain(timeout=5.0)


def request_for(
    names: Sequence[str],
    *,
    now: datetime | None = None,
    per_name: dict[str, int] | None = None,
    lock_lifetime: timedelta = LOCK_LIFETIME,
    owner: str | None = "test-worker",
) -> ClaimRequest:
    now = now or utcnow()
    return ClaimRequest(
        names=list(names),
        now=now,
        next_scan_at=now,
        lock_deadlines=dict.fromkeys(names, now - lock_lifetime),
        owner=owner,
        per_name=per_name,
    )


async def add_jobs(store: PostgresJobStore, name: str, count: int, *, ago: timedelta = timedelta(minutes=1),
                   **fields: Any) -> list[Job]:  # fmt: skip
    """``count`` due jobs of ``name``, the first the most overdue (so claim order is insertion order)."""
    now = utcnow()
    jobs = [Job(name=name, next_run_at=now - ago + timedelta(milliseconds=i), **fields) for i in range(count)]
    await store.insert_many(jobs, last_modified_by=None)
    return jobs


async def row(store: PostgresJobStore, job_id: str | None) -> dict[str, Any]:
    """The job's row as stored."""
    async with store.pool.connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(f'SELECT * FROM "{store.table}" WHERE id = %s', [job_id])
        found = await cursor.fetchone()
    assert found is not None, f"no row {job_id}"
    return found


async def execute(store: PostgresJobStore, statement: str, params: Sequence[Any] = ()) -> None:
    async with store.pool.connection() as conn:
        await conn.execute(statement, params)  # type: ignore[arg-type]

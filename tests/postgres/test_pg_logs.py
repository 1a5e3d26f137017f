"""PostgresLogStore on a real PostgreSQL: Node Agenda's ``agenda_logs`` table exactly, entries Node's
PostgresJobLogger writes read back, entries agendapy writes read as Node reads them, every LogQuery
filter, paging and order, idempotent batches, clearing, expiry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from bson import ObjectId
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from agendapy import InvalidInput
from agendapy.events import EventEmitter
from agendapy.job_logs_service import JobLogs
from agendapy.joblogs import LogQuery
from agendapy.store.postgres.logs import PostgresLogStore, entry_uuid

# Node's PostgresJobLogger table, column for column: (name, type, max length, nullable).
NODE_COLUMNS = [
    ("id", "uuid", None, "NO"),
    ("timestamp", "timestamp with time zone", None, "NO"),
    ("level", "character varying", 10, "NO"),
    ("event", "character varying", 30, "NO"),
    ("job_id", "character varying", 255, "YES"),
    ("job_name", "character varying", 255, "NO"),
    ("message", "text", None, "NO"),
    ("duration", "integer", None, "YES"),
    ("error", "text", None, "YES"),
    ("fail_count", "integer", None, "YES"),
    ("retry_delay", "integer", None, "YES"),
    ("retry_attempt", "integer", None, "YES"),
    ("agenda_name", "character varying", 255, "YES"),
    ("meta", "jsonb", None, "YES"),
]


@pytest.fixture(params=["store", "plain"])
async def pool(pg_url: str, request: pytest.FixtureRequest) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A pool as the job store makes it (autocommit, dict rows) or psycopg's defaults; its session time
    zone far from UTC: every date must still read back as aware UTC."""
    kwargs: dict[str, Any] = {"options": "-c TimeZone=America/Denver"}
    if request.param == "store":
        kwargs |= {"autocommit": True, "row_factory": dict_row}
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        pg_url, min_size=1, max_size=8, open=False, kwargs=kwargs
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def logs(pool: AsyncConnectionPool[Any]) -> PostgresLogStore:
    store = PostgresLogStore(pool, ttl=None)
    await store.create_indexes()
    return store


def entry(event: str, *, at: datetime, job: str = "j", **fields: Any) -> dict[str, Any]:
    """An entry as agendapy's JobLogWriter makes it."""
    level = {"fail": "error", "retry:exhausted": "warn"}.get(event, "info")
    return {
        "_id": ObjectId(),
        "timestamp": at,
        "level": level,
        "event": event,
        "message": f"job {event}",
        "jobName": job,
        **fields,
    }


async def rows(pool: AsyncConnectionPool[Any], where: str = "TRUE") -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(f"SELECT * FROM agenda_logs WHERE {where} ORDER BY timestamp, id")  # type: ignore[arg-type]
        return await cur.fetchall()


async def test_the_table_and_indexes_are_node_agendas_created_safely_at_once(
    pool: AsyncConnectionPool[Any],
) -> None:
    stores = [PostgresLogStore(pool, ttl=None) for _ in range(4)]
    await asyncio.gather(*(store.create_indexes() for store in stores))
    await stores[0].create_indexes()
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=tuple_row)
        columns = await (
            await cur.execute(
                "SELECT column_name::text, data_type::text, character_maximum_length, is_nullable::text"
                " FROM information_schema.columns WHERE table_name = 'agenda_logs' ORDER BY ordinal_position"
            )
        ).fetchall()
        indexes = await (
            await cur.execute(
                "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'agenda_logs'"
                " ORDER BY indexname"
            )
        ).fetchall()
    assert [tuple(column) for column in columns] == NODE_COLUMNS
    assert [name for name, _ in indexes] == [
        "agenda_logs_job_id_idx",
        "agenda_logs_job_name_idx",
        "agenda_logs_pkey",
        "agenda_logs_timestamp_idx",
    ]
    assert '(job_id, "timestamp" DESC)' in dict(indexes)["agenda_logs_job_id_idx"]


async def test_an_entry_node_writes_reads_back(
    pool: AsyncConnectionPool[Any], logs: PostgresLogStore
) -> None:
    at = datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    async with pool.connection() as conn:
        # The columns Node's PostgresJobLogger.log inserts (its id and nothing else left to defaults).
        await conn.execute(
            "INSERT INTO agenda_logs (timestamp, level, event, job_id, job_name, message, duration, error,"
            " fail_count, retry_delay, retry_attempt, agenda_name, meta)"
            " VALUES (%s, 'error', 'fail', 'a1b2', 'node-job', 'job failed: no', 17, 'no', 2, NULL, NULL,"
            " 'node-worker', %s::jsonb)",
            [at, json.dumps({"host": "n1"})],
        )
        await conn.execute(
            "INSERT INTO agenda_logs (timestamp, level, event, job_id, job_name, message)"
            " VALUES (%s, 'debug', 'locked', 'a1b2', 'node-job', 'job locked')",
            [at - timedelta(seconds=1)],
        )
    result = await logs.query(LogQuery(job_id="a1b2", sort="asc"))
    assert result.total == 2
    locked, fail = result.entries
    assert (locked.event, locked.level, locked.duration, locked.meta) == ("locked", "debug", None, None)
    assert (fail.timestamp, fail.timestamp.tzinfo) == (at, UTC)
    assert (fail.level, fail.event, fail.job_id, fail.job_name) == ("error", "fail", "a1b2", "node-job")
    assert (fail.message, fail.duration, fail.error, fail.fail_count) == ("job failed: no", 17.0, "no", 2)
    assert (fail.agenda_name, fail.meta, fail.retry_delay) == ("node-worker", {"host": "n1"}, None)
    assert len(fail.id) == 36  # Node's UUID


async def test_an_entry_agendapy_writes_is_a_plain_node_row(
    pool: AsyncConnectionPool[Any], logs: PostgresLogStore
) -> None:
    at = datetime.now(UTC)
    oid = ObjectId()
    doc = entry("retry", at=at, jobId="j1", retryDelay=30000, retryAttempt=1, error="boom", agendaName="py")
    doc["_id"] = oid
    doc["duration"] = 12.345
    await logs.write([doc])
    [row] = await rows(pool)
    assert row["id"] == entry_uuid(oid) and row["timestamp"] == at.replace(
        microsecond=at.microsecond // 1000 * 1000
    )
    assert (row["level"], row["event"], row["job_id"], row["job_name"]) == ("info", "retry", "j1", "j")
    assert (row["retry_delay"], row["retry_attempt"], row["error"], row["agenda_name"]) == (
        30000,
        1,
        "boom",
        "py",
    )
    # Whole milliseconds in an INTEGER, as Node stores them; nothing needed meta.
    assert (row["duration"], row["meta"]) == (12, None)
    plain = entry("start", at=at)
    await logs.write([plain])
    [row] = await rows(pool, "event = 'start'")
    assert row["meta"] is None and row["duration"] is None and row["job_id"] is None


async def test_what_a_column_cannot_hold_goes_to_meta_and_never_fails_the_batch(
    pool: AsyncConnectionPool[Any], logs: PostgresLogStore
) -> None:
    at = datetime.now(UTC)
    long_name = "a" * 300
    odd = entry(
        "fail",
        at=at,
        agendaName=long_name,
        duration=2**40,
        failCount=float("nan"),
        message="bad \x00 byte",
        host={"started": at, "nan": float("inf"), "nul": "x\x00y"},
        meta={"trace": "abc"},
    )
    await logs.write([odd, entry("complete", at=at)])
    [row, _] = await rows(pool)
    assert row["agenda_name"] == "a" * 255 and row["duration"] is None and row["fail_count"] is None
    assert row["message"] == "bad \ufffd byte"
    assert row["meta"] == {
        "agendaName": long_name,
        "duration": 2**40,
        "failCount": "nan",
        "host": {"started": at.isoformat(), "nan": "inf", "nul": "x\ufffdy"},
        "trace": "abc",
    }


async def test_a_batch_retried_after_a_lost_reply_is_not_stored_twice(logs: PostgresLogStore) -> None:
    at = datetime.now(UTC)
    docs = [entry(event, at=at) for event in ("start", "success", "complete")]
    await logs.write(docs[:2])
    await logs.write(docs)
    result = await logs.query(LogQuery(sort="asc"))
    assert [e.event for e in result.entries] == ["start", "success", "complete"]
    assert result.total == 3


async def test_query_filters_pages_and_orders_like_node(logs: PostgresLogStore) -> None:
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    docs = []
    for i in range(12):
        job = "a" if i % 3 else "b"
        event = ("start", "fail", "retry", "complete")[i % 4]
        docs.append(
            entry(event, at=t0 + timedelta(seconds=i // 2), job=job, jobId=f"id-{job}", message=str(i))
        )
    await logs.write(docs)

    async def messages(**options: Any) -> tuple[list[str], int]:
        result = await logs.query(LogQuery.build(**options))
        return [e.message for e in result.entries], result.total

    # Entries of one second keep the order they were written in, either way.
    assert await messages(limit=0, sort="asc") == ([str(i) for i in range(12)], 12)
    assert await messages(limit=4) == (["11", "10", "9", "8"], 12)
    assert await messages(limit=4, offset=8) == (["3", "2", "1", "0"], 12)
    assert await messages(limit=5, offset=20) == ([], 12)
    assert await messages(job_name="b", sort="asc") == (["0", "3", "6", "9"], 4)
    assert await messages(job_id="id-a", event="start") == (["8", "4"], 2)
    assert await messages(level=["error", "warn"]) == (["9", "5", "1"], 3)
    assert await messages(event=["retry", "complete"], job_name="a", limit=2) == (["11", "10"], 4)
    span = await messages(since=t0 + timedelta(seconds=1), until=t0 + timedelta(seconds=2), sort="asc")
    assert span == (["2", "3", "4", "5"], 4)  # both bounds inclusive, as in Node and MongoDB
    assert await messages(job_name="nobody") == ([], 0)


async def test_clear_deletes_the_matching_entries_or_all(logs: PostgresLogStore) -> None:
    at = datetime.now(UTC)
    await logs.write([entry(e, at=at, job=j) for j in ("x", "y") for e in ("start", "fail", "complete")])
    assert await logs.clear(LogQuery.build(level="error")) == 2
    assert await logs.clear(LogQuery.build(job_name="x")) == 2
    assert (await logs.query(LogQuery())).total == 2
    assert await logs.clear(None) == 2
    assert (await logs.query(LogQuery())).total == 0


async def test_entries_past_the_ttl_are_deleted(pool: AsyncConnectionPool[Any]) -> None:
    logs = PostgresLogStore(pool, ttl=timedelta(hours=1))
    await logs.create_indexes()
    now = datetime.now(UTC)
    await logs.write([entry("start", at=now - timedelta(hours=2)), entry("start", at=now, job="new")])
    await PostgresLogStore(pool, ttl=timedelta(hours=1)).create_indexes()  # another process starts
    assert [e.job_name for e in (await logs.query(LogQuery())).entries] == ["new"]
    forever = PostgresLogStore(pool, ttl=None)
    await forever.write([entry("start", at=now - timedelta(days=400), job="ancient")])
    await forever.create_indexes()
    assert (await forever.query(LogQuery())).total == 2


async def test_bad_ids_and_options_are_refused_naming_the_field(
    pool: AsyncConnectionPool[Any], logs: PostgresLogStore
) -> None:
    with pytest.raises(InvalidInput, match="_id"):
        await logs.write([{**entry("start", at=datetime.now(UTC)), "_id": 42}])
    with pytest.raises(InvalidInput, match="ttl"):
        PostgresLogStore(pool, ttl=timedelta(seconds=-1))
    with pytest.raises(InvalidInput, match="table"):
        PostgresLogStore(pool, table="", ttl=None)
    assert (await logs.query(LogQuery())).total == 0  # nothing of the refused batch was stored


async def test_a_large_batch_is_written_whole_and_in_order(logs: PostgresLogStore) -> None:
    at = datetime.now(UTC)
    docs = [entry("start", at=at + timedelta(milliseconds=i // 100), message=str(i)) for i in range(1200)]
    await logs.write(docs)
    result = await logs.query(LogQuery(sort="asc", limit=0))
    assert result.total == 1200
    assert [e.message for e in result.entries] == [str(i) for i in range(1200)]
    newest = await logs.query(LogQuery(limit=3))
    assert [e.message for e in newest.entries] == ["1199", "1198", "1197"]


async def test_node_creating_the_table_at_the_same_moment_does_not_fail_ours(
    pg_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    # Node's ensureSchema takes no lock of ours: its CREATE TABLE is under way, not yet committed.
    node = await psycopg.AsyncConnection.connect(pg_url)
    try:
        await node.execute(
            "CREATE TABLE IF NOT EXISTS agenda_logs (id UUID PRIMARY KEY DEFAULT gen_random_uuid(),"
            " timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW(), level VARCHAR(10) NOT NULL,"
            " event VARCHAR(30) NOT NULL, job_id VARCHAR(255), job_name VARCHAR(255) NOT NULL,"
            " message TEXT NOT NULL, duration INTEGER, error TEXT, fail_count INTEGER, retry_delay INTEGER,"
            " retry_attempt INTEGER, agenda_name VARCHAR(255), meta JSONB)"
        )
        ours = asyncio.create_task(PostgresLogStore(pool, ttl=None).create_indexes())
        # Ours waits on Node's transaction (the catalog's unique keys) before Node commits.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            async with pool.connection() as conn:
                cur = conn.cursor(row_factory=tuple_row)
                await cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE 'CREATE TABLE%%'"
                )
                waiting = await cur.fetchone()
            if waiting == (1,):
                break
            assert asyncio.get_running_loop().time() < deadline and not ours.done()
            await asyncio.sleep(0.05)
        await node.commit()
        await asyncio.wait_for(ours, 30)
    finally:
        await node.close()
    logs = PostgresLogStore(pool, ttl=None)
    await logs.write([entry("start", at=datetime.now(UTC))])
    assert (await logs.query(LogQuery())).total == 1


async def test_the_agendas_logs_collection_and_ttl_reach_the_postgres_log_store(
    pool: AsyncConnectionPool[Any],
) -> None:
    class Store:  # what JobLogs reads of a PostgresJobStore: its logs
        logs = PostgresLogStore(pool, ttl=None)

    class Owner:  # what JobLogs reads of an Agenda
        store = Store()

        async def connect(self) -> None:
            return None

    job_logs = JobLogs(
        Owner(),  # type: ignore[arg-type]
        EventEmitter(),
        {},
        enabled=False,
        collection="app_logs",
        ttl=timedelta(hours=1),
        ensure_index=True,
    )
    resolved = job_logs.store()
    assert isinstance(resolved, PostgresLogStore)
    assert (resolved.table, resolved.ttl) == ("app_logs", timedelta(hours=1))
    assert job_logs.store() is resolved  # one store: it remembers when it last expired entries
    now = datetime.now(UTC)
    await resolved.create_indexes()
    await resolved.write([entry("start", at=now - timedelta(hours=2)), entry("start", at=now, job="kept")])
    await PostgresLogStore(pool, table="app_logs", ttl=timedelta(hours=1)).create_indexes()
    result = await job_logs.query(LogQuery())
    assert [e.job_name for e in result.entries] == ["kept"]
    same = PostgresLogStore(pool, ttl=None)
    assert same.configured(table="agenda_logs", ttl=None) is same

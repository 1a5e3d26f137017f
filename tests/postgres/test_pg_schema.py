"""The PostgreSQL schema: Node Agenda's table exactly, plus agendapy's columns, created idempotently and
safely by processes starting at once; connection sources and their errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from agendapy import InvalidInput
from agendapy.errors import DatabaseUnavailable
from agendapy.store.base import JobQuery
from agendapy.store.postgres import PostgresJobStore
from agendapy.store.postgres.connection import PostgresConnection, redact_conninfo
from agendapy.store.postgres.schema import document_to_row, json_value, row_to_document

NODE_COLUMNS = {
    "id": "uuid",
    "name": "character varying",
    "priority": "integer",
    "next_run_at": "timestamp with time zone",
    "type": "character varying",
    "locked_at": "timestamp with time zone",
    "last_finished_at": "timestamp with time zone",
    "failed_at": "timestamp with time zone",
    "fail_count": "integer",
    "fail_reason": "text",
    "repeat_timezone": "character varying",
    "last_run_at": "timestamp with time zone",
    "repeat_interval": "character varying",
    "data": "jsonb",
    "repeat_at": "character varying",
    "disabled": "boolean",
    "progress": "real",
    "fork": "boolean",
    "last_modified_by": "character varying",
    "debounce_started_at": "timestamp with time zone",
    "start_date": "timestamp with time zone",
    "end_date": "timestamp with time zone",
    "skip_days": "jsonb",
    "created_at": "timestamp with time zone",
    "updated_at": "timestamp with time zone",
}
AGENDAPY_COLUMNS = {
    "lock_token": "text",
    "checkpoint": "jsonb",
    "fixed_delay": "boolean",
    "misfire": "text",
    "requires": "jsonb",
    "interval_started_at": "timestamp with time zone",
    "interval_ended_at": "timestamp with time zone",
    "waiting_for": "jsonb",
    "waiting_reason": "text",
    "fail_stack": "text",
}


async def columns(url: str, table: str = "agenda_jobs") -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (table,)
        )
        return {name: kind for name, kind in await cur.fetchall()}


async def indexes(url: str, table: str = "agenda_jobs") -> set[str]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))
        return {name for (name,) in await cur.fetchall()}


async def test_connect_creates_nodes_table_plus_agendapys_columns(pg_url: str) -> None:
    store = PostgresJobStore(pg_url)
    await store.connect()
    await store.close()
    assert await columns(pg_url) == NODE_COLUMNS | AGENDAPY_COLUMNS
    assert await indexes(pg_url) >= {
        "agenda_jobs_find_and_lock_idx",
        "agenda_jobs_single_job_idx",
        "agenda_jobs_locked_at_idx",
        "agenda_jobs_next_run_at_idx",
    }


async def test_an_existing_node_table_is_migrated_and_its_rows_kept(pg_url: str) -> None:
    # The table as an older Node backend created it (before start/end dates and skip days; no agendapy
    # column), holding a Node-written row.
    old = {k: v for k, v in NODE_COLUMNS.items() if k not in ("id", "start_date", "end_date", "skip_days")}
    definition = ", ".join(f"{name} {kind}" for name, kind in old.items())
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            f"CREATE TABLE agenda_jobs (id UUID PRIMARY KEY DEFAULT gen_random_uuid(), {definition})"
        )
        await conn.execute(
            "INSERT INTO agenda_jobs (name, next_run_at, data, repeat_interval) VALUES"
            " ('node-job', now(), '{\"a\": 1}', '60000')"
        )
    store = PostgresJobStore(pg_url)
    await store.connect()
    try:
        assert set(await columns(pg_url)) >= set(AGENDAPY_COLUMNS)
        [job], total = await store.query(JobQuery())
        assert total == 1 and job.name == "node-job" and job.data == {"a": 1}
        assert job.repeat_interval == 60000 and job.unreadable is None
    finally:
        await store.close()


async def test_several_processes_creating_the_schema_at_once_all_succeed(pg_url: str) -> None:
    stores = [PostgresJobStore(pg_url) for _ in range(4)]
    await asyncio.gather(*(s.connect() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))
    # Connecting again changes nothing and fails nothing (idempotent).
    again = PostgresJobStore(pg_url)
    await again.connect()
    await again.close()
    assert await columns(pg_url) == NODE_COLUMNS | AGENDAPY_COLUMNS


async def test_a_given_pool_is_used_and_left_open(pg_url: str) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(pg_url, kwargs={"autocommit": True}, open=False)
    await pool.open()
    try:
        store = PostgresJobStore(pool)
        await store.connect()
        assert store.pool is pool
        await store.close()
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")  # still open
    finally:
        await pool.close()


async def test_a_pool_without_autocommit_is_refused_clearly(pg_url: str) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(pg_url, open=False)
    await pool.open()
    try:
        with pytest.raises(InvalidInput, match="autocommit"):
            await PostgresJobStore(pool).connect()
    finally:
        await pool.close()


async def test_a_connection_gives_its_parameters_to_the_stores_own_pool(pg_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        store = PostgresJobStore(conn)
        await store.connect()
        try:
            assert await store.distinct_names() == []
        finally:
            await store.close()


def test_a_bad_url_is_refused_before_connecting() -> None:
    with pytest.raises(InvalidInput, match="url"):
        PostgresJobStore("mysql://localhost/db")
    with pytest.raises(InvalidInput, match="url"):
        PostgresConnection("postgresql://host/db?sslmode=bogus&nonsense_option=1")
    with pytest.raises(InvalidInput, match="table"):
        PostgresJobStore("postgresql://localhost/db", table="bad name; drop")


async def test_an_unreachable_server_is_database_unavailable_without_the_password() -> None:
    store = PostgresJobStore("postgresql://me:secret@127.0.0.1:1/db?connect_timeout=1")
    with pytest.raises(DatabaseUnavailable) as caught:
        await store.connect()
    assert "secret" not in str(caught.value) and "127.0.0.1" in str(caught.value)


def test_redact_conninfo_hides_passwords_in_both_forms() -> None:
    assert redact_conninfo("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert "pw" not in redact_conninfo("host=h password=pw user=u")


def test_rows_and_documents_convert_both_ways() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    row = document_to_row(
        {"name": "n", "nextRunAt": at, "repeatInterval": 60000, "lockToken": "t", "bogus": 1}
    )
    assert row["next_run_at"] == at.replace(microsecond=678000)
    assert row["repeat_interval"] == "60000" and row["lock_token"] == "t" and "bogus" not in row
    doc = row_to_document({"id": "6f1c...", "name": "n", "repeat_interval": "60000", "next_run_at": at})
    assert doc["repeatInterval"] == 60000 and doc["_id"] == "6f1c..."
    assert row_to_document({"repeat_interval": "5 minutes"})["repeatInterval"] == "5 minutes"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("priority", 2**31, "priority"),
        ("name", "x" * 256, "255"),
        ("name", "a\x00b", "NUL"),
        ("nextRunAt", "tomorrow", "next_run_at"),
    ],
)
def test_values_a_column_cannot_hold_are_invalid_input(field: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        document_to_row({field: value})


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"when": datetime.now(UTC)}, "data.when"),
        ({"a": [1, b"x"]}, "data.a.1"),
        ({"n": float("nan")}, "data.n"),
        ({1: "int key"}, "data.1"),
        ({"s": {1, 2}}, "data.s"),
    ],
)
def test_data_json_cannot_hold_names_the_path(value: Any, path: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        json_value("data", value)
    assert caught.value.field == path

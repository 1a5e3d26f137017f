"""Worker entries and per-minute activity in PostgreSQL tables (``agenda.workers()``, ``agenda.activity()``
and the dashboard on a PostgreSQL store).

The same entries as MongoDB's ``agendaWorkers``/``agendaActivity`` documents, in two tables beside the
jobs table: ``agendapy_workers`` (one row per worker process) and ``agendapy_activity`` (one row per
minute). PostgreSQL has no TTL index, so rows past their time are deleted when a worker registers and
then every few minutes by the heartbeats. Imported only for a PostgreSQL store (it needs psycopg).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from bson import ObjectId
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from .store.postgres.connection import translate_unreachable
from .workers import (
    ACTIVITY_KEPT,
    FORGET_AFTER,
    HELD_JOBS_SHOWN,
    WORKERS_SHOWN,
    WorkerInfo,
    _aware,
    activity_series,
    activity_window,
    lost_worker_names,
    worker_infos,
    worker_state,
)

__all__ = ["DEFAULT_ACTIVITY_TABLE", "DEFAULT_WORKERS_TABLE", "PostgresWorkerDirectory"]

DEFAULT_WORKERS_TABLE = "agendapy_workers"
DEFAULT_ACTIVITY_TABLE = "agendapy_activity"
#: Serializes the tables' creation across processes starting at once (CREATE ... IF NOT EXISTS alone
#: can still fail on a concurrent creation of the same type). Any constant of agendapy's own.
_SCHEMA_LOCK = 0x61676E_776B72  # "agn" "wkr"
#: Expired rows are deleted at most this often (seconds) by one process's heartbeats.
_PRUNE_EVERY = 600.0

_WORKER_COLUMNS = {
    # document field -> column
    "name": "name",
    "host": "host",
    "pid": "pid",
    "version": "version",
    "state": "state",
    "startedAt": "started_at",
    "stoppedAt": "stopped_at",
    "heartbeatEvery": "heartbeat_every",
    "definitions": "definitions",
    "running": "running",
    "locked": "locked",
    "done": "done",
    "failed": "failed",
}


class PostgresWorkerDirectory:
    """Worker entries in ``workers_table`` and activity in ``activity_table``; held jobs are read from
    ``jobs_table`` (Node Agenda's column names: ``last_modified_by``, ``locked_at``).

    Args:
        pool: the job store's connection pool.
        jobs_table: the jobs table (for the jobs a lost worker still holds).
        workers_table, activity_table: the two tables, created on first registration.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        jobs_table: str,
        workers_table: str = DEFAULT_WORKERS_TABLE,
        activity_table: str = DEFAULT_ACTIVITY_TABLE,
    ) -> None:
        self._pool = pool
        self._jobs = sql.Identifier(jobs_table)
        self._workers_name = workers_table
        self._workers = sql.Identifier(workers_table)
        self._activity_name = activity_table
        self._activity = sql.Identifier(activity_table)
        self._pruned_at: float | None = None
        self._ensured = False

    @translate_unreachable
    async def ensure(self) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            await conn.execute(
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {workers} (
                        id TEXT PRIMARY KEY,
                        name TEXT NOT NULL DEFAULT '',
                        host TEXT NOT NULL DEFAULT '',
                        pid INTEGER NOT NULL DEFAULT 0,
                        version TEXT NOT NULL DEFAULT '',
                        state TEXT NOT NULL DEFAULT 'running',
                        started_at TIMESTAMPTZ,
                        stopped_at TIMESTAMPTZ,
                        last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
                        heartbeat_every DOUBLE PRECISION NOT NULL DEFAULT 5,
                        definitions JSONB NOT NULL DEFAULT '[]'::jsonb,
                        running INTEGER NOT NULL DEFAULT 0,
                        locked INTEGER NOT NULL DEFAULT 0,
                        done BIGINT NOT NULL DEFAULT 0,
                        failed BIGINT NOT NULL DEFAULT 0
                    )"""
                ).format(workers=self._workers)
            )
            await conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {index} ON {workers} (last_seen DESC)").format(
                    index=sql.Identifier(f"{self._workers_name}_last_seen_idx"), workers=self._workers
                )
            )
            await conn.execute(
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {activity} (
                        minute TIMESTAMPTZ PRIMARY KEY,
                        done BIGINT NOT NULL DEFAULT 0,
                        failed BIGINT NOT NULL DEFAULT 0,
                        queued BIGINT
                    )"""
                ).format(activity=self._activity)
            )
        self._ensured = True
        await self._prune()

    async def _prune(self) -> None:
        """Delete the entries and buckets a TTL index would have removed (what MongoDB does itself)."""
        self._pruned_at = time.monotonic()
        async with self._pool.connection() as conn:
            await conn.execute(
                sql.SQL("DELETE FROM {workers} WHERE last_seen < now() - %s").format(workers=self._workers),
                (FORGET_AFTER,),
            )
            await conn.execute(
                sql.SQL("DELETE FROM {activity} WHERE minute < now() - %s").format(activity=self._activity),
                (ACTIVITY_KEPT,),
            )

    @translate_unreachable
    async def write(self, worker_id: ObjectId, doc: dict[str, Any]) -> None:
        row: dict[str, Any] = {"id": str(worker_id)}
        for field, column in _WORKER_COLUMNS.items():
            if field in doc:
                value = doc[field]
                row[column] = json.dumps(value) if field == "definitions" else value
        columns = list(row)
        # lastSeen is the server's clock (clock_timestamp: now() would be the transaction's start).
        statement = sql.SQL(
            "INSERT INTO {workers} ({columns}, last_seen) VALUES ({values}, clock_timestamp()) "
            "ON CONFLICT (id) DO UPDATE SET {updates}, last_seen = EXCLUDED.last_seen"
        ).format(
            workers=self._workers,
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            values=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
            updates=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in columns if c != "id"
            ),
        )
        async with self._pool.connection() as conn:
            await conn.execute(statement, row)
        if self._ensured and (self._pruned_at is None or time.monotonic() - self._pruned_at >= _PRUNE_EVERY):
            await self._prune()

    @translate_unreachable
    async def add_activity(self, minute: datetime, *, done: int, failed: int, queued: int | None) -> None:
        # GREATEST ignores NULLs: a bucket keeps its largest queue sample, or gets its first one.
        statement = sql.SQL(
            "INSERT INTO {a} (minute, done, failed, queued) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (minute) DO UPDATE SET done = {a}.done + EXCLUDED.done, "
            "failed = {a}.failed + EXCLUDED.failed, queued = GREATEST({a}.queued, EXCLUDED.queued)"
        ).format(a=self._activity)
        async with self._pool.connection() as conn:
            await conn.execute(statement, (minute, done, failed, queued))

    @translate_unreachable
    async def workers(self, *, include_stopped: bool) -> list[WorkerInfo]:
        async with self._pool.connection() as conn:
            if not await _table_exists(conn, self._workers_name):
                return []  # no worker has registered in this database yet
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT clock_timestamp() AS now")
            now_row = await cur.fetchone()
            now = _aware(now_row["now"] if now_row else None)
            await cur.execute(
                sql.SQL("SELECT * FROM {workers} ORDER BY last_seen DESC LIMIT %s").format(
                    workers=self._workers
                ),
                (WORKERS_SHOWN,),
            )
            docs = [_worker_document(row) for row in await cur.fetchall()]
            assert now is not None
            states = [worker_state(doc, now) for doc in docs]
            lost = lost_worker_names(docs, states)
            held: dict[str, list[dict[str, Any]]] = {}
            if lost:
                await cur.execute(
                    sql.SQL(
                        "SELECT id, name, locked_at, last_modified_by FROM {jobs} "
                        "WHERE last_modified_by = ANY(%s) AND locked_at IS NOT NULL LIMIT %s"
                    ).format(jobs=self._jobs),
                    (lost, HELD_JOBS_SHOWN * len(lost)),
                )
                for row in await cur.fetchall():
                    mine = held.setdefault(str(row["last_modified_by"]), [])
                    if len(mine) < HELD_JOBS_SHOWN:
                        mine.append(
                            {
                                "id": str(row["id"]),
                                "name": str(row["name"]),
                                "locked_at": _aware(row["locked_at"]),
                            }
                        )
        return worker_infos(docs, states, held, include_stopped=include_stopped)

    @translate_unreachable
    async def activity(self, minutes: int) -> list[dict[str, Any]]:
        first, last = activity_window(minutes)
        docs: list[dict[str, Any]] = []
        async with self._pool.connection() as conn:
            if await _table_exists(conn, self._activity_name):
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "SELECT minute, done, failed, queued FROM {activity} WHERE minute BETWEEN %s AND %s"
                    ).format(activity=self._activity),
                    (first, last),
                )
                docs = [dict(row) for row in await cur.fetchall()]
        return activity_series(docs, first, minutes)


async def _table_exists(conn: AsyncConnection[Any], name: str) -> bool:
    """Whether ``name`` is a table on the search path (reading before any worker registered must not fail)."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(name).as_string(conn),))
    row = await cur.fetchone()
    if row is None:
        return False
    value = row[0] if isinstance(row, tuple | list) else next(iter(dict(row).values()))
    return bool(value)


def _worker_document(row: dict[str, Any]) -> dict[str, Any]:
    """A ``agendapy_workers`` row as the worker document ``agendapy.workers`` reads."""
    doc: dict[str, Any] = {"_id": row["id"], "lastSeen": row["last_seen"]}
    for field, column in _WORKER_COLUMNS.items():
        doc[field] = row.get(column)
    return doc

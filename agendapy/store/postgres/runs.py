"""Run records on PostgreSQL (table ``agendapy_runs``): the rules of ``agendapy.store.runs`` in SQL.

One row per run, shaped by :func:`agendapy.store.runs.new_run_document` (so the id is the same
ObjectId text a MongoDB run record has). ``interval_key`` is UNIQUE: a guarded start inserts with
``ON CONFLICT (interval_key) DO NOTHING``, so of two workers guarding one interval exactly one inserts;
the other either resumes a run still "running" for the same job document (``takeover_filter``) or skips
the interval.

PostgreSQL has no TTL index: records older than ``ttl`` are deleted by ``start`` (at most once a
minute per store, as often as MongoDB's TTL monitor runs) and by every ``trim``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString, Unpack

from psycopg import AsyncConnection, errors, sql
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from ... import schedule as sched
from ...errors import InvalidInput
from ...schedule.ticks import RunInterval
from ..runs import (
    RequiredRuns,
    RunFilter,
    RunRecord,
    RunStart,
    RunStatus,
    new_run_document,
    record_of,
)
from .connection import translate_unreachable
from .schema import check_table_name

__all__ = ["DEFAULT_RUNS_TABLE", "PostgresRunStore", "pg_text", "run_ddl"]

DEFAULT_RUNS_TABLE = "agendapy_runs"
#: Seconds between two deletions of expired records by ``start`` (MongoDB's TTL monitor: 60 s).
_EXPIRE_EVERY = 60.0

#: What a TEXT column refuses: NUL, and lone surrogates (not encodable as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

#: Column -> field of the run document (``new_run_document``) that ``record_of`` reads.
_FIELDS = {
    "id": "_id",
    "name": "name",
    "job_id": "jobId",
    "interval_started_at": "intervalStartedAt",
    "interval_ended_at": "intervalEndedAt",
    "interval_key": "intervalKey",
    "started_at": "startedAt",
    "finished_at": "finishedAt",
    "status": "status",
    "error": "error",
    "worker": "worker",
}
_RECORD_COLUMNS = sql.SQL(", ").join(sql.Identifier(column) for column in _FIELDS)

# The ids are ObjectId text; COLLATE "C" orders them bytewise, as MongoDB orders ObjectIds (the
# tie-break between runs started in the same millisecond).
_DDL: tuple[LiteralString, ...] = (
    """CREATE TABLE IF NOT EXISTS {table} (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        job_id TEXT,
        interval_started_at TIMESTAMPTZ,
        interval_ended_at TIMESTAMPTZ,
        interval_key TEXT NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ,
        status TEXT NOT NULL,
        error TEXT,
        worker TEXT,
        resumed_at TIMESTAMPTZ,
        attempts INTEGER NOT NULL DEFAULT 0
    )""",
    # The once-per-interval guard.
    "CREATE UNIQUE INDEX IF NOT EXISTS {prefix_interval_key_idx} ON {table} (interval_key)",
    # History listings by name and by job document, newest first.
    "CREATE INDEX IF NOT EXISTS {prefix_by_name_idx} ON {table} (name, started_at DESC)",
    "CREATE INDEX IF NOT EXISTS {prefix_by_job_idx} ON {table} (job_id, started_at DESC)",
    # Dependency checks: a required job's runs overlapping an interval, and its first and last.
    "CREATE INDEX IF NOT EXISTS {prefix_by_interval_idx} ON {table} (name, interval_started_at)",
    # Expiry.
    "CREATE INDEX IF NOT EXISTS {prefix_started_at_idx} ON {table} (started_at)",
)


def pg_text(value: Any) -> str | None:
    """``value`` as text PostgreSQL accepts: a NUL or a lone surrogate (which MongoDB stores, but a
    TEXT column refuses) becomes U+FFFD, so an odd error message never fails the write."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return _UNSTORABLE.sub("\ufffd", text)


async def run_ddl(conn: AsyncConnection[Any], table: str, statements: list[sql.Composed]) -> None:
    """Run ``IF NOT EXISTS`` DDL in one transaction under an advisory lock of ``table``, so agendapy
    processes starting at once take turns. A creator outside the lock (Node's ``ensureSchema``) can
    still commit the same table first, failing ours on a catalog key: then the second try finds it."""
    for attempt in (1, 2):
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"agendapy schema {table}"]
                )
                for statement in statements:
                    await conn.execute(statement)
            return
        except (errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateObject):
            if attempt == 2:
                raise


def _date(value: datetime | None) -> datetime | None:
    """A date as BSON stores it: aware UTC, milliseconds."""
    return None if value is None else sched.to_utc(value)


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _record(row: Mapping[str, Any]) -> RunRecord:
    """The record a row stands for (through ``record_of``: an unknown status reads as failed)."""
    return record_of({field: _utc(row[column]) for column, field in _FIELDS.items()})


def _row_key(key: str) -> str:
    """``interval_key`` as stored: TEXT cannot hold the NUL separator of ``interval_key()``. Its
    ``name@end`` form stays unambiguous, since ``end`` is a fixed-length ISO date at the end, and
    apart from the unguarded keys (24 hex digits of an ObjectId)."""
    return key.replace("\x00", "@")


class PostgresRunStore:
    """Run history, once-per-interval guards and dependency coverage in one PostgreSQL table.

    Args:
        pool: the connections (shared with the job store; not closed here).
        table: the table's name (created by :meth:`create_tables`).
        ttl: records whose run started longer ago are deleted (see the module's notes).
        keep_per_name: ``trim`` keeps at most this many records per job name.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        table: str = DEFAULT_RUNS_TABLE,
        ttl: timedelta,
        keep_per_name: int,
    ) -> None:
        if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
            raise InvalidInput("ttl", ttl, "must be a positive timedelta")
        if isinstance(keep_per_name, bool) or not isinstance(keep_per_name, int) or keep_per_name < 0:
            raise InvalidInput("keep_per_name", keep_per_name, "must be an int >= 0")
        self._pool = pool
        # At most 40 characters: the index names add up to 20 to it, within PostgreSQL's 63.
        self._table_name = check_table_name(table)
        self._table = sql.Identifier(self._table_name)
        self._ttl = ttl
        self._keep = keep_per_name
        self._expired_at: float | None = None
        self._insert = self._sql(
            "INSERT INTO {table} ({columns}) VALUES ({values})"
            " ON CONFLICT (interval_key) DO NOTHING RETURNING id",
            values=sql.SQL(", ").join(sql.Placeholder(column) for column in _FIELDS),
        )
        # The same rule as takeover_filter/takeover_update. Run as a statement of its own, it sees a
        # conflicting row another transaction committed while the insert waited for it.
        self._take_over = self._sql(
            "UPDATE {table} SET worker = %(worker)s, resumed_at = %(started_at)s,"
            " attempts = attempts + 1"
            " WHERE interval_key = %(interval_key)s AND status = 'running'"
            " AND job_id IS NOT DISTINCT FROM %(job_id)s RETURNING id"
        )
        self._finish = self._sql("UPDATE {table} SET status = %s, finished_at = %s, error = %s WHERE id = %s")
        self._trim = self._sql(
            "DELETE FROM {table} WHERE name = %(name)s AND status <> 'running'"
            " AND started_at <= (SELECT started_at FROM {table} WHERE name = %(name)s"
            " ORDER BY started_at DESC OFFSET %(keep)s LIMIT 1)"
        )
        self._expiry = self._sql("DELETE FROM {table} WHERE started_at < %s")
        # coverage_filter in interval order, and interval_runs_filter's first and last, in one query:
        # the aggregate always yields one row; the lateral join adds the overlapping runs to it (or
        # one row of NULLs when there are none).
        self._coverage = self._sql(
            "SELECT bounds.first_started_at, bounds.last_started_at, runs.* FROM"
            " (SELECT min(interval_started_at) AS first_started_at,"
            " max(interval_started_at) AS last_started_at FROM {table} WHERE name = %(name)s) bounds"
            " LEFT JOIN LATERAL (SELECT {columns} FROM {table} WHERE name = %(name)s"
            " AND interval_started_at < %(end)s AND interval_ended_at > %(start)s) runs ON TRUE"
            " ORDER BY runs.interval_started_at, runs.id"
        )

    @property
    def table(self) -> str:
        return self._table_name

    def _sql(self, text: LiteralString, **parts: sql.Composable) -> sql.Composed:
        return sql.SQL(text).format(table=self._table, columns=_RECORD_COLUMNS, **parts)

    @translate_unreachable
    async def create_tables(self) -> None:
        """Create the table and its indexes if missing; several processes may run this at once
        (:func:`run_ddl`)."""
        prefix = self._table_name
        suffixes = ("interval_key_idx", "by_name_idx", "by_job_idx", "by_interval_idx", "started_at_idx")
        names = {f"prefix_{suffix}": sql.Identifier(f"{prefix}_{suffix}") for suffix in suffixes}
        async with self._pool.connection() as conn:
            await run_ddl(conn, prefix, [self._sql(statement, **names) for statement in _DDL])

    async def _expire(self, conn: AsyncConnection[Any], *, force: bool) -> None:
        """Delete the records older than the TTL (at most once a minute unless ``force``)."""
        now = time.monotonic()
        if not force and self._expired_at is not None and now - self._expired_at < _EXPIRE_EVERY:
            return
        self._expired_at = now
        await conn.execute(self._expiry, [sched.utcnow() - self._ttl])

    @translate_unreachable
    async def start(self, **run: Unpack[RunStart]) -> str | None:
        """Record a run's start; with ``guard`` it claims ``interval``: None when another run holds it
        (a run still "running" for the same job document is resumed instead: its id is returned)."""
        doc = new_run_document(**run)
        row = {
            "id": str(doc["_id"]),
            "name": doc["name"],
            "job_id": pg_text(doc["jobId"]),
            "interval_started_at": _date(doc["intervalStartedAt"]),
            "interval_ended_at": _date(doc["intervalEndedAt"]),
            "interval_key": _row_key(doc["intervalKey"]),
            "started_at": _date(doc["startedAt"]),
            "finished_at": _date(doc["finishedAt"]),
            "status": doc["status"],
            "error": pg_text(doc["error"]),
            "worker": pg_text(doc["worker"]),
        }
        async with self._pool.connection() as conn:
            await self._expire(conn, force=False)
            cur = conn.cursor(row_factory=tuple_row)
            inserted = await (await cur.execute(self._insert, row)).fetchone()
            if inserted is not None:
                return str(inserted[0])
            resumed = await (await cur.execute(self._take_over, row)).fetchone()
        return None if resumed is None else str(resumed[0])

    @translate_unreachable
    async def finish(
        self, run_id: str, *, status: RunStatus, finished_at: datetime, error: str | None
    ) -> None:
        """Record how a run ended (``finish_update``)."""
        async with self._pool.connection() as conn:
            await conn.execute(self._finish, [status, _date(finished_at), pg_text(error), str(run_id)])

    @translate_unreachable
    async def trim(self, name: str) -> None:
        """Keep at most ``keep_per_name`` records of ``name`` (the newest; running ones stay, as
        ``trim_filter`` says), and delete the expired records of every name."""
        async with self._pool.connection() as conn:
            await self._expire(conn, force=True)
            await conn.execute(self._trim, {"name": name, "keep": self._keep})

    @translate_unreachable
    async def query(self, *, limit: int, **where: Unpack[RunFilter]) -> list[RunRecord]:
        """Run records, newest first (``history_filter``, ``HISTORY_SORT``); ``limit`` 0: all."""
        query, params = self._history(limit, where)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, params)
            return [_record(row) for row in await cur.fetchall()]

    def _history(self, limit: int, where: RunFilter) -> tuple[sql.Composed, list[Any]]:
        """The statement and parameters of ``query``."""
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        for field, column in (("name", "name"), ("job_id", "job_id"), ("status", "status")):
            value = where.get(field)
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(pg_text(value))
        if where["since"] is not None:
            conditions.append(sql.SQL("started_at >= %s"))
            params.append(_date(where["since"]))
        if where["until"] is not None:
            conditions.append(sql.SQL("started_at < %s"))
            params.append(_date(where["until"]))
        filters = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")
        query = self._sql(
            "SELECT {columns} FROM {table} WHERE {filters} ORDER BY started_at DESC, id DESC LIMIT %s",
            filters=filters,
        )
        return query, [*params, limit or None]

    @translate_unreachable
    async def coverage(self, name: str, interval: RunInterval) -> RequiredRuns:
        """The runs of ``name`` whose interval overlaps ``interval`` (``coverage_filter``, in interval
        order), and the first and last interval it ran (``interval_runs_filter``), in one query."""
        params = {"name": name, "start": _date(interval.started_at), "end": _date(interval.ended_at)}
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(self._coverage, params)
            rows = await cur.fetchall()
        return RequiredRuns(
            [_record(row) for row in rows if row["id"] is not None],
            first_started_at=_utc(rows[0]["first_started_at"]),
            last_started_at=_utc(rows[0]["last_started_at"]),
        )

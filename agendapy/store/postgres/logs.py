"""Job logs on PostgreSQL: the table of Node Agenda's ``PostgresJobLogger`` (``agenda_logs``).

The table, its columns and its three indexes are Node's, so a Node process and agendapy write and read
each other's entries. Fields agendapy writes that Node's table has no column for go into ``meta``
(JSONB), as does the exact value of anything a column cannot hold (a text longer than its VARCHAR, an
integer beyond INTEGER), so nothing written is lost and no entry can fail its batch for ever.
Durations and delays are whole milliseconds, as Node writes them.

Entry ids: Node's ``id`` is a UUID. agendapy's writer gives each entry an ObjectId when the event
happens; it is stored as the UUID of its 12 bytes followed by four zero bytes, so a batch retried
after a lost reply inserts nothing twice (``ON CONFLICT (id) DO NOTHING``) and, since PostgreSQL
compares UUIDs bytewise, entries of the same millisecond read back in the order they happened.

PostgreSQL has no TTL index: with a ``ttl``, entries older than it are deleted by ``create_indexes``
and by ``write`` (at most once a minute per store).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

from bson import ObjectId
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ... import schedule as sched
from ...errors import InvalidInput
from ...joblogs import JobLogsResult, LogQuery, entry_from_document
from .connection import translate_unreachable
from .runs import pg_text, run_ddl
from .schema import check_table_name

__all__ = ["DEFAULT_LOGS_TABLE", "PostgresLogStore", "entry_uuid"]

#: Node's default (``PostgresJobLogger``'s ``tableName``).
DEFAULT_LOGS_TABLE = "agenda_logs"
_EXPIRE_EVERY = 60.0
_INT_MAX = 2**31 - 1

# Node's schema (PostgresJobLogger), column for column.
_DDL: tuple[LiteralString, ...] = (
    """CREATE TABLE IF NOT EXISTS {table} (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        timestamp TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        level VARCHAR(10) NOT NULL,
        event VARCHAR(30) NOT NULL,
        job_id VARCHAR(255),
        job_name VARCHAR(255) NOT NULL,
        message TEXT NOT NULL,
        duration INTEGER,
        error TEXT,
        fail_count INTEGER,
        retry_delay INTEGER,
        retry_attempt INTEGER,
        agenda_name VARCHAR(255),
        meta JSONB
    )""",
    "CREATE INDEX IF NOT EXISTS {timestamp_idx} ON {table} (timestamp DESC)",
    "CREATE INDEX IF NOT EXISTS {job_id_idx} ON {table} (job_id, timestamp DESC)",
    "CREATE INDEX IF NOT EXISTS {job_name_idx} ON {table} (job_name, timestamp DESC)",
)

#: Entry field -> (column, VARCHAR length or None for TEXT); Node's JobLogEntry names.
_TEXT_FIELDS: dict[str, tuple[str, int | None]] = {
    "level": ("level", 10),
    "event": ("event", 30),
    "jobId": ("job_id", 255),
    "jobName": ("job_name", 255),
    "message": ("message", None),
    "error": ("error", None),
    "agendaName": ("agenda_name", 255),
}
_INT_FIELDS = {
    "duration": "duration",
    "failCount": "fail_count",
    "retryDelay": "retry_delay",
    "retryAttempt": "retry_attempt",
}
_NOT_NULL = ("level", "event", "jobName", "message")
_COLUMNS = ("id", "timestamp", *(c for c, _ in _TEXT_FIELDS.values()), *_INT_FIELDS.values(), "meta")
#: The type of each of ``_COLUMNS``, for the arrays ``write`` unnests.
_ARRAY_TYPES = ("uuid", "timestamptz", *["text"] * len(_TEXT_FIELDS), *["int4"] * len(_INT_FIELDS), "jsonb")
#: Column -> the field of the entry document ``entry_from_document`` reads.
_FIELD_OF = (
    {"id": "_id", "timestamp": "timestamp", "meta": "meta"}
    | {column: field for field, (column, _) in _TEXT_FIELDS.items()}
    | {column: field for field, column in _INT_FIELDS.items()}
)


def entry_uuid(value: Any) -> uuid.UUID:
    """The ``id`` of an entry whose ``_id`` is ``value`` (an ObjectId, its hex text, or a UUID)."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        if ObjectId.is_valid(value):
            value = ObjectId(value)
        else:
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
    if isinstance(value, ObjectId):
        # Bytes in ObjectId order (seconds, process, counter): ids order as the events happened.
        return uuid.UUID(bytes=value.binary + bytes(4))
    raise InvalidInput("_id", value, "a log entry's id must be an ObjectId or a UUID")


def _json(value: Any) -> Any:
    """``value`` as JSON PostgreSQL's JSONB accepts: text cleaned (``pg_text``: JSONB refuses NUL
    too), and what JSON cannot hold (a date, an ObjectId, NaN...) as text, so the entry is still
    written."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return pg_text(value)
    if isinstance(value, Mapping):
        return {pg_text(str(key)): _json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return pg_text(str(value))


def _row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The row of one entry document (the writer's, in Agenda's field names)."""
    extra: dict[str, Any] = {
        key: value
        for key, value in doc.items()
        if key not in ("_id", "timestamp", "meta") and key not in _TEXT_FIELDS and key not in _INT_FIELDS
    }
    stamp = doc.get("timestamp")
    row: dict[str, Any] = {
        "id": entry_uuid(doc["_id"]) if doc.get("_id") is not None else uuid.uuid4(),
        "timestamp": sched.to_utc(stamp) if isinstance(stamp, datetime) else sched.utcnow(),
    }
    for field, (column, length) in _TEXT_FIELDS.items():
        value = doc.get(field)
        text = pg_text("" if value is None and field in _NOT_NULL else value)
        if text is not None and length is not None and len(text) > length:
            extra[field] = text
            text = text[:length]
        row[column] = text
    for field, column in _INT_FIELDS.items():
        value = doc.get(field)
        number: int | None = None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            # Whole milliseconds, as Node stores them; beyond INTEGER, meta keeps the value.
            number = round(value) if abs(value) <= _INT_MAX else None
            if number is None:
                extra[field] = value
        elif value is not None:
            extra[field] = value
        row[column] = number
    meta = doc.get("meta")
    if isinstance(meta, Mapping):
        extra = {**extra, **meta}
    elif meta is not None:
        extra["meta"] = meta
    row["meta"] = Jsonb(_json(extra)) if extra else None
    return row


def _document(row: Mapping[str, Any]) -> dict[str, Any]:
    """The entry document of a row (Node's or agendapy's), as ``entry_from_document`` reads it."""
    doc = {_FIELD_OF[column]: row[column] for column in _COLUMNS}
    doc["_id"] = str(row["id"])
    stamp = row["timestamp"]
    doc["timestamp"] = stamp.astimezone(UTC) if isinstance(stamp, datetime) else stamp
    return doc


class PostgresLogStore:
    """Job log entries in Node Agenda's ``agenda_logs`` table.

    Args:
        pool: the connections (shared with the job store; not closed here).
        table: the table's name (Node's ``logTableName``).
        ttl: how long entries are kept (None: for ever, as Node keeps them).
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        table: str = DEFAULT_LOGS_TABLE,
        ttl: timedelta | None,
    ) -> None:
        if ttl is not None and (not isinstance(ttl, timedelta) or ttl <= timedelta(0)):
            raise InvalidInput("ttl", ttl, "must be a positive timedelta or None")
        self._pool = pool
        self._table_name = check_table_name(table)
        self._table = sql.Identifier(self._table_name)
        self._ttl = ttl
        self._expired_at: float | None = None

    @property
    def table(self) -> str:
        return self._table_name

    @property
    def ttl(self) -> timedelta | None:
        return self._ttl

    def configured(self, *, table: str, ttl: timedelta | None) -> PostgresLogStore:
        """This store, or one on its pool with another table and TTL: ``agenda.get_logs`` and the log
        writer use the Agenda's ``logs_collection`` and ``logs_ttl`` here, as they do in MongoDB."""
        if (table, ttl) == (self._table_name, self._ttl):
            return self
        return PostgresLogStore(self._pool, table=table, ttl=ttl)

    def _sql(self, text: LiteralString, **parts: sql.Composable) -> sql.Composed:
        return sql.SQL(text).format(table=self._table, **parts)

    @translate_unreachable
    async def create_indexes(self) -> None:
        """Node's table and indexes if missing (:func:`~agendapy.store.postgres.runs.run_ddl`: safe
        when several processes start at once, Node's included), then delete expired entries."""
        names = {
            f"{suffix}_idx": sql.Identifier(f"{self._table_name}_{suffix}_idx")
            for suffix in ("timestamp", "job_id", "job_name")
        }
        async with self._pool.connection() as conn:
            await run_ddl(conn, self._table_name, [self._sql(statement, **names) for statement in _DDL])
            await self._expire(conn, force=True)

    async def _expire(self, conn: AsyncConnection[Any], *, force: bool) -> None:
        if self._ttl is None:
            return
        now = time.monotonic()
        if not force and self._expired_at is not None and now - self._expired_at < _EXPIRE_EVERY:
            return
        self._expired_at = now
        await conn.execute(
            self._sql("DELETE FROM {table} WHERE timestamp < %s"), [sched.utcnow() - self._ttl]
        )

    @translate_unreachable
    async def write(self, docs: Sequence[dict[str, Any]]) -> None:
        """Insert entries in one statement; an entry already stored (same id) is left as it is."""
        if not docs:
            return
        rows = [_row(doc) for doc in docs]
        # One array per column, unnested into rows: one statement whatever the batch size, so its
        # text never changes and the server prepares it once.
        insert = self._sql(
            "INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) ON CONFLICT (id) DO NOTHING",
            columns=sql.SQL(", ").join(sql.Identifier(column) for column in _COLUMNS),
            arrays=sql.SQL(", ").join(sql.SQL(f"%s::{kind}[]") for kind in _ARRAY_TYPES),
        )
        async with self._pool.connection() as conn:
            await self._expire(conn, force=False)
            await conn.execute(insert, [[row[column] for row in rows] for column in _COLUMNS])

    def _where(self, query: LogQuery | None) -> tuple[sql.Composable, list[Any]]:
        """``query`` as a WHERE clause (Node's ``buildWhere``; ``LogQuery.mongo_filter`` in MongoDB)."""
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        if query is not None:
            for column, value in (("job_id", query.job_id), ("job_name", query.job_name)):
                if value is not None:
                    conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                    params.append(pg_text(value))
            for column, values in (("level", query.levels), ("event", query.events)):
                if values is not None:
                    conditions.append(sql.SQL("{} = ANY(%s::text[])").format(sql.Identifier(column)))
                    params.append(list(values))
            if query.since is not None:
                conditions.append(sql.SQL("timestamp >= %s"))
                params.append(sched.to_utc(query.since))
            if query.until is not None:
                conditions.append(sql.SQL("timestamp <= %s"))
                params.append(sched.to_utc(query.until))
        return (sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")), params

    @translate_unreachable
    async def query(self, query: LogQuery) -> JobLogsResult:
        """A page of matching entries by time (then id, so a batch keeps its order) and the total;
        ``limit`` 0 reads all, as in MongoDB."""
        where, params = self._where(query)
        direction = sql.SQL("ASC" if query.sort == "asc" else "DESC")
        page = self._sql(
            "SELECT {columns} FROM {table} WHERE {where}"
            " ORDER BY timestamp {direction}, id {direction} LIMIT %s OFFSET %s",
            columns=sql.SQL(", ").join(sql.Identifier(column) for column in _COLUMNS),
            where=where,
            direction=direction,
        )
        count = self._sql("SELECT count(*) FROM {table} WHERE {where}", where=where)
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(page, [*params, query.limit or None, query.offset])
            rows = await cur.fetchall()
            counted = await (await conn.cursor(row_factory=tuple_row).execute(count, params)).fetchone()
        entries = [entry_from_document(_document(row)) for row in rows]
        return JobLogsResult(entries=entries, total=0 if counted is None else int(counted[0]))

    @translate_unreachable
    async def clear(self, query: LogQuery | None) -> int:
        """Delete the matching entries (all without a query); returns how many."""
        where, params = self._where(query)
        async with self._pool.connection() as conn:
            cur = await conn.execute(self._sql("DELETE FROM {table} WHERE {where}", where=where), params)
            return int(cur.rowcount)

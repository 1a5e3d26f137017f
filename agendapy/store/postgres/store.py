"""The PostgreSQL JobStore: Node Agenda's ``agenda_jobs`` table, on psycopg 3's async pool.

The rules are agendapy's, as for every store (``agendapy.store.queries``): ``every()`` keeps one row
per name (``single_update``), ``unique()`` and debounce upsert (``unique_update``), saves never touch
worker-managed fields. Rows convert to Agenda documents (``schema.row_to_document``), so reading a
row another tool wrote is judged as MongoDB's documents are.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import AsyncConnection, sql

from ...errors import InvalidInput
from ...job import Job
from .._mql import sort_documents
from ..base import ClaimRequest, JobCriteria, JobQuery
from ..common import count_overview
from ..fenced_writes import DEFAULT_STATE_WRITE_WINDOW
from ..schema import job_from_document
from . import notify
from .claims import RunPath
from .connection import PgPool, PostgresConnection, execute, is_connection_error
from .filters import SqlFilter, as_uuid, criteria_sql, order_by, page, query_sql
from .logs import DEFAULT_LOGS_TABLE, PostgresLogStore
from .notify import DEFAULT_CHANNEL
from .runs import DEFAULT_RUNS_TABLE, PostgresRunStore
from .saving import JobSaver
from .schema import (
    COLUMNS,
    DEFAULT_TABLE,
    check_channel_name,
    check_table_name,
    ensure_schema,
    row_to_document,
)

__all__ = ["PostgresJobStore"]

_ALL_COLUMNS = [c.column for c in COLUMNS]
#: ``last_modified_by`` is Node's VARCHAR(255).
_WORKER_NAME_MAX = 255
_EMPTY = sql.SQL("")

P = ParamSpec("P")
R = TypeVar("R")


def _translate_errors(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn "cannot reach the server" into DatabaseUnavailable, naming the server."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (psycopg.Error, OSError) as exc:
            store = args[0]
            if isinstance(store, PostgresJobStore) and is_connection_error(exc):
                raise store.connection.unavailable(exc) from exc
            raise

    return wrapper


class PostgresJobStore:
    """Jobs in one PostgreSQL table, as Node Agenda's postgres backend stores them.

    Args:
        db: a ``postgresql://``/``postgres://`` URL, an ``AsyncConnectionPool`` (not closed by
            :meth:`close`), an ``AsyncConnection`` (a pool to the same server is made from it), or a
            :class:`~agendapy.store.postgres.connection.PostgresConnection`.
        table: the jobs table (Node's default ``agenda_jobs``).
        ensure_schema: create or migrate the tables on connect.
        runs_table: the run records' table.
        logs_table: the job logs' table (Node's ``agenda_logs``, shared with Node).
        history_ttl, history_keep: how long, and how many per name, run records are kept.
        state_write_window: seconds the start and final writes of runs gather before they are sent
            together (0: those issued in the same event-loop turn).
        channel: the LISTEN/NOTIFY channel of job changes; run steps go to ``<channel>:state``. Node's
            backend uses ``agenda:jobs`` whatever its table is called, and so does agendapy by default.
    """

    def __init__(
        self,
        db: Any,
        *,
        table: str = DEFAULT_TABLE,
        ensure_schema: bool = True,
        runs_table: str = DEFAULT_RUNS_TABLE,
        logs_table: str = DEFAULT_LOGS_TABLE,
        history_ttl: timedelta = timedelta(days=30),
        history_keep: int = 1000,
        state_write_window: float = DEFAULT_STATE_WRITE_WINDOW,
        channel: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
    ) -> None:
        self._table = check_table_name(table)
        self._runs_table = check_table_name(runs_table, "runs_table")
        self._logs_table = check_table_name(logs_table, "logs_table")
        self.connection = (
            db
            if isinstance(db, PostgresConnection)
            else PostgresConnection(db, min_size=min_size, max_size=max_size)
        )
        self._ensure_schema = ensure_schema
        self._history_ttl = history_ttl
        self._history_keep = history_keep
        if not isinstance(state_write_window, int | float) or not 0 <= state_write_window <= 1:
            raise InvalidInput("state_write_window", state_write_window, "must be 0 to 1 seconds")
        self._state_write_window = float(state_write_window)
        self._channel = check_channel_name(DEFAULT_CHANNEL if channel is None else channel)
        self._pool: PgPool | None = None
        self._runs: PostgresRunStore | None = None
        self._logs: PostgresLogStore | None = None
        self._saver = JobSaver(self._table, self._channel)
        # The run path (claims, fenced state writes, wake-ups) is pg-claims' RunPath.
        self._path = RunPath(
            lambda: self.pool,
            self._table,
            channel=self._channel,
            window=self._state_write_window,
            unavailable=self.connection.unavailable,
        )

    # -- connection -----------------------------------------------------------------------------

    @property
    def creates_schema(self) -> bool:
        """Whether ``connect()`` creates and migrates the tables (``ensure_index``)."""
        return self._ensure_schema

    def describe(self) -> str:
        """Where this store points, for messages (no password)."""
        return self.connection.describe()

    @property
    def table(self) -> str:
        """The jobs table's name."""
        return self._table

    @property
    def channel(self) -> str:
        """The NOTIFY channel of job changes."""
        return self._channel

    @property
    def state_write_window(self) -> float:
        """Seconds batched state writes gather."""
        return self._state_write_window

    @property
    def pool(self) -> PgPool:
        """The connection pool (connect first)."""
        if self._pool is None:
            raise RuntimeError("the job store is not connected")
        return self._pool

    @property
    def runs(self) -> PostgresRunStore:
        """The run records beside the jobs (connect first)."""
        if self._runs is None:
            raise RuntimeError("the job store is not connected")
        return self._runs

    @property
    def logs(self) -> PostgresLogStore:
        """Job log entries, in Node's logs table (connect first)."""
        if self._logs is None:
            raise RuntimeError("the job store is not connected")
        return self._logs

    def check_worker_name(self, name: str | None) -> None:
        """Raise InvalidInput naming ``name`` when it does not fit ``last_modified_by`` (the worker's name
        goes there on every claim and write; Node made it VARCHAR(255))."""
        if name is not None and len(name) > _WORKER_NAME_MAX:
            raise InvalidInput(
                "name", name, f"a worker name holds at most {_WORKER_NAME_MAX} characters on PostgreSQL"
            )

    async def connect(self) -> None:
        """Open the pool, check the server answers, create or migrate the tables."""
        if self._pool is not None:
            return
        pool = await self.connection.open()
        runs = PostgresRunStore(
            pool, table=self._runs_table, ttl=self._history_ttl, keep_per_name=self._history_keep
        )
        logs = PostgresLogStore(pool, table=self._logs_table, ttl=None)
        try:
            if self._ensure_schema:
                async with pool.connection() as conn:
                    await ensure_schema(conn, self._table)
                await runs.create_tables()
                await logs.create_indexes()
        except psycopg.Error as exc:
            await self.connection.close()
            if is_connection_error(exc):
                raise self.connection.unavailable(exc) from exc
            raise
        self._pool, self._runs, self._logs = pool, runs, logs

    async def close(self) -> None:
        """Close the pool if this store made it (after the pending batched writes)."""
        if self._pool is not None:
            await self._path.drain(timeout=5.0)
        self._pool = None
        self._runs = None
        self._logs = None
        await self.connection.close()

    def _t(self) -> sql.Identifier:
        return sql.Identifier(self._table)

    # -- saving (``saving.JobSaver``) ------------------------------------------------------------

    @_translate_errors
    async def save_job(
        self, job: Job, *, now: datetime, last_modified_by: str | None, lock_token: str | None = None
    ) -> Job | None:
        """Agenda's saveJob: update by id, upsert a recurring or unique job, or insert (locked on the
        fly with ``lock_token``: the lock rides on the insert)."""
        return await self._saver.save_job(
            self.pool, job, now=now, last_modified_by=last_modified_by, lock_token=lock_token
        )

    @_translate_errors
    async def insert_many(self, jobs: Sequence[Job], *, last_modified_by: str | None) -> None:
        """Insert new one-off jobs in one pipelined round trip; sets each job's id."""
        await self._saver.insert_many(self.pool, jobs, last_modified_by=last_modified_by)

    # -- one run's locks and state (pg-claims' modules) ------------------------------------------

    @_translate_errors
    async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
        """Lock up to ``limit`` claimable jobs in claim order, within each name's room (one
        ``UPDATE ... FOR UPDATE SKIP LOCKED`` statement); unreadable rows are failed and skipped."""
        return await self._path.claim(request, token, limit)

    @_translate_errors
    async def save_state(self, job: Job, *, fields: Sequence[str] | None = None) -> bool:
        """Write worker-managed fields, fenced by the lease; False if the job is gone or the lock lost."""
        return await self._path.save_state(job, fields=fields)

    @_translate_errors
    async def save_state_batched(self, job: Job, *, stamp: Collection[str] = ()) -> bool:
        """``save_state`` of every field; the writes of runs within the window go out together."""
        return await self._path.save_state_batched(job, stamp=stamp)

    @_translate_errors
    async def remove_finished(self, job_id: str) -> None:
        """Delete a finished job by id; the deletions within the window go out as one statement."""
        await self._path.remove_finished(job_id)

    def due_changes(self) -> AsyncIterator[tuple[str, datetime | None]]:
        """``(name, nextRunAt)`` of jobs announced claimable on the jobs channel (LISTEN/NOTIFY), by
        agendapy or Node Agenda."""
        return self._path.due_changes()

    async def run_changes(self) -> AsyncIterator[dict[str, Any]]:
        """Run steps (start, progress, end, removal) for fleet events, from the state channel."""
        return await self._path.run_changes()

    @_translate_errors
    async def renew_locks(self, jobs: Sequence[Job], now: datetime) -> list[Job]:
        """Heartbeat: move each lease's ``lockedAt`` to ``now`` (fenced); returns the jobs whose lock
        is gone."""
        return await self._path.renew_locks(jobs, now)

    @_translate_errors
    async def release(self, jobs: Sequence[Job], *, reschedule_at: datetime | None = None) -> None:
        """Unlock leased jobs (fenced); with ``reschedule_at`` they become due then."""
        await self._path.release(jobs, reschedule_at=reschedule_at)

    @_translate_errors
    async def refresh_run_fields(self, job: Job) -> None:
        """Reload lastRunAt, lockedAt and lastFinishedAt (raises JobNotFound)."""
        await self._path.refresh_run_fields(job)

    # -- reading and bulk changes -----------------------------------------------------------------

    @_translate_errors
    async def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None (also for an id that is not a UUID)."""
        uid = as_uuid(job_id)
        if uid is None:
            return None
        async with self.pool.connection() as conn:
            cur = await execute(conn, sql.SQL("SELECT * FROM {t} WHERE id = %s").format(t=self._t()), (uid,))
            row = await cur.fetchone()
        return None if row is None else job_from_document(row_to_document(row))

    async def _select(
        self, where: SqlFilter, order: sql.Composable, tail: sql.Composable = _EMPTY
    ) -> list[dict[str, Any]]:
        statement = sql.SQL("SELECT * FROM {t} WHERE {w} ORDER BY {o}{tail}").format(
            t=self._t(), w=where.where, o=order, tail=tail
        )
        async with self.pool.connection() as conn:
            cur = await execute(conn, statement, where.params)
            return [doc for doc in map(row_to_document, await cur.fetchall()) if where.keeps(doc)]

    @_translate_errors
    async def query(self, query: JobQuery) -> tuple[list[Job], int]:
        """Matching jobs (sorted, skipped, limited) and the total match count."""
        where = query_sql(query)
        order, python_sort = order_by(query.sort)
        if where.python is None and python_sort is None:
            tail = sql.SQL(" OFFSET {}").format(sql.Literal(max(query.skip, 0)))
            if query.limit:
                tail += sql.SQL(" LIMIT {}").format(sql.Literal(query.limit))
            docs = await self._select(where, order, tail)
            async with self.pool.connection() as conn:
                cur = await execute(
                    conn,
                    sql.SQL("SELECT count(*) AS n FROM {t} WHERE {w}").format(t=self._t(), w=where.where),
                    where.params,
                )
                counted = await cur.fetchone()
            return [job_from_document(d) for d in docs], int(counted["n"]) if counted else 0
        docs = await self._all(query)
        return [job_from_document(d) for d in page(docs, query.skip, query.limit)], len(docs)

    async def _all(self, query: JobQuery) -> list[dict[str, Any]]:
        where = query_sql(query)
        order, python_sort = order_by(query.sort)
        docs = await self._select(where, order)
        return docs if python_sort is None else sort_documents(docs, python_sort)

    @_translate_errors
    async def fetch_all_states(self, query: JobQuery) -> list[Job]:
        """Every matching job, sorted (the caller filters by computed state and pages)."""
        return [job_from_document(d) for d in await self._all(query)]

    @_translate_errors
    async def overview(self, now: datetime) -> list[dict[str, Any]]:
        """Per name: total, a count per state, and paused (disabled)."""
        # Every column but the payloads: a value that cannot be read makes its job count as broken.
        columns = sql.SQL(", ").join(
            sql.Identifier(c) for c in ["id", *_ALL_COLUMNS] if c not in ("data", "checkpoint")
        )
        async with self.pool.connection() as conn:
            cur = await execute(conn, sql.SQL("SELECT {c} FROM {t}").format(c=columns, t=self._t()))
            rows = await cur.fetchall()
        return count_overview([row_to_document(r) for r in rows], now)

    async def _matching_ids(self, conn: AsyncConnection[Any], where: SqlFilter) -> list[Any]:
        """The ids of the rows matching (locked until the transaction ends)."""
        cur = await execute(
            conn,
            sql.SQL("SELECT id, data FROM {t} WHERE {w} FOR UPDATE").format(t=self._t(), w=where.where),
            where.params,
        )
        return [row["id"] async for row in cur if where.keeps(row_to_document(row))]

    async def _change(
        self, criteria: JobCriteria, action: sql.Composable, extra: list[Any], *, announce: bool = False
    ) -> int:
        """Run ``action`` (DELETE/UPDATE ``FROM {t}``...) over the rows matching ``criteria``; with
        ``announce``, wake the workers of the names it made claimable (re-enabled jobs)."""
        if criteria.is_empty():
            return 0
        where = criteria_sql(criteria)
        async with self.pool.connection() as conn, conn.transaction():
            if where.python is not None:
                ids = await self._matching_ids(conn, where)
                where = SqlFilter(sql.SQL("id = ANY(%s)"), [ids])
            statement = sql.SQL("{a} AND {w}").format(a=action, w=where.where)
            if announce:
                statement += sql.SQL(" RETURNING *")
            cur = await execute(conn, statement, [*extra, *where.params])
            if announce:
                changed = [row_to_document(row) for row in await cur.fetchall()]
                await notify.publish(conn, notify.due_notes(self._channel, changed, None))
                return len(changed)
            return max(cur.rowcount, 0)

    @_translate_errors
    async def remove(self, criteria: JobCriteria) -> int:
        """Delete matching jobs; empty criteria delete nothing (Agenda's rule)."""
        return await self._change(criteria, sql.SQL("DELETE FROM {t} WHERE TRUE").format(t=self._t()), [])

    @_translate_errors
    async def remove_all(self) -> int:
        """Delete every job."""
        async with self.pool.connection() as conn:
            cur = await execute(conn, sql.SQL("DELETE FROM {t}").format(t=self._t()))
            return max(cur.rowcount, 0)

    @_translate_errors
    async def set_disabled(self, criteria: JobCriteria, disabled: bool) -> int:
        """Disable or enable matching jobs; returns how many changed."""
        action = sql.SQL("UPDATE {t} SET disabled = %s WHERE disabled IS DISTINCT FROM %s").format(
            t=self._t()
        )
        return await self._change(criteria, action, [disabled, disabled], announce=not disabled)

    @_translate_errors
    async def queue_size(self, now: datetime) -> int:
        """How many jobs are due (Agenda's getQueueSize: nextRunAt < now)."""
        async with self.pool.connection() as conn:
            cur = await execute(
                conn,
                sql.SQL("SELECT count(*) AS n FROM {t} WHERE next_run_at < %s").format(t=self._t()),
                (now,),
            )
            row = await cur.fetchone()
        return int(row["n"]) if row else 0

    @_translate_errors
    async def distinct_names(self) -> list[str]:
        """The job names present, in code point order."""
        async with self.pool.connection() as conn:
            cur = await execute(
                conn,
                sql.SQL('SELECT DISTINCT name COLLATE "C" AS name FROM {t} ORDER BY 1').format(t=self._t()),
            )
            return [row["name"] for row in await cur.fetchall()]

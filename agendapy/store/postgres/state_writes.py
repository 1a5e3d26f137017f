"""Fenced state writes on PostgreSQL: one run's write, and the writes of many runs in one round trip.

Every write through a lease carries ``locked_at = <lease's> AND lock_token = <lease's>`` in its
``WHERE``: it applies only while that lock is the stored one (a Node worker that takes a job over
moves ``locked_at``; an agendapy worker moves both). The writes gathered within the state write
window go out as one statement per set of columns, ``UPDATE ... FROM unnest(<arrays>)``, all in one
pipeline: one round trip, and ``RETURNING`` says which rows each write matched.

The same statement sends the notifications Node's backend sends (``agendapy.store.postgres.notify``):
a run's start, progress and end on the state channel, and on the jobs channel a job unlocked with a
next run (a worker hands it back, or a recurring job ends its run), so every worker, Node or Python,
wakes for it. A notification is delivered only if its write applied and committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from ...job import Job
from ..common import fenced_state_write
from ..state_batches import DEFAULT_STATE_WRITE_WINDOW, PendingState, StateBatcher
from .announce import Announcements, publish, state_channel
from .connection import is_connection_error
from .notify import DEFAULT_CHANNEL
from .schema import COLUMNS, column_value, to_millis

__all__ = ["DEFAULT_STATE_WRITE_WINDOW", "StateWrites", "job_uuid"]

log = logging.getLogger("agendapy.store")

_MAX_REFUSAL_MESSAGE = 500

#: The array type a column's values are sent as, by the column's kind.
_ARRAY_TYPES = {"date": "timestamptz", "json": "jsonb", "int": "int", "real": "real", "bool": "boolean"}
#: The columns a fenced write may set: document field -> (column, element type of its array).
_COLUMNS: dict[str, tuple[str, str]] = {
    c.field: (c.column, _ARRAY_TYPES.get(c.kind, "text")) for c in COLUMNS
}


def job_uuid(job_id: Any) -> UUID | None:
    """The UUID of a job id; None for an id that is not one (such a job is simply not found)."""
    if isinstance(job_id, UUID):
        return job_id
    try:
        return UUID(str(job_id))
    except ValueError:
        return None


class _Refused(Exception):
    """The server (or the conversion to its types) refused one job's write; the others stand."""


#: Server errors that refuse one row's values (a check, a range, a too long text), not the batch.
_REFUSALS = (psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.errors.ProgramLimitExceeded)


class StateWrites(StateBatcher[_Refused]):
    """Fenced writes to one jobs table, and the batching of the state writes of runs.

    Args:
        pool: the connection pool (called per write: the store may reconnect).
        table: the jobs table.
        window: seconds the state writes of runs gather before they are sent together (0: those
            issued in the same event-loop turn).
        channel: the jobs notification channel (state notifications go to ``<channel>:state``).
        unavailable: the error a batch's writers get when the server cannot be reached.
    """

    def __init__(
        self,
        pool: Callable[[], AsyncConnectionPool[Any]],
        table: str,
        *,
        window: float = DEFAULT_STATE_WRITE_WINDOW,
        channel: str = DEFAULT_CHANNEL,
        unavailable: Callable[[Exception], Exception] = lambda exc: exc,
    ) -> None:
        super().__init__(window=window)
        self._pool = pool
        self._table = sql.Identifier(table)
        self._channel = channel
        self._unavailable = unavailable
        self._statements: dict[tuple[tuple[str, ...], bool], sql.Composed] = {}
        self._announce = Announcements()

    # -- one write -------------------------------------------------------------------------------

    async def save_state(self, job: Job, fields: Sequence[str] | None = None) -> bool:
        """Write the worker-managed fields (all, or those named), fenced by the lease if there is one."""

        async def write(flt: dict[str, Any], update: dict[str, Any]) -> bool:
            fenced = "lockToken" in flt
            outcome = (await self._send([(job, dict(update["$set"]))], fenced=fenced))[0]
            if isinstance(outcome, _Refused):
                raise outcome.__cause__ or outcome
            return outcome

        return await fenced_state_write(job, fields, write)

    # -- batched writes (the batching is StateBatcher's) --------------------------------------------

    async def _write_leased(self, live: list[tuple[Job, dict[str, Any]]]) -> list[bool | _Refused]:
        return await self._send(live, fenced=True)

    async def _settle_refused(self, entry: PendingState, refused: _Refused) -> None:
        await self._record_refusal(entry.job, entry.values, refused)
        if not entry.done.done():
            entry.done.set_result(False)

    def _refusal_error(self, refused: _Refused) -> Exception:
        cause = refused.__cause__
        return cause if isinstance(cause, Exception) else refused

    async def _remove_ids(self, job_ids: list[str]) -> None:
        uuids = [uuid for uuid in map(job_uuid, job_ids) if uuid is not None]
        if not uuids:
            return
        statement = sql.SQL("DELETE FROM {} WHERE id = ANY(%s::uuid[]) RETURNING id").format(self._table)
        await self._execute([([], statement, [uuids])])

    async def announce_claimed_starts(self, conn: psycopg.AsyncConnection[Any], jobs: Sequence[Job]) -> None:
        """Announce the starts a claim wrote (its runs send no start write), on the claim's connection
        right after it committed, as the start write would have; remembered so their ends are announced.
        A notification lost with the connection is only logged (and those runs' ends are not announced
        either): the claim stands and the runs go on."""
        notes: list[tuple[str, str]] = []
        for job in jobs:
            _, steps = self._announce.notes(job, {"lockedAt": job.locked_at, "lastRunAt": job.last_run_at})
            notes.extend((state_channel(self._channel), step) for step in steps)
        try:
            await publish(conn, notes)
        except psycopg.Error as exc:
            self._announce.forget(str(job.id) for job in jobs)
            log.warning("could not announce the start of %d claimed run(s): %s", len(jobs), exc)

    # -- the statements --------------------------------------------------------------------------

    async def _send(
        self, entries: list[tuple[Job, dict[str, Any]]], *, fenced: bool
    ) -> list[bool | _Refused]:
        """Send the writes (one statement per set of columns, all in one pipeline); each one's outcome."""
        outcomes: list[bool | _Refused | None] = [None] * len(entries)
        groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
        rows: dict[int, dict[str, Any]] = {}  # each write's values as their columns take them
        for index, (job, values) in enumerate(entries):
            uuid = job_uuid(job.id)
            if uuid is None:
                outcomes[index] = False
                continue
            try:
                rows[index] = {key: column_value(key, value) for key, value in values.items()}
            except (TypeError, ValueError) as exc:
                refusal = _Refused(f"{exc}")
                refusal.__cause__ = exc
                outcomes[index] = refusal
                continue
            # A job written twice in one batch goes in a second statement (one UPDATE changes a row once).
            keys, round_ = tuple(sorted(values)), 0
            while any(entries[i][0].id == job.id for i in groups.get((keys, round_), [])):
                round_ += 1
            groups.setdefault((keys, round_), []).append(index)
        sent = [index for members in groups.values() for index in members]
        notes = {index: self._announce.notes(*entries[index]) for index in sent}
        statements = [
            (members, self._statement(keys, fenced), self._params(entries, members, keys, notes, rows))
            for (keys, _), members in groups.items()
        ]
        try:
            applied = await self._execute(statements)
        except _REFUSALS:
            # One row's values were refused and the batch with it: each write again on its own,
            # so the refusal falls on its job alone.
            applied = set()
            for members, statement, _ in statements:
                for index in members:
                    keys = tuple(sorted(entries[index][1]))
                    try:
                        params = self._params(entries, [index], keys, notes, rows)
                        applied |= await self._execute([([index], statement, params)])
                    except _REFUSALS as exc:
                        refusal = _Refused(str(exc).strip())
                        refusal.__cause__ = exc
                        outcomes[index] = refusal
        for index, (job, _) in enumerate(entries):
            if outcomes[index] is None:
                outcomes[index] = str(job.id) in applied
        return [False if outcome is None else outcome for outcome in outcomes]

    async def _execute(self, statements: list[tuple[list[int], sql.Composed, list[Any]]]) -> set[str]:
        """Run the statements in one pipeline (one round trip); the ids of the rows they matched.
        Losing the server is the store's "unavailable" error wherever it happens (in the per-row
        retry of a refused batch too), so the run path retries it."""
        try:
            return await self._run_statements(statements)
        except psycopg.Error as exc:
            if is_connection_error(exc):
                raise self._unavailable(exc) from exc
            raise

    async def _run_statements(self, statements: list[tuple[list[int], sql.Composed, list[Any]]]) -> set[str]:
        async with self._pool().connection() as conn:
            cursors = [conn.cursor(row_factory=tuple_row) for _ in statements]
            if len(statements) == 1:
                await cursors[0].execute(statements[0][1], statements[0][2])
            else:
                async with conn.pipeline():
                    for cursor, (_, statement, params) in zip(cursors, statements, strict=True):
                        await cursor.execute(statement, params)
            applied: set[str] = set()
            for cursor in cursors:
                applied.update(str(row[0]) for row in await cursor.fetchall())
            return applied

    def _statement(self, keys: tuple[str, ...], fenced: bool) -> sql.Composed:
        """``UPDATE ... FROM unnest(<one array per column>)``, fenced or by id, with its notifications."""
        cached = self._statements.get((keys, fenced))
        if cached is not None:
            return cached
        columns = [_COLUMNS[key] for key in keys]
        names = [sql.Identifier(f"c{i}") for i in range(len(columns))]
        arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(kind)) for _, kind in columns)
        sets = sql.SQL(", ").join(
            sql.SQL("{} = v.{}").format(sql.Identifier(column), name)
            for (column, _), name in zip(columns, names, strict=True)
        )
        fence = sql.SQL(" AND t.locked_at = v.fence_at AND t.lock_token = v.fence_token" if fenced else "")
        statement = sql.SQL(
            "WITH v AS (SELECT * FROM unnest(%s::uuid[], %s::timestamptz[], %s::text[], %s::text[],"
            " %s::text[], {arrays}) AS v(id, fence_at, fence_token, due, states, {names})),"
            " u AS (UPDATE {table} AS t SET {sets} FROM v WHERE t.id = v.id{fence}"
            " RETURNING t.id, t.disabled IS NOT TRUE AND t.next_run_at IS NOT NULL AS claimable)"
            " SELECT u.id, CASE WHEN v.due IS NOT NULL AND u.claimable THEN pg_notify(%s, v.due) END,"
            " (SELECT count(pg_notify(%s, s)) FROM unnest(string_to_array(v.states, E'\\n')) AS s)"
            " FROM u JOIN v ON v.id = u.id"
        ).format(arrays=arrays, names=sql.SQL(", ").join(names), table=self._table, sets=sets, fence=fence)
        self._statements[(keys, fenced)] = statement
        return statement

    def _params(
        self,
        entries: list[tuple[Job, dict[str, Any]]],
        members: list[int],
        keys: tuple[str, ...],
        notes: dict[int, tuple[str | None, list[str]]],
        rows: dict[int, dict[str, Any]],
    ) -> list[Any]:
        ids, fence_at, tokens, due, states = [], [], [], [], []
        for index in members:
            job = entries[index][0]
            lease = job.lease
            ids.append(job_uuid(job.id))
            fence_at.append(lease.locked_at if lease else None)
            tokens.append(lease.token if lease else None)
            note, steps = notes[index]
            due.append(note)
            states.append("\n".join(steps) if steps else None)
        columns = [[rows[i][key] for i in members] for key in keys]
        return [ids, fence_at, tokens, due, states, *columns, self._channel, state_channel(self._channel)]

    async def _record_refusal(self, job: Job, values: dict[str, Any], refused: _Refused) -> None:
        """A run's state was refused (a value the column cannot hold): fail and unlock the job, fenced,
        with only the failure and its next run, so it is not claimed again only to be refused again.
        If even that is refused, only unlock it."""
        lease = job.lease
        assert lease is not None
        lease.finishing = True
        message = str(refused)
        if len(message) > _MAX_REFUSAL_MESSAGE:
            message = message[:_MAX_REFUSAL_MESSAGE] + " ... (message cut)"
        reason = f"agendapy could not save this run's state: {message}"
        now = to_millis(datetime.now(UTC))
        next_run = values.get("nextRunAt")
        fence = sql.SQL("WHERE id = %s AND locked_at = %s AND lock_token = %s")
        failure = sql.SQL(
            "UPDATE {} SET failed_at = %s, fail_reason = %s, fail_count = coalesce(fail_count, 0) + 1,"
            " next_run_at = %s, locked_at = NULL, lock_token = NULL {} RETURNING fail_count"
        ).format(self._table, fence)
        unlock = sql.SQL("UPDATE {} SET locked_at = NULL, lock_token = NULL {} RETURNING NULL").format(
            self._table, fence
        )
        key = [job_uuid(job.id), lease.locked_at, lease.token]
        async with lease.write_lock:
            if lease.lost:
                return
            try:
                async with self._pool().connection() as conn:
                    cursor = conn.cursor(row_factory=tuple_row)
                    try:
                        await cursor.execute(failure, [now, reason, next_run, *key])
                        recorded = True
                    except _REFUSALS:
                        await cursor.execute(unlock, key)
                        recorded = False
                    row = await cursor.fetchone()
            except Exception as exc:
                log.error(
                    "could not unlock %s (%s) after its state was refused (%s): %s",
                    job.name,
                    job.id,
                    message,
                    exc,
                )
                return
        if row is None:
            return  # removed, or its lock taken over: nothing of this run is to be written
        job.locked_at = None
        if recorded:
            job.fail_reason, job.failed_at, job.next_run_at, job.fail_count = reason, now, next_run, row[0]
        log.error(
            "the state of %s (%s) was refused; %s: %s",
            job.name,
            job.id,
            "recorded as failed and unlocked" if recorded else "unlocked",
            message,
        )

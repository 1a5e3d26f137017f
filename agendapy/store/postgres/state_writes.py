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

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from ...job import Job
from ..common import fenced_state_write
from ..fenced_writes import DEFAULT_STATE_WRITE_WINDOW, _state_values
from ..schema import STATE_KEYS
from .announce import Announcements, state_channel
from .notify import DEFAULT_CHANNEL
from .schema import COLUMNS, column_value, to_millis

__all__ = ["DEFAULT_STATE_WRITE_WINDOW", "StateWrites", "job_uuid"]

log = logging.getLogger("agendapy.store")

#: A gathered batch this large is written at once, without waiting for the window to close.
_MAX_STATE_BATCH = 200
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


@dataclasses.dataclass
class _Pending:
    job: Job
    values: dict[str, Any]
    stamp: frozenset[str]
    done: asyncio.Future[bool]


class StateWrites:
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
        self._pool = pool
        self._table = sql.Identifier(table)
        self._window = window
        self._channel = channel
        self._unavailable = unavailable
        self._pending: list[_Pending] = []
        self._timer: asyncio.Handle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
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

    # -- batched writes --------------------------------------------------------------------------

    async def queue(self, job: Job, stamp: Collection[str]) -> bool:
        """``save_state`` of every field of a leased job, sent with the batch it falls into (see
        ``agendapy.store.fenced_writes.FencedWrites.queue``: same window, stamps and group commit)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        values = _state_values(job)  # fixed now: a later heartbeat must not change this write
        keys = frozenset(STATE_KEYS[attr] for attr in stamp) & values.keys()
        self._pending.append(_Pending(job, values, keys, done))
        if len(self._pending) >= _MAX_STATE_BATCH:
            self._start_flush()
        elif self._timer is None:
            if self._window > 0:
                self._timer = loop.call_later(self._window, self._start_flush)
            else:
                self._timer = loop.call_soon(self._start_flush)
        return await done

    async def drain(self, timeout: float) -> None:
        """Send the queued writes now and wait for them (at most ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._pending or self._flushes) and loop.time() < deadline:
            self._start_flush()
            await asyncio.wait(set(self._flushes), timeout=max(deadline - loop.time(), 0.01))

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushes:
            return  # one batch in flight: this one follows when it returns
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._pending:
            self._start_flush()

    async def _flush(self, batch: list[_Pending]) -> None:
        written_at = to_millis(datetime.now(UTC))
        for entry in batch:
            for key in entry.stamp:
                entry.values[key] = written_at
            if entry.values.get("lockedAt") is not None:
                entry.values["lockedAt"] = written_at  # one lockedAt for the batch: one fence for it
        try:
            results = await self.outcomes([(entry.job, entry.values) for entry in batch])
        except Exception as exc:
            for entry in batch:
                if not entry.done.done():
                    entry.done.set_exception(exc)
            return
        refused = []
        for entry, outcome in zip(batch, results, strict=True):
            if isinstance(outcome, _Refused):
                refused.append((entry, outcome))
                continue
            if outcome:
                for attr in ("locked_at", "last_run_at", "last_finished_at"):
                    if STATE_KEYS[attr] in entry.values:
                        setattr(entry.job, attr, entry.values[STATE_KEYS[attr]])
            if not entry.done.done():
                entry.done.set_result(outcome)
        for entry, refusal in refused:  # after the others are answered
            await self._record_refusal(entry.job, entry.values, refusal)
            if not entry.done.done():
                entry.done.set_result(False)

    async def apply(self, entries: list[tuple[Job, dict[str, Any]]]) -> list[bool]:
        """:meth:`outcomes` for writers that cannot take a refusal (heartbeats, releases)."""
        outcomes = await self.outcomes(entries)
        for outcome in outcomes:
            if isinstance(outcome, _Refused):
                raise outcome.__cause__ or outcome
        return [bool(outcome) for outcome in outcomes]

    async def outcomes(self, entries: list[tuple[Job, dict[str, Any]]]) -> list[bool | _Refused]:
        """Set ``values`` on each leased job, fenced by its lease, in one round trip; which applied.
        A lease's ``locked_at`` follows the ``lockedAt`` its write set."""
        async with contextlib.AsyncExitStack() as stack:
            for job, _ in entries:
                assert job.lease is not None
                await stack.enter_async_context(job.lease.write_lock)
            live = [(job, values) for job, values in entries if job.lease and not job.lease.lost]
            results = await self._send(live, fenced=True) if live else []
            outcome = dict(zip((id(job) for job, _ in live), results, strict=True))
            for job, values in live:
                if outcome[id(job)] is True and job.lease is not None and values.get("lockedAt") is not None:
                    job.lease.locked_at = values["lockedAt"]
            return [outcome.get(id(job), False) for job, _ in entries]

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
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        for index, (job, _) in enumerate(entries):
            if outcomes[index] is None:
                outcomes[index] = str(job.id) in applied
        return [False if outcome is None else outcome for outcome in outcomes]

    async def _execute(self, statements: list[tuple[list[int], sql.Composed, list[Any]]]) -> set[str]:
        """Run the statements in one pipeline (one round trip); the ids of the rows they matched."""
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

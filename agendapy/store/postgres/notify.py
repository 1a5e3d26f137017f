"""LISTEN/NOTIFY: wake-ups and run changes on PostgreSQL, in Node Agenda's notification formats.

Node's ``@agendajs/postgres-backend`` publishes two kinds of notifications, and so does agendapy, so
a Node worker and an agendapy worker sharing one table wake each other:

- on the jobs channel (``agenda:jobs`` by default), a job that may have become claimable (saved, rescheduled,
  unlocked, re-enabled): ``{"jobId", "jobName", "nextRunAt", "priority", "timestamp", "source"}``;
- on ``<channel>:state``, a step of a run: ``{"type": "start" | "progress" | "success" | "fail" |
  "retry" | "complete", "jobId", "jobName", "timestamp", "source", ...}`` with the step's fields
  (``progress``, ``error``, ``failCount``, ``retryAt``, ``retryAttempt``, ``duration``, ``lastRunAt``,
  ``lastFinishedAt``).

Dates are ISO 8601 in UTC with milliseconds (JavaScript's ``toISOString``); absent fields are left
out, as ``JSON.stringify`` leaves out ``undefined``. Listening takes a connection of its own (never
one of the pool's), which is re-opened after a connection loss; workers still poll, so a wake-up
lost meanwhile only delays a job until the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ...errors import DatabaseUnavailable
from ..base import WakeUpsUnavailable

# The payloads and their sending live in .announce; they are named here too (where the formats are told).
from .announce import (
    Announcements,
    claimable,
    due_notes,
    due_payload,
    iso,
    publish,
    state_channel,
    state_payload,
)
from .connection import unreachable
from .schema import row_to_document

__all__ = [
    "DEFAULT_CHANNEL",
    "Announcements",
    "change_of",
    "claimable",
    "due_changes",
    "due_notes",
    "due_payload",
    "iso",
    "parse_due",
    "publish",
    "run_changes",
    "state_channel",
    "state_payload",
]

log = logging.getLogger("agendapy.store")

#: Node's default jobs channel. Not the table's name: ``PostgresBackend`` passes its ``channelName``
#: option (unset by default) to its channel, whose own default is ``agenda:jobs`` (checked against
#: ``@agendajs/postgres-backend`` 3.0.6; its log line and typings say ``agenda_jobs``, which is not
#: what it listens on). Run steps go to ``agenda:jobs:state``.
DEFAULT_CHANNEL = "agenda:jobs"
#: The longest pause between two attempts to re-open a lost listening connection (seconds).
_MAX_REOPEN_PAUSE = 5.0


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# -- listening -------------------------------------------------------------------------------------


async def _connect_params(pool: AsyncConnectionPool[Any]) -> tuple[str, dict[str, Any]]:
    """The pool's connection string and arguments (each may be given as a function)."""
    conninfo: Any = pool.conninfo
    kwargs: Any = pool.kwargs
    if callable(conninfo):
        conninfo = conninfo()
        conninfo = await conninfo if inspect.isawaitable(conninfo) else conninfo
    if callable(kwargs):
        kwargs = kwargs()
        kwargs = await kwargs if inspect.isawaitable(kwargs) else kwargs
    return str(conninfo), dict(kwargs or {})


async def _listening_connection(
    pool: AsyncConnectionPool[Any], channels: Sequence[str]
) -> psycopg.AsyncConnection[Any]:
    """A connection of its own (the pool's settings, outside its working set) listening on ``channels``."""
    conninfo, kwargs = await _connect_params(pool)
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, **{**kwargs, "autocommit": True})
    except psycopg.OperationalError as exc:
        raise unreachable(exc) from exc
    try:
        for channel in channels:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    except psycopg.OperationalError as exc:
        await conn.close()
        raise unreachable(exc) from exc
    except psycopg.Error as exc:
        # Connected, but LISTEN is refused (a pooler in transaction mode, a restricted role).
        await conn.close()
        raise WakeUpsUnavailable(f"PostgreSQL refused LISTEN: {exc}") from exc
    return conn


async def _notifications(
    pool: AsyncConnectionPool[Any], channels: Sequence[str], conn: psycopg.AsyncConnection[Any]
) -> AsyncIterator[psycopg.Notify]:
    """The notifications on ``channels``, from ``conn`` and after a connection loss from new ones."""
    pause = 0.1
    try:
        while True:
            try:
                async for note in conn.notifies():
                    pause = 0.1
                    yield note
            except psycopg.OperationalError as exc:
                log.info("listening connection lost (%s); re-opening it", exc)
            await conn.close()
            while True:
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_REOPEN_PAUSE)
                try:
                    conn = await _listening_connection(pool, channels)
                    break
                except DatabaseUnavailable as exc:
                    log.info("cannot re-open the listening connection (%s); retrying", exc)
    finally:
        await conn.close()


async def due_changes(
    pool: AsyncConnectionPool[Any], channel: str = DEFAULT_CHANNEL
) -> AsyncIterator[tuple[str, datetime | None]]:
    """``(name, nextRunAt)`` of the jobs announced on the jobs channel, by agendapy or Node Agenda.

    Raises WakeUpsUnavailable when the server refuses LISTEN (the worker then polls only).
    """
    conn = await _listening_connection(pool, [channel])
    async for note in _notifications(pool, [channel], conn):
        due = parse_due(note.payload)
        if due is not None:
            yield due


def parse_due(payload: str) -> tuple[str, datetime | None] | None:
    """``(jobName, nextRunAt)`` of a jobs channel payload; None for one that is not Node's format."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("jobName"), str):
        return None
    return data["jobName"], _parse_iso(data.get("nextRunAt"))


async def run_changes(
    pool: AsyncConnectionPool[Any], channel: str = DEFAULT_CHANNEL, *, table: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Start listening on the state channel; its notifications (any writer's) as change events.

    Each event has the shape of a MongoDB change stream's (what ``agendapy.fleet_events`` reads):
    ``operationType``, ``documentKey``, ``updateDescription.updatedFields`` (what the notification
    tells) and a ``fullDocument``: with ``table``, the job's row as it is now (read once for the
    notifications that arrived together, as a change stream looks documents up), else, or once the
    row is gone, what the notification tells. Every notification sent after this returns is in it.
    """
    channels = [state_channel(channel)]
    conn = await _listening_connection(pool, channels)
    return _run_changes(_notifications(pool, channels, conn), pool, table)


async def _run_changes(
    notes: AsyncIterator[psycopg.Notify], pool: AsyncConnectionPool[Any], table: str | None
) -> AsyncIterator[dict[str, Any]]:
    arrived: asyncio.Queue[str] = asyncio.Queue()

    async def pump() -> None:
        async for note in notes:
            arrived.put_nowait(note.payload)

    pumping = asyncio.create_task(pump(), name="agendapy: state notifications")
    try:
        while True:
            waiting = asyncio.ensure_future(arrived.get())
            await asyncio.wait({waiting, pumping}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                waiting.cancel()
                pumping.result()  # the listening failed: its error ends the stream
                return
            payloads = [waiting.result()]
            while not arrived.empty():
                payloads.append(arrived.get_nowait())
            changes = [change for change in map(change_of, payloads) if change is not None]
            if table is not None and changes:
                await _look_up(pool, table, changes)
            for change in changes:
                yield change
    finally:
        pumping.cancel()
        await asyncio.gather(pumping, return_exceptions=True)
        await cast(Any, notes).aclose()


async def _look_up(pool: AsyncConnectionPool[Any], table: str, changes: list[dict[str, Any]]) -> None:
    """Put each job's current row in its change's ``fullDocument`` (one read for all of them)."""
    ids = []
    for change in changes:
        with contextlib.suppress(ValueError):
            ids.append(UUID(change["documentKey"]["_id"]))
    if not ids:
        return
    try:
        async with pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            statement = sql.SQL("SELECT * FROM {} WHERE id = ANY(%s)").format(sql.Identifier(table))
            await cursor.execute(statement, [ids])
            rows = {str(row["id"]): row_to_document(row) for row in await cursor.fetchall()}
    except psycopg.Error as exc:
        # The events still carry what the notifications tell; the rest of the job is missing.
        log.info("fleet events: cannot read the jobs that changed (%s)", exc)
        return
    for change in changes:
        found = rows.get(change["documentKey"]["_id"])
        if found is not None:
            change["fullDocument"] = found


def change_of(payload: str) -> dict[str, Any] | None:
    """The change event a state notification stands for; None for steps that add nothing.

    A ``success`` or ``fail`` ends the run (the event releases the lock): fleet events then emit
    both it and ``complete``, so Node's separate ``complete`` (and ``retry``, whose date a ``fail``
    from agendapy carries as ``retryAt``) are left out.
    """
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    kind, job_id, name = data.get("type"), data.get("jobId"), data.get("jobName")
    if (
        not isinstance(job_id, str)
        or not isinstance(name, str)
        or kind not in ("start", "progress", "success", "fail")
    ):
        return None  # fmt: skip
    at = _parse_iso(data.get("timestamp")) or datetime.now(UTC)
    last_run = _parse_iso(data.get("lastRunAt"))
    finished = _parse_iso(data.get("lastFinishedAt")) or at
    updated: dict[str, Any]
    if kind == "start":
        updated = {"lastRunAt": last_run or at, "lockedAt": at}
    elif kind == "progress":
        progress = data.get("progress")
        if not isinstance(progress, int | float) or isinstance(progress, bool):
            return None
        updated = {"progress": progress, "lockedAt": at}
    else:
        updated = {"lastFinishedAt": finished, "lockedAt": None}
        if kind == "fail":
            error = data.get("error")
            updated.update(failedAt=finished, failReason=error if isinstance(error, str) else "failed")
            if isinstance(data.get("failCount"), int):
                updated["failCount"] = data["failCount"]
            retry_at = _parse_iso(data.get("retryAt"))
            if retry_at is not None:
                updated["nextRunAt"] = retry_at
        if last_run is not None:
            updated["lastRunAt"] = last_run
    full: dict[str, Any] = {"_id": job_id, "name": name, **updated}
    if last_run is not None:
        full["lastRunAt"] = last_run
    if isinstance(data.get("source"), str):
        full["lastModifiedBy"] = data["source"]
    return {
        "operationType": "update",
        "documentKey": {"_id": job_id},
        "updateDescription": {"updatedFields": updated, "removedFields": []},
        "fullDocument": full,
    }

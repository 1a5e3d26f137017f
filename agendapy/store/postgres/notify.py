"""LISTEN/NOTIFY: wake-ups and run changes on PostgreSQL, in Node Agenda's notification formats.

Node's ``@agendajs/postgres-backend`` publishes two kinds of notifications, and so does agendapy, so
a Node worker and an agendapy worker sharing one table wake each other:

- on the jobs channel (``agenda_jobs``), a job that may have become claimable (saved, rescheduled,
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
import inspect
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ...job import Job
from ..base import WakeUpsUnavailable
from .schema import to_millis

__all__ = [
    "DEFAULT_CHANNEL",
    "Announcements",
    "due_changes",
    "due_payload",
    "publish",
    "run_changes",
    "state_channel",
    "state_payload",
]

log = logging.getLogger("agendapy.store")

#: Node's default jobs channel.
DEFAULT_CHANNEL = "agenda_jobs"
#: The longest pause between two attempts to re-open a lost listening connection (seconds).
_MAX_REOPEN_PAUSE = 5.0
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; a longer error text is cut.
_MAX_ERROR_TEXT = 2000
#: How many runs' starts are remembered (to announce their ends).
_REMEMBERED_STARTS = 10_000


def state_channel(channel: str) -> str:
    """The channel of run-state notifications beside a jobs channel (Node's ``<channel>:state``)."""
    return f"{channel}:state"


def iso(value: datetime) -> str:
    """A date as JavaScript's ``toISOString`` writes it: UTC, milliseconds, ``Z``."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _compact(fields: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in fields.items() if v is not None}, separators=(",", ":"))


def due_payload(
    job_id: str, name: str, next_run_at: datetime | None, priority: int, source: str | None
) -> str:
    """The jobs channel's payload for a job that may have become claimable (Node's format)."""
    return json.dumps(
        {
            "jobId": job_id,
            "jobName": name,
            "nextRunAt": None if next_run_at is None else iso(next_run_at),
            "priority": priority,
            "timestamp": iso(datetime.now(UTC)),
            **({"source": source} if source else {}),
        },
        separators=(",", ":"),
    )


def state_payload(kind: str, job_id: str, name: str, source: str | None, **fields: Any) -> str:
    """A state channel payload (Node's format): ``fields`` are the step's, dates as datetimes."""
    values = {k: iso(v) if isinstance(v, datetime) else v for k, v in fields.items()}
    if isinstance(values.get("error"), str) and len(values["error"]) > _MAX_ERROR_TEXT:
        values["error"] = values["error"][:_MAX_ERROR_TEXT] + " ... (cut)"
    return _compact(
        {"type": kind, "jobId": job_id, "jobName": name, "timestamp": iso(datetime.now(UTC)),
         "source": source, **values}
    )  # fmt: skip


async def publish(conn: psycopg.AsyncConnection[Any], notes: Sequence[tuple[str, str]]) -> None:
    """Send ``(channel, payload)`` notifications in one statement (delivered when it commits)."""
    if notes:
        channels, payloads = zip(*notes, strict=True)
        await conn.execute(
            "SELECT count(pg_notify(c, p)) FROM unnest(%s::text[], %s::text[]) AS n(c, p)",
            [list(channels), list(payloads)],
        )


def claimable(doc: Mapping[str, Any]) -> bool:
    """Whether a document, as written, is one a claim could take (unlocked, enabled, with a next run)."""
    return (
        doc.get("lockedAt") is None and doc.get("nextRunAt") is not None and doc.get("disabled") is not True
    )


def due_notes(channel: str, docs: Iterable[Mapping[str, Any]], source: str | None) -> list[tuple[str, str]]:
    """The jobs channel's notifications for written documents a claim could now take (saved, inserted,
    re-enabled): one per job name, its earliest next run, so a bulk insert does not flood every
    listener (a wake-up is about a name: the worker then claims whatever of it is due).

    ``PostgresJobStore`` sends them (:func:`publish`) after such writes, as Node's ``Job.save`` does.
    """
    earliest: dict[str, Mapping[str, Any]] = {}
    for doc in docs:
        name = doc.get("name")
        if "_id" not in doc or not isinstance(name, str) or not claimable(doc):
            continue
        kept = earliest.get(name)
        if kept is None or doc["nextRunAt"] < kept["nextRunAt"]:
            earliest[name] = doc
    return [
        (channel, due_payload(str(doc["_id"]), name, doc["nextRunAt"], _priority(doc), source))
        for name, doc in earliest.items()
    ]


def _priority(doc: Mapping[str, Any]) -> int:
    priority = doc.get("priority")
    return priority if isinstance(priority, int) and not isinstance(priority, bool) else 0


class Announcements:
    """What a fenced write announces, as Node's worker would for the same step of a run.

    The start of a run is remembered (job id -> lastRunAt) so that its end is announced: a write that
    unlocks a job without a start this process wrote (a skipped run, one waiting for its
    requirements, a hand-back) ends no run.
    """

    def __init__(self) -> None:
        self._started: OrderedDict[str, datetime] = OrderedDict()

    def notes(self, job: Job, values: Mapping[str, Any]) -> tuple[str | None, list[str]]:
        """The jobs channel payload (a job left claimable) and the state payloads of one write."""
        job_id, source = str(job.id), values.get("lastModifiedBy") or job.last_modified_by
        due = None
        if "lockedAt" in values and values["lockedAt"] is None:
            next_run = values.get("nextRunAt", job.next_run_at)
            # Sent only if the row, as written, is enabled with a next run (decided in the statement).
            if next_run is not None:
                due = due_payload(job_id, job.name, next_run, job.priority, source)
        steps: list[str] = []
        if values.get("lockedAt") is not None:
            started = values.get("lastRunAt")
            if started is not None and started != self._started.get(job_id):
                self._started.pop(job_id, None)
                self._started[job_id] = started
                while len(self._started) > _REMEMBERED_STARTS:
                    self._started.popitem(last=False)
                steps.append(state_payload("start", job_id, job.name, source, lastRunAt=started))
            elif values.get("progress") is not None and job_id in self._started:
                steps.append(state_payload("progress", job_id, job.name, source, progress=values["progress"]))
        elif "lockedAt" in values and values.get("lastFinishedAt") is not None and job_id in self._started:
            steps = self._end(job, values, job_id, source, self._started.pop(job_id))
        return due, steps

    @staticmethod
    def _end(
        job: Job, values: Mapping[str, Any], job_id: str, source: str | None, started: datetime
    ) -> list[str]:
        """``success`` or ``fail`` [``retry``] and ``complete``, as Node's worker announces a run's end."""
        finished = values["lastFinishedAt"]
        times = {"lastRunAt": started, "lastFinishedAt": finished}
        duration = int((finished - started).total_seconds() * 1000)
        failed_at = values.get("failedAt")
        steps = []
        if failed_at is not None and to_millis(failed_at) == to_millis(finished):
            next_run = values.get("nextRunAt")
            retry = (
                next_run is not None and not job.repeat_interval and not job.repeat_at and next_run > finished
            )
            retry_fields = {"retryAt": next_run, "retryAttempt": values.get("failCount")} if retry else {}
            steps.append(
                state_payload(
                    "fail",
                    job_id,
                    job.name,
                    source,
                    error=values.get("failReason"),
                    failCount=values.get("failCount"),
                    **retry_fields,
                    **times,
                )
            )
            if retry:
                steps.append(
                    state_payload(
                        "retry", job_id, job.name, source, error=values.get("failReason"), **retry_fields
                    )
                )
        else:
            steps.append(state_payload("success", job_id, job.name, source, duration=duration, **times))
        steps.append(state_payload("complete", job_id, job.name, source, duration=duration, **times))
        return steps


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
    conn = await psycopg.AsyncConnection.connect(conninfo, **{**kwargs, "autocommit": True})
    try:
        for channel in channels:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    except psycopg.OperationalError:
        await conn.close()
        raise
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
                except psycopg.OperationalError as exc:
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
    pool: AsyncConnectionPool[Any], channel: str = DEFAULT_CHANNEL
) -> AsyncIterator[dict[str, Any]]:
    """Start listening on the state channel; its notifications (any writer's) as change events.

    Each event has the shape of a MongoDB change stream's (what ``agendapy.fleet_events`` reads):
    ``operationType``, ``documentKey``, ``updateDescription.updatedFields`` and a ``fullDocument``
    holding what the notification tells. Every notification sent after this returns is in it.
    """
    channels = [state_channel(channel)]
    conn = await _listening_connection(pool, channels)
    return _run_changes(_notifications(pool, channels, conn))


async def _run_changes(notes: AsyncIterator[psycopg.Notify]) -> AsyncIterator[dict[str, Any]]:
    async for note in notes:
        change = change_of(note.payload)
        if change is not None:
            yield change


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

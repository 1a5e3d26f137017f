"""Live workers: every started Agenda registers itself in ``agendaWorkers`` and keeps it fresh.

Where the entries live is a :class:`WorkerDirectory`: :class:`MongoWorkerDirectory` (collections beside
the jobs) here, ``agendapy.workers_postgres.PostgresWorkerDirectory`` (tables) for PostgreSQL. The
entries are the same documents on both; this module owns their meaning (states, lost workers, the
per-minute activity).

One document per worker process, written by one background task every ``heartbeat_every``: name,
host, pid, agendapy version, start time, the job names it runs, its running and locked counts, the runs
it finished (succeeded and failed) and ``lastSeen``. A worker that stops marks itself ``stopped``; one
that died stops refreshing and reads as ``lost`` once three heartbeats have lapsed, with the jobs whose
lock it still holds (``lastModifiedBy`` is its name, ``lockedAt`` set). A TTL index on ``lastSeen``
removes entries a day after their last heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

if TYPE_CHECKING:
    from .agenda import Agenda

__all__ = [
    "DEFAULT_ACTIVITY_COLLECTION",
    "DEFAULT_WORKERS_COLLECTION",
    "LOST_AFTER_HEARTBEATS",
    "MongoWorkerDirectory",
    "WorkerDirectory",
    "WorkerInfo",
    "WorkerPresence",
    "activity_series",
    "activity_window",
    "default_worker_name",
    "list_workers",
    "lost_worker_names",
    "recent_activity",
    "worker_infos",
    "worker_state",
]

log = logging.getLogger("agendapy")

DEFAULT_WORKERS_COLLECTION = "agendaWorkers"
#: Per-minute counters of the whole fleet: runs done and failed, and the queue depth sampled.
DEFAULT_ACTIVITY_COLLECTION = "agendaActivity"
#: Minute buckets are kept this long.
ACTIVITY_KEPT = timedelta(days=2)
#: Each worker counts the due jobs at most this often (a count query) for the queue depth.
_QUEUE_SAMPLE_EVERY = 15.0
#: A worker is lost once this many heartbeats have lapsed without a refresh.
LOST_AFTER_HEARTBEATS = 3
#: Entries (stopped or lost workers) are removed this long after their last heartbeat.
FORGET_AFTER = timedelta(days=1)
HELD_JOBS_SHOWN = 100
#: At most this many worker entries are listed (the most recently seen).
WORKERS_SHOWN = 1000

WorkerState = Literal["live", "lost", "stopped"]


def default_worker_name() -> str:
    """``host-pid``: unique per process on a host, and readable in ``lastModifiedBy``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _aware(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return None


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class WorkerInfo:
    """One registered worker, as ``agenda.workers()`` and ``agendapy workers`` show it."""

    id: str
    name: str
    host: str
    pid: int
    version: str
    started_at: datetime | None
    last_seen: datetime | None
    state: WorkerState
    heartbeat_every: float
    definitions: list[str] = field(default_factory=list)
    running: int = 0
    locked: int = 0
    done: int = 0
    failed: int = 0
    #: For a lost worker: the jobs whose lock it still holds (id, name, lockedAt), at most 100.
    held_jobs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (dates as ISO-8601 text)."""
        return {
            "id": self.id,
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "state": self.state,
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
            "last_seen": None if self.last_seen is None else self.last_seen.isoformat(),
            "heartbeat_every": self.heartbeat_every,
            "definitions": list(self.definitions),
            "running": self.running,
            "locked": self.locked,
            "done": self.done,
            "failed": self.failed,
            "held_jobs": [
                {
                    "id": job["id"],
                    "name": job["name"],
                    "locked_at": None if job["locked_at"] is None else job["locked_at"].isoformat(),
                }
                for job in self.held_jobs
            ],
        }


def _period(value: Any) -> float:
    """A stored heartbeat period in seconds (5 when missing or not a sane number)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 86400:
        return float(value)
    return 5.0


def worker_state(doc: dict[str, Any], now: datetime) -> WorkerState:
    """live, stopped, or lost (no heartbeat for ``LOST_AFTER_HEARTBEATS`` periods)."""
    if doc.get("state") == "stopped":
        return "stopped"
    last_seen = _aware(doc.get("lastSeen"))
    every = _period(doc.get("heartbeatEvery"))
    if last_seen is None or now - last_seen > timedelta(seconds=every * LOST_AFTER_HEARTBEATS):
        return "lost"
    return "live"


async def ensure_worker_indexes(collection: AsyncCollection[dict[str, Any]]) -> None:
    seconds = int(FORGET_AFTER.total_seconds())
    try:
        await collection.create_index(
            [("lastSeen", ASCENDING)], name="agendapy_workers_ttl", expireAfterSeconds=seconds
        )
    except OperationFailure as exc:
        log.debug("workers TTL index not created: %s", exc)


async def ensure_activity_indexes(collection: AsyncCollection[dict[str, Any]]) -> None:
    try:
        await collection.create_index(
            [("minute", ASCENDING)],
            name="agendapy_activity_ttl",
            expireAfterSeconds=int(ACTIVITY_KEPT.total_seconds()),
        )
    except OperationFailure as exc:
        log.debug("activity TTL index not created: %s", exc)


async def recent_activity(
    collection: AsyncCollection[dict[str, Any]], *, minutes: int = 60, now: datetime | None = None
) -> list[dict[str, Any]]:
    """One entry per minute of the last ``minutes`` (oldest first): ``minute``, runs ``done`` and
    ``failed`` in it over every worker, and the largest ``queued`` (due jobs) sampled in it (None
    when no worker sampled that minute)."""
    first, last = activity_window(minutes, now)
    docs = [doc async for doc in collection.find({"minute": {"$gte": first, "$lte": last}})]
    return activity_series(docs, first, minutes)


def activity_window(minutes: int, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The first and last minute of the last ``minutes`` minutes."""
    now = now or datetime.now(UTC)
    last = now.replace(second=0, microsecond=0)
    return last - timedelta(minutes=minutes - 1), last


def activity_series(docs: list[dict[str, Any]], first: datetime, minutes: int) -> list[dict[str, Any]]:
    """Minute buckets (``minute``, ``done``, ``failed``, ``queued``) as one entry per minute from
    ``first``, zero where no bucket was written."""
    found: dict[datetime, dict[str, Any]] = {}
    for doc in docs:
        minute = _aware(doc.get("minute"))
        if minute is not None:
            found[minute] = doc
    series = []
    for i in range(minutes):
        minute = first + timedelta(minutes=i)
        doc = found.get(minute, {})
        queued = doc.get("queued")
        series.append(
            {
                "minute": minute,
                "done": _count(doc.get("done")),
                "failed": _count(doc.get("failed")),
                "queued": _count(queued) if queued is not None else None,
            }
        )
    return series


async def server_time(database: AsyncDatabase[dict[str, Any]]) -> datetime:
    """The database server's clock (``hello``'s ``localTime``), else this host's."""
    try:
        reply = await database.command("hello")
    except Exception as exc:
        log.debug("no server time (%s); using this host's clock", exc)
        return datetime.now(UTC)
    return _aware(reply.get("localTime")) or datetime.now(UTC)


async def _held_jobs(
    jobs: AsyncCollection[dict[str, Any]], names: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """The locked jobs of the given workers (by ``lastModifiedBy``), at most 100 each: one query for all."""
    held: dict[str, list[dict[str, Any]]] = {}
    if not names:
        return held
    cursor = jobs.find(
        {"lastModifiedBy": {"$in": names}, "lockedAt": {"$ne": None}},
        {"name": 1, "lockedAt": 1, "lastModifiedBy": 1},
    ).limit(HELD_JOBS_SHOWN * len(names))
    async for doc in cursor:
        mine = held.setdefault(str(doc.get("lastModifiedBy")), [])
        if len(mine) < HELD_JOBS_SHOWN:
            mine.append(
                {
                    "id": str(doc["_id"]),
                    "name": str(doc.get("name")),
                    "locked_at": _aware(doc.get("lockedAt")),
                }
            )
    return held


async def list_workers(
    database: AsyncDatabase[dict[str, Any]],
    *,
    jobs_collection: str,
    workers_collection: str = DEFAULT_WORKERS_COLLECTION,
    include_stopped: bool = False,
    now: datetime | None = None,
) -> list[WorkerInfo]:
    """The registered workers, live first, then lost (with the jobs they still hold), newest first.

    Heartbeats are stamped with the database server's clock, and compared with it here, so hosts whose
    clocks disagree do not see each other as lost."""
    now = now or await server_time(database)
    docs = [
        doc async for doc in database[workers_collection].find({}).sort("lastSeen", -1).limit(WORKERS_SHOWN)
    ]
    states = [worker_state(doc, now) for doc in docs]
    held_by = await _held_jobs(database[jobs_collection], lost_worker_names(docs, states))
    return worker_infos(docs, states, held_by, include_stopped=include_stopped)


def lost_worker_names(docs: list[dict[str, Any]], states: list[WorkerState]) -> list[str]:
    """The names of the lost workers among ``docs`` (whose held jobs are looked up)."""
    return sorted(
        {str(doc.get("name") or "") for doc, s in zip(docs, states, strict=True) if s == "lost"} - {""}
    )


def worker_infos(
    docs: list[dict[str, Any]],
    states: list[WorkerState],
    held_by: dict[str, list[dict[str, Any]]],
    *,
    include_stopped: bool,
) -> list[WorkerInfo]:
    """Worker entries (documents with ``name``, ``host``, ``lastSeen`` ...) as ``WorkerInfo``, live
    first, then lost (with ``held_by`` their name's jobs), then stopped if ``include_stopped``."""
    workers: list[WorkerInfo] = []
    for doc, state in zip(docs, states, strict=True):
        if state == "stopped" and not include_stopped:
            continue
        name = str(doc.get("name") or "")
        held = held_by.get(name, []) if state == "lost" else []
        definitions = doc.get("definitions")
        workers.append(
            WorkerInfo(
                id=str(doc.get("_id")),
                name=name,
                host=str(doc.get("host") or ""),
                pid=_count(doc.get("pid")),
                version=str(doc.get("version") or ""),
                started_at=_aware(doc.get("startedAt")),
                last_seen=_aware(doc.get("lastSeen")),
                state=state,
                heartbeat_every=_period(doc.get("heartbeatEvery")),
                definitions=[str(d) for d in definitions] if isinstance(definitions, list) else [],
                running=_count(doc.get("running")),
                locked=_count(doc.get("locked")),
                done=_count(doc.get("done")),
                failed=_count(doc.get("failed")),
                held_jobs=held,
            )
        )
    order = {"live": 0, "lost": 1, "stopped": 2}
    workers.sort(key=lambda w: order[w.state])
    return workers


class WorkerDirectory(Protocol):
    """Where worker entries and the per-minute activity live (one implementation per store)."""

    async def ensure(self) -> None:
        """Create what holds the entries (indexes, tables) and forget entries past their time."""

    async def write(self, worker_id: ObjectId, doc: dict[str, Any]) -> None:
        """Insert or replace-in-part one worker's entry (the fields of :meth:`WorkerPresence._document`,
        maybe ``stoppedAt``), stamping ``lastSeen`` with the database server's clock."""

    async def add_activity(self, minute: datetime, *, done: int, failed: int, queued: int | None) -> None:
        """Add ``done``/``failed`` runs to ``minute``'s bucket, and keep the larger ``queued`` sample."""

    async def workers(self, *, include_stopped: bool) -> list[WorkerInfo]:
        """The registered workers (see ``Agenda.workers``)."""

    async def activity(self, minutes: int) -> list[dict[str, Any]]:
        """The last ``minutes`` minutes (see ``Agenda.activity``)."""


class MongoWorkerDirectory:
    """Worker entries and activity in two collections of the jobs' database (TTL indexes expire them)."""

    def __init__(
        self,
        database: AsyncDatabase[dict[str, Any]],
        *,
        jobs_collection: str,
        workers_collection: str = DEFAULT_WORKERS_COLLECTION,
        activity_collection: str = DEFAULT_ACTIVITY_COLLECTION,
    ) -> None:
        self._database = database
        self._jobs_collection = jobs_collection
        self._workers = database[workers_collection]
        self._activity = database[activity_collection]

    async def ensure(self) -> None:
        await ensure_worker_indexes(self._workers)
        await ensure_activity_indexes(self._activity)

    async def write(self, worker_id: ObjectId, doc: dict[str, Any]) -> None:
        await self._workers.update_one(
            {"_id": worker_id}, {"$set": doc, "$currentDate": {"lastSeen": True}}, upsert=True
        )

    async def add_activity(self, minute: datetime, *, done: int, failed: int, queued: int | None) -> None:
        update: dict[str, Any] = {"$setOnInsert": {"minute": minute}}
        counts = {key: value for key, value in (("done", done), ("failed", failed)) if value}
        if counts:
            update["$inc"] = counts
        if queued is not None:
            update["$max"] = {"queued": queued}
        await self._activity.update_one({"_id": minute}, update, upsert=True)

    async def workers(self, *, include_stopped: bool) -> list[WorkerInfo]:
        return await list_workers(
            self._database,
            jobs_collection=self._jobs_collection,
            workers_collection=self._workers.name,
            include_stopped=include_stopped,
        )

    async def activity(self, minutes: int) -> list[dict[str, Any]]:
        return await recent_activity(self._activity, minutes=minutes)


class WorkerPresence:
    """This process's entry: written at start, refreshed every ``heartbeat_every``, marked stopped."""

    def __init__(
        self,
        agenda: Agenda,
        directory: WorkerDirectory,
        *,
        every: timedelta,
        version: str,
    ) -> None:
        self._agenda = agenda
        self._directory = directory
        self._reported = (0, 0)
        self._sampled_at: float | None = None
        self._registered = False
        self._every = max(every.total_seconds(), 0.05)
        self._version = version
        self._id = ObjectId()
        self._started_at = datetime.now(UTC)
        self._task: asyncio.Task[None] | None = None
        self.done = 0
        self.failed = 0

    def observe(self, event: str, args: tuple[Any, ...]) -> None:
        """The event tap: count finished runs."""
        if event == "success":
            self.done += 1
        elif event == "fail":
            self.failed += 1

    def _document(self) -> dict[str, Any]:
        agenda = self._agenda
        status = agenda.local_status()
        return {
            "name": agenda.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": self._version,
            "startedAt": self._started_at,
            "heartbeatEvery": self._every,
            "definitions": sorted(agenda.definitions),
            "running": sum(s["running"] for s in status.values()),
            "locked": sum(s["locked"] for s in status.values()),
            "done": self.done,
            "failed": self.failed,
            "state": "running",
        }

    async def _write(self, doc: dict[str, Any]) -> None:
        # lastSeen comes from the server's clock: readers compare it with that clock too.
        await self._directory.write(self._id, doc)

    async def _report_activity(self) -> None:
        """Add the runs finished since the last report to this minute's bucket, and now and then the
        number of due jobs (one count query; the bucket keeps the largest sample)."""
        now = datetime.now(UTC)
        minute = now.replace(second=0, microsecond=0)
        done, failed = self.done, self.failed
        new_done, new_failed = done - self._reported[0], failed - self._reported[1]
        queued: int | None = None
        clock = asyncio.get_running_loop().time()
        if self._sampled_at is None or clock - self._sampled_at >= _QUEUE_SAMPLE_EVERY:
            queued = await self._agenda.store.queue_size(now)
            self._sampled_at = clock
        if not new_done and not new_failed and queued is None:
            return
        await self._directory.add_activity(minute, done=new_done, failed=new_failed, queued=queued)
        self._reported = (done, failed)

    async def _register(self) -> None:
        await self._directory.ensure()
        await self._write(self._document())
        self._registered = True

    async def start(self) -> None:
        """Register and start refreshing. Never fails the worker's start: with the database away, the
        heartbeat registers it once it is back."""
        try:
            await self._register()
        except Exception as exc:
            log.warning("registering this worker failed (%s); retrying with the heartbeat", exc)
        self._task = asyncio.create_task(self._heartbeat(), name="agendapy: worker heartbeat")

    async def _heartbeat(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self._every)
            try:
                if self._registered:
                    await self._write(self._document())
                else:
                    await self._register()
                await self._report_activity()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("worker heartbeat failed (%s); retrying", exc)

    async def stop(self, timeout: float = 1.0) -> None:
        """Stop refreshing and say goodbye (state ``stopped``) with the last counts, within ``timeout``
        seconds (a stop must stay quick when the database is away: the entry then turns lost)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

        async def goodbye() -> None:
            await self._write({**self._document(), "state": "stopped", "stoppedAt": datetime.now(UTC)})
            await self._report_activity()

        with contextlib.suppress(Exception):
            await asyncio.wait_for(goodbye(), timeout)

"""Live workers: every started Agenda registers itself in ``agendaWorkers`` and keeps it fresh.

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
from typing import TYPE_CHECKING, Any, Literal

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
    "WorkerInfo",
    "WorkerPresence",
    "default_worker_name",
    "list_workers",
    "recent_activity",
]

log = logging.getLogger("agendapy")

DEFAULT_WORKERS_COLLECTION = "agendaWorkers"
#: Per-minute counters of the whole fleet: runs done and failed, and the queue depth sampled.
DEFAULT_ACTIVITY_COLLECTION = "agendaActivity"
#: Minute buckets are kept this long.
_ACTIVITY_KEPT = timedelta(days=2)
#: Each worker counts the due jobs at most this often (a count query) for the queue depth.
_QUEUE_SAMPLE_EVERY = 15.0
#: A worker is lost once this many heartbeats have lapsed without a refresh.
LOST_AFTER_HEARTBEATS = 3
#: Entries (stopped or lost workers) are removed this long after their last heartbeat.
_FORGET_AFTER = timedelta(days=1)
_HELD_JOBS_SHOWN = 100

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
    seconds = int(_FORGET_AFTER.total_seconds())
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
            expireAfterSeconds=int(_ACTIVITY_KEPT.total_seconds()),
        )
    except OperationFailure as exc:
        log.debug("activity TTL index not created: %s", exc)


async def recent_activity(
    collection: AsyncCollection[dict[str, Any]], *, minutes: int = 60, now: datetime | None = None
) -> list[dict[str, Any]]:
    """One entry per minute of the last ``minutes`` (oldest first): ``minute``, runs ``done`` and
    ``failed`` in it over every worker, and the largest ``queued`` (due jobs) sampled in it (None
    when no worker sampled that minute)."""
    now = now or datetime.now(UTC)
    last = now.replace(second=0, microsecond=0)
    first = last - timedelta(minutes=minutes - 1)
    found: dict[datetime, dict[str, Any]] = {}
    async for doc in collection.find({"minute": {"$gte": first, "$lte": last}}):
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
    ).limit(_HELD_JOBS_SHOWN * len(names))
    async for doc in cursor:
        mine = held.setdefault(str(doc.get("lastModifiedBy")), [])
        if len(mine) < _HELD_JOBS_SHOWN:
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
    docs = [doc async for doc in database[workers_collection].find({}).sort("lastSeen", -1).limit(1000)]
    workers: list[WorkerInfo] = []
    states = [worker_state(doc, now) for doc in docs]
    lost_names = sorted(
        {str(doc.get("name") or "") for doc, s in zip(docs, states, strict=True) if s == "lost"} - {""}
    )
    held_by = await _held_jobs(database[jobs_collection], lost_names)
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


class WorkerPresence:
    """This process's entry: written at start, refreshed every ``heartbeat_every``, marked stopped."""

    def __init__(
        self,
        agenda: Agenda,
        collection: AsyncCollection[dict[str, Any]],
        *,
        activity: AsyncCollection[dict[str, Any]] | None = None,
        every: timedelta,
        version: str,
    ) -> None:
        self._agenda = agenda
        self._collection = collection
        self._activity = activity
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
        await self._collection.update_one(
            {"_id": self._id}, {"$set": doc, "$currentDate": {"lastSeen": True}}, upsert=True
        )

    async def _report_activity(self) -> None:
        """Add the runs finished since the last report to this minute's bucket, and now and then the
        number of due jobs (one count query; the bucket keeps the largest sample)."""
        if self._activity is None:
            return
        now = datetime.now(UTC)
        minute = now.replace(second=0, microsecond=0)
        done, failed = self.done, self.failed
        update: dict[str, Any] = {"$setOnInsert": {"minute": minute}}
        counts = {
            key: value
            for key, value in (("done", done - self._reported[0]), ("failed", failed - self._reported[1]))
            if value
        }
        if counts:
            update["$inc"] = counts
        clock = asyncio.get_running_loop().time()
        if self._sampled_at is None or clock - self._sampled_at >= _QUEUE_SAMPLE_EVERY:
            update["$max"] = {"queued": await self._agenda.store.queue_size(now)}
            self._sampled_at = clock
        if len(update) == 1:
            return
        await self._activity.update_one({"_id": minute}, update, upsert=True)
        self._reported = (done, failed)

    async def _register(self) -> None:
        await ensure_worker_indexes(self._collection)
        if self._activity is not None:
            await ensure_activity_indexes(self._activity)
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

"""Fleet events without change streams: runs published to a capped collection, read by tailing it.

A standalone ``mongod`` and some MongoDB-compatible servers have no change streams, so the run
writes of other processes cannot be watched (see :mod:`agendapy.fleet_events`). There, and whenever
``change_streams=False``, every process with ``fleet_events=True`` that runs jobs publishes its own
runs' events into ``<jobs collection>.events``, and every such process reads them back:

* **Publishing** hooks the local events (``start``, ``success``, ``fail``, ``retry``, ``complete``;
  ``progress`` is not a local event, so it does not travel this way). A run writes two entries:
  ``start``, and ``end`` at ``complete`` carrying its outcome (success, or fail with the reason and
  the retry, or none for an interrupted run). A listener only copies the job's fields into a queue;
  one task writes what has gathered with a single ordered ``insert_many``, so a run is never held up
  by the database, many runs share a write, and one process's entries keep their order.
* **Reading** is a tailable await cursor on the capped collection, which returns entries in the
  order they were written and waits on the server for new ones. Where the reader starts is found
  with a marker entry of its own: what precedes it is history and skipped. An entry written by this
  process is skipped too (its events were emitted locally).
* **Bounded**: the collection is capped (``EVENTS_SIZE`` bytes, ``EVENTS_MAX`` entries); the oldest
  entries make room for new ones.

Delivery is at most once and in order per job, as with the change stream: entries written while a
reader was away, or overwritten before it read them, are not replayed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymongo import CursorType
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, CollectionInvalid, OperationFailure

from .errors import RemoteFailure
from .run import RetryDetails
from .store.schema import document_from_job, job_from_document, to_object_id

if TYPE_CHECKING:
    from .events import EventEmitter
    from .job import Job

__all__ = [
    "EVENTS_MAX",
    "EVENTS_SIZE",
    "FleetLog",
    "FleetLogUnavailable",
    "ensure_capped",
    "events_collection",
]

log = logging.getLogger("agendapy")

#: The capped collection's bounds: its size in bytes and its number of entries.
EVENTS_SIZE = 16 * 1024 * 1024
EVENTS_MAX = 20_000
#: How long the server holds a read open waiting for new entries.
_AWAIT_MS = 1_000
#: Entries waiting to be written, at most; past it new ones are dropped (at most once) and counted.
_QUEUE_MAX = 10_000
#: Entries per insert, at most.
_BATCH_MAX = 500
_MAX_ERROR_BACKOFF = 30.0
#: How many publishing processes' positions a reader remembers.
_ORIGINS_REMEMBERED = 10_000
#: The events that are published, with the local listener's arguments.
PUBLISHED = ("start", "success", "fail", "retry", "complete")
#: The entries written: ``start``, and ``end`` (with the run's outcome) at ``complete``.
ENTRIES = ("start", "end")
#: Runs whose outcome waits for their ``complete``, at most (each run's is taken at once).
_OUTCOMES_REMEMBERED = 10_000


class FleetLogUnavailable(Exception):
    """The server can keep no capped collection (or its store is not MongoDB): no fallback."""


def events_collection(jobs: Any) -> AsyncCollection[dict[str, Any]]:
    """The events collection beside a store's jobs collection (``<jobs>.events``)."""
    if not isinstance(jobs, AsyncCollection):
        raise FleetLogUnavailable("the job store has no MongoDB collection")
    return jobs.database.get_collection(f"{jobs.name}.events", codec_options=jobs.codec_options)


async def ensure_capped(collection: AsyncCollection[dict[str, Any]]) -> None:
    """Create the capped events collection, or check the one that exists is capped."""
    database = collection.database
    try:
        await database.create_collection(collection.name, capped=True, size=EVENTS_SIZE, max=EVENTS_MAX)
        return
    except CollectionInvalid:
        pass  # it exists already (another process created it)
    except OperationFailure as exc:
        if exc.code != 48:  # NamespaceExists
            raise FleetLogUnavailable(f"cannot create a capped {collection.name!r}: {exc}") from exc
    options = await collection.options()
    if not options.get("capped"):
        raise FleetLogUnavailable(f"{collection.name!r} exists and is not a capped collection")


class FleetLog:
    """Publishes this process's run events to the events collection and emits the others' entries.

    ``emitter`` is the Agenda's event emitter (listened to for publishing, emitted on for remote
    events); ``worker`` this process's name, written into each entry; ``owner`` the Agenda itself.
    """

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        emitter: EventEmitter,
        worker: str | None,
        owner: Any = None,
    ) -> None:
        self._collection = collection
        self._emitter = emitter
        self._worker = worker
        self._owner = owner  # the Agenda the remote jobs are bound to (``job.agenda``)
        # Tells this process's entries from the others' (a process can run several Agendas).
        self._origin = f"{os.getpid()}-{id(self):x}-{os.urandom(4).hex()}"
        self._seq = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE_MAX)
        self._dropped = 0
        self._writer: asyncio.Task[None] | None = None
        self._listeners = {event: self._publisher(event) for event in PUBLISHED}
        # The last seq emitted per origin: an entry older than that is out of order and dropped.
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        # success/fail/retry of runs whose complete (and end entry) is yet to come, by job id.
        self._outcomes: dict[str, dict[str, Any]] = {}

    # -- publishing ------------------------------------------------------------------------------------

    @property
    def publishing(self) -> bool:
        """Whether this process's run events are being published."""
        return self._writer is not None

    def start_publishing(self) -> None:
        """Publish the local run events from now on."""
        if self._writer is not None:
            return
        for event, listener in self._listeners.items():
            self._emitter.on(event, listener)
        self._writer = asyncio.create_task(self._writing(), name="agendapy: fleet events publisher")

    async def stop(self, flush: float = 2.0) -> None:
        """Stop publishing; entries already queued get ``flush`` seconds to be written."""
        for event, listener in self._listeners.items():
            self._emitter.off(event, listener)
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if not self._queue.empty():
            try:
                async with asyncio.timeout(flush):
                    await self._queue.join()
            except TimeoutError:
                log.warning("fleet events: %d entries not published before stop", self._queue.qsize())
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)

    def _publisher(self, event: str) -> Any:
        def publish(*args: Any) -> None:
            entry = self._entry(event, args)
            if entry is None:
                return
            try:
                self._queue.put_nowait(entry)
            except asyncio.QueueFull:
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    log.warning("fleet events: %d entries dropped (the database lags)", self._dropped)

        publish.__name__ = f"publish_{event}"
        return publish

    def _entry(self, event: str, args: tuple[Any, ...]) -> dict[str, Any] | None:
        """The entry to publish for a local event, if any: one at the start of a run, one at its end.

        ``success``, ``fail`` and ``retry`` are noted and travel in the end entry written at ``complete``
        (which every run emits last), so a run costs two entries, not three or four.
        """
        job: Job = args[1] if event == "fail" else args[0]
        if job.remote or job.id is None:
            return None  # a remote event emitted here: its own worker published it
        if event == "success":
            self._note(job.id, {"outcome": "success"})
            return None
        if event == "fail":
            error = args[0]
            reason = job.fail_reason or str(error) or type(error).__name__
            self._note(job.id, {"outcome": "fail", "reason": reason})
            return None
        if event == "retry":
            details: RetryDetails = args[1]
            self._outcomes.setdefault(job.id, {})["retry"] = {
                "attempt": details.attempt,
                "delay": details.delay,
                "nextRunAt": details.next_run_at,
                "reason": str(details.error) or type(details.error).__name__,
            }
            return None
        document = document_from_job(job)
        document["_id"] = to_object_id(job.id)
        self._seq += 1
        entry: dict[str, Any] = {
            "event": "start" if event == "start" else "end",
            "origin": self._origin,
            "seq": self._seq,
            "worker": self._worker,
            "at": datetime.now(UTC),
            "job": document,
        }
        if event == "complete":
            # An interrupted run (a stop, a cancel) completes without an outcome.
            entry.update(self._outcomes.pop(job.id, {"outcome": None}))
        return entry

    def _note(self, job_id: str, outcome: dict[str, Any]) -> None:
        self._outcomes[job_id] = outcome
        while len(self._outcomes) > _OUTCOMES_REMEMBERED:
            self._outcomes.pop(next(iter(self._outcomes)))

    async def _writing(self) -> None:
        pause = 1.0
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._insert(batch)
                pause = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # At most once: a batch the database refused is dropped, not retried out of order.
                log.warning("fleet events: %d entries not published (%s)", len(batch), exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_ERROR_BACKOFF)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _insert(self, batch: list[dict[str, Any]]) -> None:
        while batch:
            try:
                await self._collection.insert_many(batch, ordered=True)
                return
            except BulkWriteError as exc:
                # One entry the server refuses (a job too large for an entry) must not stop those
                # after it: skip it and write the rest, still in order.
                errors = exc.details.get("writeErrors") or [{}]
                index = errors[0].get("index")
                if not isinstance(index, int):
                    raise
                log.warning("fleet events: an entry was refused (%s)", errors[0].get("errmsg"))
                batch = batch[index + 1 :]

    # -- reading ---------------------------------------------------------------------------------------

    async def open(self) -> Any:
        """Open a tailable cursor positioned after a marker written now: every entry written after this
        returns is read. Returns the cursor and the marker's ``_id``."""
        marker = {"event": "marker", "origin": self._origin, "at": datetime.now(UTC)}
        await self._collection.insert_one(marker)
        # This process's own entries and the others' markers are left on the server.
        others = {"origin": {"$ne": self._origin}, "event": {"$in": list(ENTRIES)}}
        cursor = self._collection.find(
            {"$or": [{"_id": marker["_id"]}, others]}, cursor_type=CursorType.TAILABLE_AWAIT
        ).max_await_time_ms(_AWAIT_MS)
        return cursor, marker["_id"]

    async def read(self, cursor: Any, marker: Any, opened: asyncio.Event | None = None) -> None:
        """Emit the entries after ``marker`` until the cursor dies (then open another)."""
        past_marker = False
        skipped = 0
        while cursor.alive:
            try:
                entry = await cursor.next()
            except StopAsyncIteration:
                continue  # the await time passed with nothing new
            if not past_marker:
                skipped += 1
                # The marker was overwritten before it was read (a flood of entries): all is new.
                past_marker = entry.get("_id") == marker or skipped > EVENTS_MAX
                if past_marker and opened is not None:
                    opened.set()
                continue
            try:
                await self.emit(entry)
            except Exception:
                log.exception("fleet events: cannot emit the entry %s", entry.get("_id"))

    async def emit(self, entry: Mapping[str, Any]) -> None:
        """Emit one entry's event as a remote event (unless this process wrote it)."""
        event, origin, seq = entry.get("event"), entry.get("origin"), entry.get("seq")
        if event not in ENTRIES or origin == self._origin or not isinstance(origin, str):
            return
        if not isinstance(seq, int) or seq <= self._last_seq.get(origin, 0):
            return
        self._last_seq[origin] = seq
        self._last_seq.move_to_end(origin)
        while len(self._last_seq) > _ORIGINS_REMEMBERED:
            self._last_seq.popitem(last=False)
        document = entry.get("job")
        if not isinstance(document, Mapping) or document.get("_id") is None:
            return
        if not isinstance(document.get("name"), str) or not document["name"]:
            return
        job = job_from_document(document)
        job.remote = True
        worker = entry.get("worker")
        job.worker = worker if isinstance(worker, str) else None
        job.agenda = self._owner
        if event == "start":
            await self._emit_remote("start", job.name, job)
            return
        outcome = entry.get("outcome")
        if outcome == "success":
            await self._emit_remote("success", job.name, job)
        elif outcome == "fail":
            failure = RemoteFailure(str(entry.get("reason") or "failed"))
            await self._emit_remote("fail", job.name, failure, job)
            details = _retry_details(entry.get("retry"), failure)
            if details is not None:
                await self._emit_remote("retry", job.name, job, details)
        await self._emit_remote("complete", job.name, job)

    async def _emit_remote(self, event: str, job_name: str, *args: Any) -> None:
        """Emit an event of a run in another process (as ``event`` and ``event:<job name>``)."""
        await self._emitter.emit_job_event(event, job_name, *args, remote=True)


def _retry_details(retry: Any, failure: RemoteFailure) -> RetryDetails | None:
    if not isinstance(retry, Mapping):
        return None
    next_run_at, attempt, delay = retry.get("nextRunAt"), retry.get("attempt"), retry.get("delay")
    if not isinstance(next_run_at, datetime) or not isinstance(attempt, int):
        return None
    if not isinstance(delay, int | float):
        return None
    return RetryDetails(
        attempt=attempt,
        delay=float(delay),
        next_run_at=next_run_at if next_run_at.tzinfo else next_run_at.replace(tzinfo=UTC),
        error=failure,
    )

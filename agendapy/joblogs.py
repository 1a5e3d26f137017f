"""Job logs: Agenda 6.2's persistent lifecycle log (collection ``agenda_logs``).

With ``Agenda(..., logging=True)`` or ``define(..., logging=True)`` each run writes the entries Node
Agenda writes (``start``, ``success``, ``fail``, ``complete``, ``retry``, ``retry:exhausted``,
``expired``), in the same document shape, so Agendash and other Node tools read them.

The entries come from the job events (no change to how a run works), go into an in-process buffer
and are written by one background task in batches: a run never waits for its log. Each entry gets its
``_id`` when the event happens, and readers sort by ``timestamp`` then ``_id``, so the entries of a job
read back in the order they happened, and a batch retried after a lost reply is not stored twice. A TTL
index bounds the collection (Agenda itself keeps logs forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, OperationFailure

from .errors import InvalidInput
from .validate import check_job_name

if TYPE_CHECKING:
    from .agenda import Agenda
    from .job import Job

__all__ = [
    "DEFAULT_LOGS_COLLECTION",
    "JobLogEntry",
    "JobLogsResult",
    "LogQuery",
    "LogStore",
    "MemoryLogStore",
    "MongoLogStore",
]

log = logging.getLogger("agendapy")

DEFAULT_LOGS_COLLECTION = "agenda_logs"
LogLevel = Literal["info", "warn", "error", "debug"]
LogEvent = Literal["start", "success", "fail", "complete", "retry", "retry:exhausted", "locked", "expired"]
_LEVELS: tuple[str, ...] = get_args(LogLevel)
_EVENTS: tuple[str, ...] = get_args(LogEvent)
#: Entries waiting for the writer beyond this are dropped (oldest first), with a warning: a database
#: that is away for long must not grow the worker's memory without bound.
_MAX_BUFFER = 10_000
_MAX_BATCH = 500
#: The job events that make a log entry (``lock lost`` is Agenda's ``expired``).
_LOGGED_EVENTS = frozenset({"start", "success", "fail", "complete", "retry", "retry exhausted", "lock lost"})
_MAX_LIMIT = 10_000


@dataclass(frozen=True)
class JobLogEntry:
    """One lifecycle entry; ``duration`` and ``retry_delay`` in milliseconds, as Agenda stores them."""

    id: str
    timestamp: datetime
    level: str
    event: str
    job_id: str | None
    job_name: str
    message: str
    duration: float | None = None
    error: str | None = None
    fail_count: int | None = None
    retry_delay: float | None = None
    retry_attempt: int | None = None
    agenda_name: str | None = None
    meta: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (dates as ISO-8601 text), with Agenda's field names."""
        doc = {
            "_id": self.id,
            "timestamp": self.timestamp.isoformat(),
            "level": self.level,
            "event": self.event,
            "jobId": self.job_id,
            "jobName": self.job_name,
            "message": self.message,
            "duration": self.duration,
            "error": self.error,
            "failCount": self.fail_count,
            "retryDelay": self.retry_delay,
            "retryAttempt": self.retry_attempt,
            "agendaName": self.agenda_name,
            "meta": self.meta,
        }
        return {key: value for key, value in doc.items() if value is not None}


@dataclass(frozen=True)
class JobLogsResult:
    """``get_logs``: the page of entries and how many matched (Agenda's ``{entries, total}``)."""

    entries: list[JobLogEntry]
    total: int


@dataclass(frozen=True)
class LogQuery:
    """Agenda's JobLogQuery, validated: plain values only."""

    job_id: str | None = None
    job_name: str | None = None
    levels: tuple[str, ...] | None = None
    events: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    offset: int = 0
    sort: Literal["asc", "desc"] = "desc"

    @classmethod
    def build(
        cls,
        *,
        job_id: Any = None,
        job_name: Any = None,
        level: Any = None,
        event: Any = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Any = 50,
        offset: Any = 0,
        sort: Any = "desc",
    ) -> LogQuery:
        if job_id is not None:
            if isinstance(job_id, ObjectId):
                job_id = str(job_id)
            if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
                raise InvalidInput("job_id", job_id, "must be a job id (text or ObjectId)")
        if job_name is not None:
            check_job_name(job_name, field="job_name")
        for name, value in (("limit", limit), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1:
                raise InvalidInput(name, value, "must be an int from 0 to 2**31 - 1")
        if limit > _MAX_LIMIT:
            raise InvalidInput("limit", limit, f"must be at most {_MAX_LIMIT}")
        if sort not in ("asc", "desc"):
            raise InvalidInput("sort", sort, "must be 'asc' or 'desc'")
        return cls(
            job_id=job_id,
            job_name=job_name,
            levels=_choices("level", level, _LEVELS),
            events=_choices("event", event, _EVENTS),
            since=_date("since", since),
            until=_date("until", until),
            limit=limit,
            offset=offset,
            sort=sort,
        )

    def mongo_filter(self) -> dict[str, Any]:
        """The filter Agenda's MongoJobLogger builds, from validated plain values."""
        query: dict[str, Any] = {}
        if self.job_id is not None:
            query["jobId"] = self.job_id
        if self.job_name is not None:
            query["jobName"] = self.job_name
        if self.levels is not None:
            query["level"] = {"$in": list(self.levels)}
        if self.events is not None:
            query["event"] = {"$in": list(self.events)}
        if self.since is not None or self.until is not None:
            span: dict[str, datetime] = {}
            if self.since is not None:
                span["$gte"] = self.since
            if self.until is not None:
                span["$lte"] = self.until
            query["timestamp"] = span
        return query

    def matches(self, doc: dict[str, Any]) -> bool:
        """The same filter, in Python (the in-memory store)."""
        stamp = doc["timestamp"]
        return (
            (self.job_id is None or doc.get("jobId") == self.job_id)
            and (self.job_name is None or doc.get("jobName") == self.job_name)
            and (self.levels is None or doc.get("level") in self.levels)
            and (self.events is None or doc.get("event") in self.events)
            and (self.since is None or stamp >= self.since)
            and (self.until is None or stamp <= self.until)
        )


def _choices(field: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise InvalidInput(field, value, f"must be one of {', '.join(allowed)} or a list of them")
    for item in values:
        if item not in allowed:
            raise InvalidInput(field, item, f"must be one of {', '.join(allowed)}")
    return tuple(values)


def _date(field: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(field, value, "must be a datetime")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def entry_from_document(doc: dict[str, Any]) -> JobLogEntry:
    """A stored entry (tolerant of entries written by other tools: missing fields read as None)."""
    stamp = doc.get("timestamp")
    if isinstance(stamp, datetime) and stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    meta = doc.get("meta")
    return JobLogEntry(
        id=str(doc.get("_id")),
        timestamp=stamp if isinstance(stamp, datetime) else datetime.fromtimestamp(0, UTC),
        level=str(doc.get("level", "")),
        event=str(doc.get("event", "")),
        job_id=None if doc.get("jobId") is None else str(doc["jobId"]),
        job_name=str(doc.get("jobName", "")),
        message=str(doc.get("message", "")),
        duration=_number(doc.get("duration")),
        error=None if doc.get("error") is None else str(doc["error"]),
        fail_count=_integer(doc.get("failCount")),
        retry_delay=_number(doc.get("retryDelay")),
        retry_attempt=_integer(doc.get("retryAttempt")),
        agenda_name=None if doc.get("agendaName") is None else str(doc["agendaName"]),
        meta=meta if isinstance(meta, dict) else None,
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class LogStore(Protocol):
    """Where job log entries live."""

    async def create_indexes(self) -> None:
        """Agenda's indexes, and the TTL index."""

    async def write(self, docs: Sequence[dict[str, Any]]) -> None:
        """Insert entries, in order."""

    async def query(self, query: LogQuery) -> JobLogsResult:
        """Entries matching ``query``, sorted by time, and the total."""

    async def clear(self, query: LogQuery | None) -> int:
        """Delete matching entries (all without a query); returns how many."""


class MongoLogStore:
    """Entries in ``agenda_logs``, with Agenda's indexes plus a TTL index on ``timestamp``."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]], *, ttl: timedelta | None) -> None:
        self._collection = collection
        self._ttl = ttl

    async def create_indexes(self) -> None:
        coll = self._collection
        # Agenda's own index on timestamp is a plain descending one; a TTL index must be ascending
        # and single-field, so it sits beside it under its own name.
        await coll.create_index([("timestamp", DESCENDING)], name="agenda_logs_timestamp_idx")
        await coll.create_index(
            [("jobId", ASCENDING), ("timestamp", DESCENDING)], name="agenda_logs_job_id_idx"
        )
        await coll.create_index(
            [("jobName", ASCENDING), ("timestamp", DESCENDING)], name="agenda_logs_job_name_idx"
        )
        if self._ttl is not None:
            seconds = max(int(self._ttl.total_seconds()), 1)
            try:
                await coll.create_index(
                    [("timestamp", ASCENDING)], name="agendapy_logs_ttl", expireAfterSeconds=seconds
                )
            except OperationFailure:
                # Another process set another TTL: change it in place rather than fail the worker.
                await coll.database.command(
                    {
                        "collMod": coll.name,
                        "index": {"name": "agendapy_logs_ttl", "expireAfterSeconds": seconds},
                    }
                )

    async def write(self, docs: Sequence[dict[str, Any]]) -> None:
        if not docs:
            return
        try:
            await self._collection.insert_many(list(docs), ordered=False)
        except BulkWriteError as exc:
            # Entries carry their _id from the start, so a retry after a lost reply finds the ones
            # already stored as duplicates: those are written, and only other errors count.
            errors = exc.details.get("writeErrors", [])
            if not errors or any(error.get("code") != 11000 for error in errors):
                raise

    async def query(self, query: LogQuery) -> JobLogsResult:
        where = query.mongo_filter()
        # _id breaks ties: entries written in one batch share a millisecond but keep their order.
        direction = ASCENDING if query.sort == "asc" else DESCENDING
        cursor = (
            self._collection.find(where)
            .sort([("timestamp", direction), ("_id", direction)])
            .skip(query.offset)
            .limit(query.limit)
        )
        entries = [entry_from_document(doc) async for doc in cursor]
        total = await self._collection.count_documents(where)
        return JobLogsResult(entries=entries, total=total)

    async def clear(self, query: LogQuery | None) -> int:
        result = await self._collection.delete_many({} if query is None else query.mongo_filter())
        return result.deleted_count


class MemoryLogStore:
    """Entries in a list (``agendapy.testing.MemoryJobStore``'s logs)."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    async def create_indexes(self) -> None:
        return None

    async def write(self, docs: Sequence[dict[str, Any]]) -> None:
        self.documents.extend(dict(doc) for doc in docs)

    async def query(self, query: LogQuery) -> JobLogsResult:
        # Insertion order breaks ties between equal timestamps, as _id does in MongoDB.
        ranked = [(doc["timestamp"], i, doc) for i, doc in enumerate(self.documents) if query.matches(doc)]
        ranked.sort(key=lambda item: item[:2], reverse=query.sort == "desc")
        matched = [doc for _, _, doc in ranked]
        page = matched[query.offset : query.offset + query.limit]
        return JobLogsResult(entries=[entry_from_document(doc) for doc in page], total=len(matched))

    async def clear(self, query: LogQuery | None) -> int:
        kept = [doc for doc in self.documents if query is not None and not query.matches(doc)]
        removed = len(self.documents) - len(kept)
        self.documents = kept
        return removed


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def _message(error: Any) -> str:
    return str(error) or type(error).__name__


class JobLogWriter:
    """Turns job events into Agenda's log entries and writes them in the background, in order."""

    def __init__(self, agenda: Agenda, store: LogStore) -> None:
        self._agenda = agenda
        self._store = store
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._dropped = 0

    @property
    def store(self) -> LogStore:
        return self._store

    def observe(self, event: str, args: tuple[Any, ...]) -> None:
        """The event tap: build the entry for a lifecycle event of a logged job."""
        if event not in _LOGGED_EVENTS:
            return
        job = args[1] if event in ("fail", "retry exhausted") else args[0]
        if not self._agenda.logs_job(job.name):
            return
        doc = self._entry(event, args)
        if doc is None:
            return
        if len(self._pending) >= _MAX_BUFFER:
            self._pending.popleft()
            self._dropped += 1
        self._pending.append(doc)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # First entry, or the Agenda moved to another event loop (its old writer cannot run).
            self._wake, self._idle = asyncio.Event(), asyncio.Event()
            self._task = loop.create_task(self._writing(), name="agendapy: job log writer")
        self._idle.clear()
        self._wake.set()

    def _entry(self, event: str, args: tuple[Any, ...]) -> dict[str, Any] | None:
        job: Job
        base: dict[str, Any]
        if event == "start":
            job = args[0]
            base = {"level": "info", "event": "start", "message": "job started"}
        elif event == "success":
            job = args[0]
            base = {
                "level": "info",
                "event": "success",
                "message": "job succeeded",
                "duration": _ms(job.last_run_at, job.last_finished_at),
            }
        elif event == "fail":
            error, job = args[0], args[1]
            text = _message(error)
            base = {
                "level": "error",
                "event": "fail",
                "message": f"job failed: {text}",
                "error": text,
                "failCount": job.fail_count,
            }
        elif event == "complete":
            job = args[0]
            base = {
                "level": "info",
                "event": "complete",
                "message": "job complete",
                "duration": _ms(job.last_run_at, job.last_finished_at)
                if job.last_finished_at is not None
                and job.last_run_at is not None
                and job.last_finished_at >= job.last_run_at
                else None,
            }
        elif event == "retry":
            job, details = args[0], args[1]
            delay_ms = round(float(details.delay) * 1000)
            base = {
                "level": "info",
                "event": "retry",
                "message": f"retry #{details.attempt} scheduled in {delay_ms}ms",
                "retryDelay": delay_ms,
                "retryAttempt": details.attempt,
                "error": _message(details.error),
            }
        elif event == "retry exhausted":
            error, job = args[0], args[1]
            text = _message(error)
            base = {
                "level": "warn",
                "event": "retry:exhausted",
                "message": f"retry exhausted after {job.fail_count} failures: {text}",
                "error": text,
                "failCount": job.fail_count,
            }
        elif event == "lock lost":
            job = args[0]
            base = {
                "level": "warn",
                "event": "expired",
                "message": "job expired (lock lifetime exceeded)",
            }
        else:
            return None
        doc: dict[str, Any] = {
            # Made here, in event order: it orders entries of the same millisecond, and makes a
            # retried write idempotent.
            "_id": ObjectId(),
            "timestamp": datetime.now(UTC),
            **{key: value for key, value in base.items() if value is not None},
            "jobName": job.name,
        }
        if job.id is not None:
            doc["jobId"] = str(job.id)
        if self._agenda.name:
            doc["agendaName"] = self._agenda.name
        return doc

    async def _writing(self) -> None:
        failures = 0
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._pending[i] for i in range(min(len(self._pending), _MAX_BATCH))]
            try:
                await self._store.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep the batch (and so the order) and try again a little later.
                failures += 1
                if failures == 1:
                    log.warning("writing job log entries failed (%s); retrying", exc)
                await asyncio.sleep(min(0.2 * 2**failures, 10.0))
                continue
            failures = 0
            for _ in batch:
                self._pending.popleft()
            if self._dropped:
                log.warning("job log buffer full: %d entries were dropped", self._dropped)
                self._dropped = 0

    async def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every entry so far is written (False if ``timeout`` passed first)."""
        task = self._task
        if not self._pending or task is None or task.get_loop() is not asyncio.get_running_loop():
            return not self._pending
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return not self._pending

    async def close(self, timeout: float | None = 5.0) -> None:
        """Write what is pending (within ``timeout``), then stop the writer."""
        await self.flush(timeout)
        if self._pending:
            log.warning("%d job log entries were not written before close", len(self._pending))
        task, self._task = self._task, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

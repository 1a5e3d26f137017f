"""Run records (collection ``agendaRuns``): run history, once-per-interval guards, dependency checks.

One document per run. ``intervalKey`` is unique: for a once-per-interval run it is the job name and the
interval's end, so a second worker's insert for the same interval fails with a duplicate key and that
worker skips the interval; for every other run it is the record's own id, so it never collides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NotRequired, TypedDict, Unpack

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, OperationFailure

from ..schedule.ticks import RunInterval

__all__ = [
    "COVERAGE_SORT",
    "DEFAULT_RUNS_COLLECTION",
    "HISTORY_SORT",
    "MongoRunStore",
    "RequiredRuns",
    "RunFilter",
    "RunRecord",
    "RunStart",
    "RunStatus",
    "coverage_filter",
    "finish_update",
    "history_filter",
    "interval_runs_filter",
    "new_run_document",
    "record_of",
    "takeover_filter",
    "takeover_update",
    "trim_filter",
]

DEFAULT_RUNS_COLLECTION = "agendaRuns"
RunStatus = Literal["running", "succeeded", "failed", "skipped"]
_STATUSES = ("running", "succeeded", "failed", "skipped")


@dataclass(frozen=True)
class RunRecord:
    """One run of a job, as ``agenda.runs()`` returns it."""

    id: str
    name: str
    job_id: str | None
    interval_started_at: datetime | None
    interval_ended_at: datetime | None
    started_at: datetime
    finished_at: datetime | None
    status: RunStatus
    error: str | None
    worker: str | None


@dataclass(frozen=True)
class RequiredRuns:
    """What the run history holds about a required job, for one interval of a job that requires it.

    ``overlapping``: its runs (any status) whose interval overlaps that interval, by interval start.
    ``first_started_at`` / ``last_started_at``: the start of the earliest and of the latest interval any
    recorded run of it handled (None when it has no recorded interval run).
    """

    overlapping: list[RunRecord]
    first_started_at: datetime | None
    last_started_at: datetime | None


class RunStart(TypedDict):
    """A run that starts: what ``RunStore.start`` records (the keyword arguments it takes)."""

    name: str
    job_id: str | None
    interval: RunInterval | None
    #: Claim ``interval`` for this run alone (once-per-interval jobs).
    guard: bool
    started_at: datetime
    worker: str | None
    #: ``"running"`` by default; a ``"skipped"`` record is finished at once.
    status: NotRequired[RunStatus]
    #: Why a skipped run did not run.
    error: NotRequired[str | None]


class RunFilter(TypedDict):
    """Which run records ``RunStore.query`` lists (None: any)."""

    name: str | None
    since: datetime | None
    until: datetime | None
    status: RunStatus | None
    job_id: NotRequired[str | None]


def interval_key(name: str, interval: RunInterval) -> str:
    """The unique key that lets only one run handle ``interval`` of job ``name``."""
    end = interval.ended_at.astimezone(UTC).isoformat(timespec="milliseconds")
    return f"{name}\x00{end}"


def new_run_document(**run: Unpack[RunStart]) -> dict[str, Any]:
    """The run record of a run that starts now (every RunStore stores this shape)."""
    run_id = ObjectId()
    name, interval, started_at = run["name"], run["interval"], run["started_at"]
    status = run.get("status", "running")
    return {
        "_id": run_id,
        "name": name,
        "jobId": run["job_id"],
        "intervalStartedAt": interval.started_at if interval else None,
        "intervalEndedAt": interval.ended_at if interval else None,
        "intervalKey": interval_key(name, interval) if run["guard"] and interval else str(run_id),
        "startedAt": started_at,
        "finishedAt": started_at if status == "skipped" else None,
        "status": status,
        "error": run.get("error"),
        "worker": run["worker"],
    }


def _aware(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return None


def record_of(doc: Mapping[str, Any]) -> RunRecord:
    """The record a stored run document stands for (a status agendapy does not know reads as failed)."""
    status = doc.get("status")
    return RunRecord(
        id=str(doc["_id"]),
        name=str(doc.get("name", "")),
        job_id=None if doc.get("jobId") is None else str(doc["jobId"]),
        interval_started_at=_aware(doc.get("intervalStartedAt")),
        interval_ended_at=_aware(doc.get("intervalEndedAt")),
        started_at=_aware(doc.get("startedAt")) or datetime.min.replace(tzinfo=UTC),
        finished_at=_aware(doc.get("finishedAt")),
        status=status if status in _STATUSES else "failed",
        error=doc.get("error"),
        worker=doc.get("worker"),
    )


# -- the rules every run store applies, as MongoDB filters and updates ------------------------------


def takeover_filter(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The run that holds ``doc``'s interval key, if a new start may resume it: one still "running"
    for the same job document (its worker died or was interrupted, and the caller holds the job's
    lock now). Anything else holding the key means the interval is done: skip it."""
    return {"intervalKey": doc["intervalKey"], "status": "running", "jobId": doc["jobId"]}


def takeover_update(worker: str | None, started_at: datetime) -> dict[str, Any]:
    """Resume a run: a new worker, when it resumed, one more attempt."""
    return {"$set": {"worker": worker, "resumedAt": started_at}, "$inc": {"attempts": 1}}


def finish_update(status: RunStatus, finished_at: datetime, error: str | None) -> dict[str, Any]:
    """How a run ended."""
    return {"$set": {"status": status, "finishedAt": finished_at, "error": error}}


def trim_filter(name: str, newest_dropped: datetime) -> dict[str, Any]:
    """The records of ``name`` that trimming deletes: those started at or before the first one past
    the limit (newest first); a run still running stays."""
    return {"name": name, "startedAt": {"$lte": newest_dropped}, "status": {"$ne": "running"}}


#: History listings: newest first (the id orders runs that started in the same millisecond).
HISTORY_SORT: list[tuple[str, int]] = [("startedAt", DESCENDING), ("_id", DESCENDING)]


def history_filter(**where: Unpack[RunFilter]) -> dict[str, Any]:
    """The records ``agenda.runs()`` lists."""
    # $eq compares as a value: a mapping given as a name can never act as an operator.
    query: dict[str, Any] = {}
    for field, key in (("name", "name"), ("job_id", "jobId"), ("status", "status")):
        value = where.get(field)
        if value is not None:
            query[key] = {"$eq": value}
    started: dict[str, Any] = {}
    if where["since"] is not None:
        started["$gte"] = where["since"]
    if where["until"] is not None:
        started["$lt"] = where["until"]
    if started:
        query["startedAt"] = started
    return query


#: Coverage: the overlapping runs in interval order.
COVERAGE_SORT: list[tuple[str, int]] = [("intervalStartedAt", ASCENDING)]


def coverage_filter(name: str, interval: RunInterval) -> dict[str, Any]:
    """The runs of ``name`` whose interval overlaps ``interval``."""
    return {
        "name": name,
        "intervalStartedAt": {"$lt": interval.ended_at},
        "intervalEndedAt": {"$gt": interval.started_at},
    }


def interval_runs_filter(name: str) -> dict[str, Any]:
    """The runs of ``name`` that handled an interval (their first and last bound its history)."""
    return {"name": name, "intervalStartedAt": {"$ne": None}}


class MongoRunStore:
    """Run records in one collection beside the jobs."""

    def __init__(
        self, collection: AsyncCollection[dict[str, Any]], *, ttl: timedelta, keep_per_name: int
    ) -> None:
        self._collection = collection
        self._ttl = ttl
        self._keep = keep_per_name

    async def create_indexes(self) -> None:
        """The unique interval key, the history listings, dependency checks, and the TTL that bounds the
        collection."""
        await self._collection.create_index(
            [("intervalKey", ASCENDING)], name="agendapyIntervalKey", unique=True
        )
        await self._collection.create_index(
            [("name", ASCENDING), ("startedAt", DESCENDING)], name="agendapyRunsByName"
        )
        await self._collection.create_index(
            [("jobId", ASCENDING), ("startedAt", DESCENDING)], name="agendapyRunsByJob"
        )
        # Dependency checks: a required job's runs overlapping an interval, and its first and last.
        await self._collection.create_index(
            [("name", ASCENDING), ("intervalStartedAt", ASCENDING)], name="agendapyRunsByInterval"
        )
        try:
            await self._collection.create_index(
                [("startedAt", ASCENDING)],
                name="agendapyRunsTTL",
                expireAfterSeconds=max(int(self._ttl.total_seconds()), 1),
            )
        except OperationFailure:
            # An index with other options exists (the TTL changed): replace it.
            await self._collection.drop_index("agendapyRunsTTL")
            await self._collection.create_index(
                [("startedAt", ASCENDING)],
                name="agendapyRunsTTL",
                expireAfterSeconds=max(int(self._ttl.total_seconds()), 1),
            )

    async def start(self, **run: Unpack[RunStart]) -> str | None:
        """Insert a run record; with ``guard`` it claims ``interval`` and returns None if it was taken."""
        doc = new_run_document(**run)
        run_id = doc["_id"]
        try:
            await self._collection.insert_one(doc)
        except DuplicateKeyError:
            return await self._take_over(doc, started_at=run["started_at"], worker=run["worker"])
        return str(run_id)

    async def _take_over(
        self, doc: dict[str, Any], *, started_at: datetime, worker: str | None
    ) -> str | None:
        """The interval is taken: resume its run (see :func:`takeover_filter`), or skip it (None)."""
        existing = await self._collection.find_one_and_update(
            takeover_filter(doc), takeover_update(worker, started_at)
        )
        return None if existing is None else str(existing["_id"])

    async def finish(
        self, run_id: str, *, status: RunStatus, finished_at: datetime, error: str | None
    ) -> None:
        """Record how a run ended."""
        await self._collection.update_one(
            {"_id": ObjectId(run_id)}, finish_update(status, finished_at, error)
        )

    async def trim(self, name: str) -> None:
        """Keep at most ``keep_per_name`` records of ``name`` (the newest)."""
        cursor = self._collection.find({"name": name}, projection={"startedAt": 1}).sort(
            "startedAt", DESCENDING
        )
        cursor = cursor.skip(self._keep).limit(1)
        first_dropped = [doc async for doc in cursor]
        if first_dropped:
            await self._collection.delete_many(trim_filter(name, first_dropped[0]["startedAt"]))

    async def query(self, *, limit: int, **where: Unpack[RunFilter]) -> list[RunRecord]:
        """Run records, newest first."""
        query = history_filter(**where)
        cursor = self._collection.find(query).sort(HISTORY_SORT)
        if limit:
            cursor = cursor.limit(limit)
        return [record_of(doc) async for doc in cursor]

    async def coverage(self, name: str, interval: RunInterval) -> RequiredRuns:
        """The recorded runs of ``name`` that overlap ``interval``, and the first and last interval it
        ran (``agendapy.dependencies`` decides from these whether the interval is covered)."""
        cursor = self._collection.find(coverage_filter(name, interval)).sort(COVERAGE_SORT)
        overlapping = [record_of(doc) async for doc in cursor]
        bounds: list[datetime | None] = []
        for direction in (ASCENDING, DESCENDING):
            doc = await self._collection.find_one(
                interval_runs_filter(name),
                projection={"intervalStartedAt": 1},
                sort=[("intervalStartedAt", direction)],
            )
            bounds.append(None if doc is None else _aware(doc.get("intervalStartedAt")))
        return RequiredRuns(overlapping, first_started_at=bounds[0], last_started_at=bounds[1])

"""Run records in memory: the same records, unique interval key and coverage rule as ``agendaRuns``."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from .. import schedule as sched
from ..schedule.ticks import RunInterval
from ..store.runs import RequiredRuns, RunRecord, RunStatus, new_run_document
from ._mql import bson_copy

__all__ = ["MemoryRunStore"]

_STATUSES = ("running", "succeeded", "failed", "skipped")


def _record(doc: dict[str, Any]) -> RunRecord:
    status = doc.get("status")
    return RunRecord(
        id=str(doc["_id"]),
        name=str(doc.get("name", "")),
        job_id=None if doc.get("jobId") is None else str(doc["jobId"]),
        interval_started_at=doc.get("intervalStartedAt"),
        interval_ended_at=doc.get("intervalEndedAt"),
        started_at=doc["startedAt"],
        finished_at=doc.get("finishedAt"),
        status=status if status in _STATUSES else "failed",
        error=doc.get("error"),
        worker=doc.get("worker"),
    )


class MemoryRunStore:
    """Run history, once-per-interval guards and dependency coverage, in memory.

    Args:
        ttl: records whose run started longer ago than this are dropped (MongoDB's TTL index).
        keep_per_name: ``trim`` keeps at most this many records per job name.
    """

    def __init__(self, *, ttl: timedelta = timedelta(days=30), keep_per_name: int = 1000) -> None:
        self._ttl = ttl
        self._keep = keep_per_name
        self._lock = threading.RLock()
        self._records: dict[ObjectId, dict[str, Any]] = {}
        self._keys: dict[str, ObjectId] = {}

    def records(self) -> list[RunRecord]:
        """Every record, oldest first (for assertions in tests)."""
        with self._lock:
            return [_record(bson_copy(doc)) for doc in self._records.values()]

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()
            self._keys.clear()

    def _expire(self) -> None:
        deadline = sched.utcnow() - self._ttl
        for run_id in [i for i, doc in self._records.items() if doc["startedAt"] < deadline]:
            self._delete(run_id)

    def _delete(self, run_id: ObjectId) -> None:
        doc = self._records.pop(run_id)
        if self._keys.get(doc["intervalKey"]) == run_id:
            del self._keys[doc["intervalKey"]]

    async def start(
        self,
        *,
        name: str,
        job_id: str | None,
        interval: RunInterval | None,
        guard: bool,
        started_at: datetime,
        worker: str | None,
        status: RunStatus = "running",
        error: str | None = None,
    ) -> str | None:
        """Record a run's start; with ``guard`` it claims ``interval`` (None: taken, or resumed elsewhere)."""
        doc = bson_copy(
            new_run_document(
                name=name,
                job_id=job_id,
                interval=interval,
                guard=guard,
                started_at=started_at,
                worker=worker,
                status=status,
                error=error,
            )
        )
        run_id, key = doc["_id"], doc["intervalKey"]
        with self._lock:
            self._expire()
            taken = self._keys.get(key)
            if taken is None:
                self._records[run_id] = doc
                self._keys[key] = run_id
                return str(run_id)
            # The interval is taken: resume it only if its run is still "running" for this same job
            # (its worker died or was interrupted, and the caller holds the job's lock now).
            existing = self._records[taken]
            if existing.get("status") != "running" or existing.get("jobId") != job_id:
                return None
            existing["worker"] = worker
            existing["resumedAt"] = doc["startedAt"]
            existing["attempts"] = int(existing.get("attempts") or 0) + 1
            return str(taken)

    async def finish(
        self, run_id: str, *, status: RunStatus, finished_at: datetime, error: str | None
    ) -> None:
        """Record how a run ended."""
        values = bson_copy({"status": status, "finishedAt": finished_at, "error": error})
        with self._lock:
            doc = self._records.get(ObjectId(run_id))
            if doc is not None:
                doc.update(values)

    async def release_guard(self, run_id: str) -> None:
        """Give an interval back (the run never started its handler)."""
        with self._lock:
            doc = self._records.get(ObjectId(run_id))
            if doc is not None and doc.get("status") == "running":
                self._delete(doc["_id"])

    async def trim(self, name: str) -> None:
        """Keep at most ``keep_per_name`` records of ``name`` (the newest); running ones stay."""
        with self._lock:
            mine = sorted(
                (doc for doc in self._records.values() if doc.get("name") == name),
                key=lambda doc: doc["startedAt"],
                reverse=True,
            )
            if len(mine) <= self._keep:
                return
            newest_dropped = mine[self._keep]["startedAt"]
            for doc in mine:
                if doc["startedAt"] <= newest_dropped and doc.get("status") != "running":
                    self._delete(doc["_id"])

    async def query(
        self,
        *,
        name: str | None,
        since: datetime | None,
        until: datetime | None,
        status: RunStatus | None,
        limit: int,
        job_id: str | None = None,
    ) -> list[RunRecord]:
        """Run records, newest first (of one job document with ``job_id``)."""
        bounds = bson_copy({"since": since, "until": until})
        with self._lock:
            found = [
                doc
                for doc in self._records.values()
                if (name is None or doc.get("name") == name)
                and (job_id is None or doc.get("jobId") == job_id)
                and (status is None or doc.get("status") == status)
                and (bounds["since"] is None or doc["startedAt"] >= bounds["since"])
                and (bounds["until"] is None or doc["startedAt"] < bounds["until"])
            ]
            found.sort(key=lambda doc: (doc["startedAt"], doc["_id"].binary), reverse=True)
            if limit:
                found = found[:limit]
            return [_record(bson_copy(doc)) for doc in found]

    async def coverage(self, name: str, interval: RunInterval) -> RequiredRuns:
        """The runs of ``name`` overlapping ``interval``, and the first and last interval it ran."""
        span = bson_copy({"start": interval.started_at, "end": interval.ended_at})
        start, end = span["start"], span["end"]
        with self._lock:
            with_interval = [
                doc
                for doc in self._records.values()
                if doc.get("name") == name
                and isinstance(doc.get("intervalStartedAt"), datetime)
                and isinstance(doc.get("intervalEndedAt"), datetime)
            ]
            overlapping = [
                _record(bson_copy(doc))
                for doc in with_interval
                if doc["intervalStartedAt"] < end and doc["intervalEndedAt"] > start
            ]
            starts = [doc["intervalStartedAt"] for doc in with_interval]
        overlapping.sort(key=lambda record: record.interval_started_at or start)
        return RequiredRuns(
            overlapping,
            first_started_at=min(starts, default=None),
            last_started_at=max(starts, default=None),
        )

"""Run records in memory: the same records, unique interval key and coverage rule as ``agendaRuns``.

The rules are the MongoDB run store's filters and updates (``agendapy.store.runs``), evaluated here.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any, Unpack

from bson import ObjectId

from .. import schedule as sched
from ..schedule.ticks import RunInterval
from ..store import runs as rules
from ..store._mql import apply_update, bson_copy, matches, sort_documents
from ..store.runs import (
    RequiredRuns,
    RunFilter,
    RunRecord,
    RunStart,
    RunStatus,
    new_run_document,
    record_of,
)

__all__ = ["MemoryRunStore"]


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
            return [record_of(bson_copy(doc)) for doc in self._records.values()]

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

    async def start(self, **run: Unpack[RunStart]) -> str | None:
        """Record a run's start; with ``guard`` it claims ``interval`` (None: taken, or resumed elsewhere)."""
        doc = bson_copy(new_run_document(**run))
        run_id, key = doc["_id"], doc["intervalKey"]
        with self._lock:
            self._expire()
            taken = self._keys.get(key)
            if taken is None:
                self._records[run_id] = doc
                self._keys[key] = run_id
                return str(run_id)
            # The interval is taken: resume its run, or skip the interval.
            existing = self._records[taken]
            if not matches(existing, rules.takeover_filter(doc)):
                return None
            apply_update(existing, rules.takeover_update(run["worker"], doc["startedAt"]))
            return str(taken)

    async def finish(
        self, run_id: str, *, status: RunStatus, finished_at: datetime, error: str | None
    ) -> None:
        """Record how a run ended."""
        with self._lock:
            doc = self._records.get(ObjectId(run_id))
            if doc is not None:
                apply_update(doc, rules.finish_update(status, finished_at, error))

    async def trim(self, name: str) -> None:
        """Keep at most ``keep_per_name`` records of ``name`` (the newest); running ones stay."""
        with self._lock:
            mine = self._find({"name": name}, [("startedAt", -1)])
            if len(mine) <= self._keep:
                return
            for doc in self._find(rules.trim_filter(name, mine[self._keep]["startedAt"])):
                self._delete(doc["_id"])

    async def query(self, *, limit: int, **where: Unpack[RunFilter]) -> list[RunRecord]:
        """Run records, newest first (of one job document with ``job_id``)."""
        query = rules.history_filter(**where)
        with self._lock:
            found = self._find(query, rules.HISTORY_SORT)
            return [record_of(bson_copy(doc)) for doc in found[: limit or None]]

    async def coverage(self, name: str, interval: RunInterval) -> RequiredRuns:
        """The runs of ``name`` overlapping ``interval``, and the first and last interval it ran."""
        with self._lock:
            overlapping = self._find(rules.coverage_filter(name, interval), rules.COVERAGE_SORT)
            ran = self._find(rules.interval_runs_filter(name), rules.COVERAGE_SORT)
            return RequiredRuns(
                [record_of(bson_copy(doc)) for doc in overlapping],
                first_started_at=record_of(ran[0]).interval_started_at if ran else None,
                last_started_at=record_of(ran[-1]).interval_started_at if ran else None,
            )

    def _find(self, query: dict[str, Any], sort: list[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
        """``find(query).sort(sort)`` over the records (call with the lock held)."""
        found = [doc for doc in self._records.values() if matches(doc, bson_copy(query))]
        return sort_documents(found, sort or [])

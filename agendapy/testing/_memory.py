"""An in-memory JobStore: MongoDB's behaviour without a database, for users' tests.

Documents are stored as MongoDB stores them (Agenda's field names, ObjectId ids, BSON-typed values) and
every read returns a fresh copy. Agenda's rules are not written out here: the filters and updates the
MongoDB store sends (claims, fences, the single/unique/debounce saves, the wake-up pipeline, from
:mod:`agendapy.store.queries`) are evaluated by a small MongoDB query-language engine
(``agendapy.store._mql``), as user filters are. ``tests/contract`` runs one suite against this store,
the MongoDB one and the PostgreSQL one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from ..job import ClaimedStart, Job
from ..joblogs import MemoryLogStore
from ..store import common, queries
from ..store._mql import (
    Changes,
    FilterError,
    apply_update,
    bson_copy,
    bson_value,
    check_filter,
    matches,
    pipeline_matches,
    sort_documents,
    upsert_document,
    values_equal,
)
from ..store.base import ClaimQuota, ClaimRequest, JobCriteria, JobQuery, JobStore, RunStore
from ..store.schema import job_from_document, log_unreadable, to_object_id, unreadable_failure
from ._runs import MemoryRunStore

__all__ = ["MemoryJobStore"]

Change = tuple[str, datetime | None]


def _refused(exc: Exception) -> str | None:
    return str(exc) if isinstance(exc, FilterError) else None


def _user_filter(field: str, value: Any) -> contextlib.AbstractContextManager[None]:
    """A user filter MongoDB would refuse is bad input, reported as the MongoDB store reports it."""
    return common.user_filter(field, value, _refused)


#: The unique indexes with a partial filter (agendapySingleJobName), as (name, key paths, filter).
_PARTIAL_UNIQUE: tuple[tuple[str, list[str], dict[str, Any]], ...] = tuple(
    (name, [path for path, _ in keys], options["partialFilterExpression"])
    for name, keys, options in queries.INDEXES
    if options.get("unique") and "partialFilterExpression" in options
)


class MemoryJobStore:
    """A JobStore in process memory: ``Agenda(MemoryJobStore())`` needs no database.

    Several Agendas may share one store (several "workers" in one test); it is safe to use from several
    threads. Data lives as long as the store object: ``close()`` keeps it, so an Agenda can be closed
    and the store still inspected or handed to the next Agenda.

    Args:
        history_ttl: run records older than this are dropped (as the ``agendaRuns`` TTL index does).
        history_keep: at most this many run records per job name are kept.
    """

    def __init__(self, *, history_ttl: timedelta = timedelta(days=30), history_keep: int = 1000) -> None:
        self._lock = threading.RLock()
        self._docs: dict[Any, dict[str, Any]] = {}
        self._runs = MemoryRunStore(ttl=history_ttl, keep_per_name=history_keep)
        self._logs = MemoryLogStore()
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Change]]] = []

    def __repr__(self) -> str:
        return f"<MemoryJobStore {len(self._docs)} jobs>"

    # -- for tests ----------------------------------------------------------------------------

    def documents(self, name: str | None = None) -> list[dict[str, Any]]:
        """Copies of the stored documents (of one job name, or all), in insertion order."""
        with self._lock:
            return [bson_copy(doc) for doc in self._docs.values() if name is None or doc.get("name") == name]

    def clear(self) -> None:
        """Delete every job and run record."""
        with self._lock:
            self._docs.clear()
        self._runs.clear()

    # -- the JobStore protocol ------------------------------------------------------------------

    @property
    def logs(self) -> MemoryLogStore:
        """Job log entries (``agenda.get_logs``), in a list."""
        return self._logs

    @property
    def runs(self) -> MemoryRunStore:
        """The run records beside the jobs."""
        return self._runs

    async def connect(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the data stays (other Agendas may share this store)."""

    # -- low-level document access (call with the lock held) ------------------------------------

    def _matching(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        flt = bson_copy(query)
        check_filter(flt)
        return [doc for doc in self._docs.values() if matches(doc, flt)]

    def _find_one(self, query: Mapping[str, Any]) -> dict[str, Any] | None:
        return next(iter(self._matching(query)), None)

    def _by_id(self, query: Mapping[str, Any]) -> dict[str, Any] | None:
        """The document a filter on ``_id`` (and more) matches (the ``_id`` index's lookup)."""
        doc = self._docs.get(query["_id"])
        return doc if doc is not None and matches(doc, bson_copy(query)) else None

    def _insert(self, doc: Mapping[str, Any]) -> str:
        stored = bson_copy({"_id": ObjectId(), **doc})
        for index, paths, partial in _PARTIAL_UNIQUE:
            if matches(stored, partial) and any(
                matches(other, partial)
                and all(values_equal(other.get(path), stored.get(path)) for path in paths)
                for other in self._docs.values()
            ):
                raise DuplicateKeyError(f"E11000 duplicate key error collection index: {index}")
        self._docs[stored["_id"]] = stored
        self._notify(stored, None)
        return str(stored["_id"])

    def _update(self, doc: dict[str, Any], update: Mapping[str, Any]) -> bool:
        """Apply an update document to one stored document; returns whether anything changed."""
        changes = apply_update(doc, update)
        if changes:
            self._notify(doc, changes)
        return bool(changes)

    def _upsert(self, query: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
        """``find_one_and_update(upsert=True)``: the document after the update (or the insert)."""
        existing = self._find_one(query)
        if existing is not None:
            self._update(existing, update)
            return existing
        return self._docs[to_object_id(self._insert(upsert_document(query, update)))]

    def _notify(self, doc: dict[str, Any], changes: Changes | None) -> None:
        """Feed ``due_changes`` with the writes a change stream with ``queries.WAKE_UP_PIPELINE`` passes
        (``changes`` None: an insert)."""
        if not self._listeners:
            return
        event: dict[str, Any] = {"operationType": "insert", "fullDocument": doc}
        if changes is not None:
            event["operationType"] = "update"
            event["updateDescription"] = {"updatedFields": changes.updated, "removedFields": changes.removed}
        due = common.wake_up(doc) if pipeline_matches(event, queries.WAKE_UP_PIPELINE) else None
        if due is None:
            return
        for loop, queue in list(self._listeners):
            try:
                if _running_loop() is loop:
                    queue.put_nowait(due)
                else:
                    loop.call_soon_threadsafe(queue.put_nowait, due)
            except RuntimeError:  # that loop is closed
                self._listeners.remove((loop, queue))

    # -- saving ---------------------------------------------------------------------------------

    async def save_job(
        self, job: Job, *, now: datetime, last_modified_by: str | None, lock_token: str | None = None
    ) -> Job | None:
        """Agenda's saveJob: update by id, upsert a recurring or unique job, or insert (locked on the
        fly with ``lock_token``)."""
        doc = common.document_to_save(job, last_modified_by)
        props = queries.save_fields(doc)
        with self._lock:
            if job.id is not None:
                stored = self._by_id(queries.saved_filter(job.id, job.name))
                if stored is not None:
                    self._update(stored, {"$set": props})
                    common.absorb(job, bson_copy(stored))
                return None
            if job.type == "single":
                existing = self._find_one(queries.single_filter(job.name))
                if existing is None:
                    job.id = self._insert(doc)
                else:
                    self._update(existing, queries.single_update(existing, props, now))
                    common.absorb(job, bson_copy(existing))
            elif job.unique_query is not None:
                query = queries.unique_filter(job)
                with _user_filter("unique", job.unique_query):
                    existing = None if job.debounce_options is None else self._find_one(query)
                    update = queries.unique_update(job, doc, existing, now)
                    common.absorb(job, bson_copy(self._upsert(query, update)))
            else:
                locked_at = bson_value(now)
                if lock_token is not None:
                    doc.update(queries.lock_fields(locked_at, lock_token, last_modified_by))
                job.id = self._insert(doc)
                if lock_token is not None:
                    return common.leased(bson_copy(self._docs[to_object_id(job.id)]), lock_token, locked_at)
        return None

    async def insert_many(self, jobs: Sequence[Job], *, last_modified_by: str | None) -> None:
        """Insert new one-off jobs; sets each job's id."""
        with self._lock:
            for job in jobs:
                job.id = self._insert(common.document_to_save(job, last_modified_by))

    # -- one run's locks and state --------------------------------------------------------------

    async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
        """Lock up to ``limit`` claimable jobs of ``request.names``, in claim order, within each name's
        room (``request.per_name``), atomically."""
        now = bson_value(request.now)
        flt, update = queries.claim_filter(request), queries.claim_update(request, token)
        broken: list[Job] = []
        jobs: list[Job] = []
        with self._lock:
            # A document that cannot be read is failed and unlocked at once, and the next candidate is
            # taken in its place (as the MongoDB store does), so it never hides a good job.
            while True:
                # A round is repeated only when it won nothing but unreadable documents: fresh room.
                quota = ClaimQuota(request, limit)
                candidates = sort_documents(self._matching(flt), queries.CLAIM_SORT)
                chosen = [doc for doc in candidates if quota.take(doc.get("name"))]
                if not chosen:
                    break
                for doc in chosen:
                    start = None
                    if queries.starts_with_claim(request, doc):
                        # The lock writes the run's start too, as the MongoDB store's claim does.
                        start = ClaimedStart(doc.get("lastRunAt"), doc.get("nextRunAt"))
                        self._update(doc, {"$set": {**update["$set"], **queries.start_fields(request)}})
                    else:
                        self._update(doc, update)
                    job = common.leased(bson_copy(doc), token, now, claimed_start=start)
                    if job.unreadable:
                        self._update(doc, {"$set": unreadable_failure(job, now)})
                        broken.append(job)
                    else:
                        jobs.append(job)
                if jobs:
                    break
        for job in broken:
            log_unreadable(job)
        return jobs

    def _fenced(self, job: Job) -> dict[str, Any] | None:
        """The job's document if this worker's lease on it is still the current lock."""
        lease = job.lease
        if lease is None:
            return self._by_id(queries.fence_filter(job.id, None, None))
        return self._by_id(queries.fence_filter(job.id, lease.locked_at, lease.token))

    async def save_state(self, job: Job, *, fields: Sequence[str] | None = None) -> bool:
        """Write worker-managed fields, fenced by the lease; False if the job is gone or the lock lost."""

        async def write(flt: dict[str, Any], update: dict[str, Any]) -> bool:
            with self._lock:
                doc = self._by_id(flt)
                if doc is not None:
                    self._update(doc, update)
                return doc is not None

        return await common.fenced_state_write(job, fields, write)

    async def save_state_batched(self, job: Job, *, stamp: Collection[str] = ()) -> bool:
        """``save_state`` of every field (nothing to batch in memory); the stamped attributes, and a
        lock the write keeps, take the moment of the write, as in the MongoDB store."""
        if job.lease is not None:
            written_at = bson_value(datetime.now(UTC))
            for attr in stamp:
                setattr(job, attr, written_at)
            if job.locked_at is not None:
                job.locked_at = written_at
        return await self.save_state(job)

    async def remove_finished(self, job_id: str) -> None:
        """Delete a finished job by id (nothing to batch in memory)."""
        await self.remove(JobCriteria(id=job_id))

    async def due_changes(self) -> AsyncIterator[Change]:
        """``(name, nextRunAt)`` of jobs that may have become claimable (inserted, rescheduled,
        unlocked or re-enabled by a write to this store), as they happen."""
        queue: asyncio.Queue[Change] = asyncio.Queue()
        listener = (asyncio.get_running_loop(), queue)
        with self._lock:
            self._listeners.append(listener)
        try:
            while True:
                yield await queue.get()
        finally:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

    async def renew_locks(self, jobs: Sequence[Job], now: datetime) -> list[Job]:
        """Heartbeat: move each lease's ``lockedAt`` to ``now``; returns the jobs whose lock is gone."""
        lost: list[Job] = []
        at = bson_value(now)
        for job in jobs:
            lease = job.lease
            if lease is None or lease.lost:
                continue
            async with lease.write_lock:
                with self._lock:
                    doc = self._fenced(job)
                    if doc is not None:
                        self._update(doc, {"$set": {"lockedAt": at}})
                if doc is None:
                    lost.append(job)
                else:
                    lease.locked_at = at
                    job.locked_at = at
        return lost

    async def release(self, jobs: Sequence[Job], *, reschedule_at: datetime | None = None) -> None:
        """Unlock the given leased jobs (fenced); with ``reschedule_at`` they become due then."""
        for job in jobs:
            lease = job.lease
            if lease is None or lease.lost:
                continue
            update = {"$set": common.release_values(job, reschedule_at)}
            async with lease.write_lock:
                with self._lock:
                    doc = self._fenced(job)
                    if doc is not None:
                        self._update(doc, update)
            job.locked_at = None

    async def refresh_run_fields(self, job: Job) -> None:
        """Reload lastRunAt, lockedAt and lastFinishedAt (raises JobNotFound)."""
        with self._lock:
            doc = self._docs.get(to_object_id(job.id))
            found = None if doc is None else bson_copy(doc)
        common.refresh_run_fields(job, found)

    # -- reading and bulk changes -----------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        with self._lock:
            doc = self._docs.get(to_object_id(job_id))
            return None if doc is None else job_from_document(bson_copy(doc))

    def _query(self, query: JobQuery) -> list[dict[str, Any]]:
        with _user_filter("data", query.criteria.data):
            sort = queries.query_sort(query.sort)
            with self._lock:
                found = self._matching(queries.query_filter(query))
                return [bson_copy(doc) for doc in sort_documents(found, sort)]

    async def query(self, query: JobQuery) -> tuple[list[Job], int]:
        """Matching jobs (sorted, skipped, limited) and the total match count."""
        found = self._query(query)
        page = found[query.skip : query.skip + query.limit if query.limit else None]
        return [job_from_document(doc) for doc in page], len(found)

    async def fetch_all_states(self, query: JobQuery) -> list[Job]:
        """Every matching job, sorted (the caller filters by computed state and pages)."""
        return [job_from_document(doc) for doc in self._query(query)]

    async def overview(self, now: datetime) -> list[dict[str, Any]]:
        """Per name: total, a count per state, and paused (disabled)."""
        return common.count_overview(self.documents(), now)

    async def remove(self, criteria: JobCriteria) -> int:
        """Delete matching jobs; empty criteria delete nothing (Agenda's rule)."""
        if criteria.is_empty():
            return 0
        with _user_filter("data", criteria.data), self._lock:
            doomed = self._matching(queries.criteria_filter(criteria))
            for doc in doomed:
                del self._docs[doc["_id"]]
        return len(doomed)

    async def remove_all(self) -> int:
        """Delete every job."""
        with self._lock:
            count = len(self._docs)
            self._docs.clear()
        return count

    async def set_disabled(self, criteria: JobCriteria, disabled: bool) -> int:
        """Disable or enable matching jobs; returns how many changed."""
        if criteria.is_empty():
            return 0
        with _user_filter("data", criteria.data), self._lock:
            return sum(
                self._update(doc, {"$set": {"disabled": disabled}})
                for doc in self._matching(queries.criteria_filter(criteria))
            )

    async def queue_size(self, now: datetime) -> int:
        """How many jobs are due (nextRunAt < now)."""
        with self._lock:
            return len(self._matching(queries.due_filter(now)))

    async def distinct_names(self) -> list[str]:
        """The job names present, sorted."""
        with self._lock:
            return sorted({d["name"] for d in self._docs.values() if isinstance(d.get("name"), str)})


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


if TYPE_CHECKING:  # the type checker keeps these in step with the protocols

    def _is_job_store(store: MemoryJobStore) -> JobStore:
        return store

    def _is_run_store(store: MemoryRunStore) -> RunStore:
        return store

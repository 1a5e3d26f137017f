"""An in-memory JobStore: MongoDB's behaviour without a database, for users' tests.

Documents are stored as MongoDB stores them (Agenda's field names, ObjectId ids, BSON-typed values) and
every read returns a fresh copy. Agenda's rules are written out in Python here (claims, fences, the
single/unique/debounce saves); user filters (``data=`` criteria, ``unique()`` keys) go through a small
MongoDB query-language matcher. ``tests/contract`` runs one suite against this store and the MongoDB one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from ..errors import InvalidInput, JobNotFound
from ..job import Job, JobState, Lease, compute_job_state
from ..joblogs import MemoryLogStore
from ..store.base import ClaimQuota, ClaimRequest, JobCriteria, JobQuery, JobStore, RunStore
from ..store.queries import CLAIM_SORT, criteria_filter, lock_fields, query_filter, query_sort
from ..store.schema import (
    PROCESSOR_FIELDS,
    SCHEDULE_FIELDS,
    STATE_FIELDS,
    STATE_KEYS,
    document_from_job,
    job_from_document,
    log_unreadable,
    to_object_id,
    unreadable_failure,
)
from ._mql import (
    FilterError,
    bson_copy,
    bson_value,
    check_filter,
    matches,
    set_path,
    sort_documents,
    upsert_base,
    values_equal,
)
from ._runs import MemoryRunStore

__all__ = ["MemoryJobStore"]

Change = tuple[str, datetime | None]


@contextmanager
def _user_filter(field: str, value: Any) -> Iterator[None]:
    """A user filter MongoDB would refuse is bad input, reported as the MongoDB store reports it."""
    try:
        yield
    except FilterError as exc:
        raise InvalidInput(field, value, f"the server rejected it: {exc}") from None


def _leased(doc: dict[str, Any], token: str, locked_at: datetime) -> Job:
    job = job_from_document(doc)
    job._lease = Lease(token=token, locked_at=locked_at)
    return job


def _absorb(job: Job, doc: dict[str, Any]) -> None:
    """Copy what the store decided (id, nextRunAt, debounce start, data) back onto the job."""
    fresh = job_from_document(bson_copy(doc))
    job.id = str(doc["_id"])
    job.next_run_at = fresh.next_run_at
    job.debounce_started_at = fresh.debounce_started_at
    job.data = fresh.data


def _empty_overview(name: str, readable: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "total": 0, "paused": 0}
    if not readable:
        entry["unreadable_name"] = True  # ``name`` is a label: no query matches it
    for state in JobState:
        entry[state.value] = 0
    return entry


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

    def _select(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [doc for doc in self._docs.values() if predicate(doc)]

    def _matching(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        flt = bson_copy(query)
        check_filter(flt)
        return self._select(lambda doc: matches(doc, flt))

    def _insert(self, doc: Mapping[str, Any]) -> str:
        stored = bson_copy({"_id": ObjectId(), **doc})
        if stored.get("type") == "single" and self._select(
            lambda d: d.get("type") == "single" and values_equal(d.get("name"), stored.get("name"))
        ):
            # The partial unique index agendapySingleJobName.
            raise DuplicateKeyError(f"E11000 duplicate key error: single job {stored.get('name')!r} exists")
        self._docs[stored["_id"]] = stored
        self._notify(stored, inserted=True, changed=())
        return str(stored["_id"])

    def _set(self, doc: dict[str, Any], values: Mapping[str, Any]) -> bool:
        """``$set`` on one stored document; returns whether anything changed."""
        changed = []
        for key, value in bson_copy(dict(values)).items():
            before = doc.get(key, _ABSENT)
            if before is _ABSENT or not values_equal(before, value):
                changed.append(key)
            set_path(doc, key, value)
        if changed:
            self._notify(doc, inserted=False, changed=changed)
        return bool(changed)

    def _notify(self, doc: dict[str, Any], *, inserted: bool, changed: Sequence[str]) -> None:
        """Feed ``due_changes``: inserts, and updates that reschedule, unlock or re-enable a job."""
        if not self._listeners:
            return
        wakes = (
            inserted
            or "nextRunAt" in changed
            or ("lockedAt" in changed and doc.get("lockedAt") is None)
            or ("disabled" in changed and doc.get("disabled") is False)
        )
        if not wakes or doc.get("disabled") is True or doc.get("lockedAt") is not None:
            return
        name, next_run = doc.get("name"), doc.get("nextRunAt")
        if not isinstance(name, str) or next_run is None:  # no next run: nothing to claim
            return
        change: Change = (name, next_run if isinstance(next_run, datetime) else None)
        for loop, queue in list(self._listeners):
            try:
                if _running_loop() is loop:
                    queue.put_nowait(change)
                else:
                    loop.call_soon_threadsafe(queue.put_nowait, change)
            except RuntimeError:  # that loop is closed
                self._listeners.remove((loop, queue))

    # -- saving ---------------------------------------------------------------------------------

    async def save_job(
        self, job: Job, *, now: datetime, last_modified_by: str | None, lock_token: str | None = None
    ) -> Job | None:
        """Agenda's saveJob: update by id, upsert a recurring or unique job, or insert (locked on the
        fly with ``lock_token``)."""
        job.last_modified_by = last_modified_by
        doc = document_from_job(job)
        props = {k: v for k, v in doc.items() if k not in PROCESSOR_FIELDS}
        with self._lock:
            if job.id is not None:
                stored = self._docs.get(to_object_id(job.id))
                if stored is not None and values_equal(stored.get("name"), job.name):
                    self._set(stored, props)
                    _absorb(job, stored)
                return None
            if job.type == "single":
                self._save_single(job, doc, props, now)
            elif job.unique_query is not None:
                self._save_unique(job, doc, props, now)
            else:
                locked_at = bson_value(now)
                if lock_token is not None:
                    doc.update(lock_fields(locked_at, lock_token, last_modified_by))
                job.id = self._insert(doc)
                if lock_token is not None:
                    return _leased(bson_copy(self._docs[to_object_id(job.id)]), lock_token, locked_at)
        return None

    async def insert_many(self, jobs: Sequence[Job], *, last_modified_by: str | None) -> None:
        """Insert new one-off jobs; sets each job's id."""
        with self._lock:
            for job in jobs:
                job.last_modified_by = last_modified_by
                job.id = self._insert(document_from_job(job))

    def _save_single(self, job: Job, doc: dict[str, Any], props: dict[str, Any], now: datetime) -> None:
        # One document per recurring name. Its stored nextRunAt survives a re-call of every() when it
        # is due (Agenda's rule) or when the schedule did not change (restarts never push it forward).
        existing = next(
            iter(self._select(lambda d: d.get("type") == "single" and values_equal(d.get("name"), job.name))),
            None,
        )
        if existing is None:
            job.id = self._insert(doc)
            return
        wanted = bson_copy(props)
        update = dict(props)
        unchanged = all(values_equal(existing.get(key), wanted.get(key)) for key in SCHEDULE_FIELDS)
        next_run = wanted.get("nextRunAt")
        # A stored nextRunAt that is not a date (another tool's) is replaced, never kept.
        if isinstance(existing.get("nextRunAt"), datetime) and (
            unchanged or next_run is None or next_run <= now
        ):
            update.pop("nextRunAt", None)
        self._set(existing, update)
        _absorb(job, existing)

    def _save_unique(self, job: Job, doc: dict[str, Any], props: dict[str, Any], now: datetime) -> None:
        assert job.unique_query is not None
        query = {**job.unique_query, "name": job.name}
        with _user_filter("unique", job.unique_query):
            existing = next(iter(self._matching(query)), None)
            base = upsert_base(bson_copy(query))
        processor = {k: v for k, v in doc.items() if k in PROCESSOR_FIELDS}
        debounce = job.debounce_options
        if debounce is None:
            if existing is None:
                fields = doc if job.unique_insert_only else {**props, **processor}
                job.id = self._insert_upserted(base, fields)
                _absorb(job, self._docs[to_object_id(job.id)])
                return
            if not job.unique_insert_only:
                self._set(existing, props)
            _absorb(job, existing)
            return
        fields = dict(props)
        if existing is None:
            if debounce.strategy == "trailing":
                fields["nextRunAt"] = now + debounce.delay
            fields["debounceStartedAt"] = now
            job.id = self._insert_upserted(base, {**fields, **processor})
            _absorb(job, self._docs[to_object_id(job.id)])
            return
        started = existing.get("debounceStartedAt")
        started = started if isinstance(started, datetime) else None
        if debounce.strategy == "leading":
            fields.pop("nextRunAt", None)  # the first save's run stands
            fields["debounceStartedAt"] = started or now
        elif debounce.max_wait is not None and started is not None and now - started >= debounce.max_wait:
            fields["nextRunAt"] = now  # waited long enough: run now, start a new debounce window
            fields["debounceStartedAt"] = None
        else:
            fields["nextRunAt"] = now + debounce.delay
            fields["debounceStartedAt"] = started or now
        self._set(existing, fields)
        _absorb(job, existing)

    def _insert_upserted(self, base: dict[str, Any], fields: Mapping[str, Any]) -> str:
        doc = dict(base)
        for key, value in fields.items():
            set_path(doc, key, value)
        return self._insert(doc)

    # -- one run's locks and state --------------------------------------------------------------

    async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
        """Lock up to ``limit`` claimable jobs of ``request.names``, in claim order, within each name's
        room (``request.per_name``), atomically."""
        names = set(request.names)
        window = bson_value(request.next_scan_at)
        deadlines = {name: bson_value(at) for name, at in request.lock_deadlines.items()}
        now = bson_value(request.now)

        def claimable(doc: dict[str, Any]) -> bool:
            name = doc.get("name")
            if not isinstance(name, str) or name not in names or doc.get("disabled") is True:
                return False
            locked_at, next_run = doc.get("lockedAt"), doc.get("nextRunAt")
            if locked_at is None:
                return isinstance(next_run, datetime) and next_run <= window
            return isinstance(locked_at, datetime) and locked_at <= deadlines[name]

        fields: dict[str, Any] = {"lockedAt": now, "lockToken": token}
        if request.owner:
            fields["lastModifiedBy"] = request.owner
        broken: list[Job] = []
        jobs: list[Job] = []
        with self._lock:
            # A document that cannot be read is failed and unlocked at once, and the next candidate is
            # taken in its place (as the MongoDB store does), so it never hides a good job.
            while True:
                # A round is repeated only when it won nothing but unreadable documents: fresh room.
                quota = ClaimQuota(request, limit)
                candidates = sort_documents(self._select(claimable), CLAIM_SORT)
                chosen = [doc for doc in candidates if quota.take(doc.get("name"))]
                if not chosen:
                    break
                for doc in chosen:
                    self._set(doc, fields)
                    job = _leased(bson_copy(doc), token, now)
                    if job.unreadable:
                        self._set(doc, unreadable_failure(job, now))
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
        doc = self._docs.get(to_object_id(job.id))
        lease = job._lease
        if doc is None or lease is None:
            return doc
        if doc.get("lockToken") != lease.token or not values_equal(
            doc.get("lockedAt"), bson_value(lease.locked_at)
        ):
            return None
        return doc

    async def save_state(self, job: Job, *, fields: Sequence[str] | None = None) -> bool:
        """Write worker-managed fields, fenced by the lease; False if the job is gone or the lock lost."""
        names = list(fields) if fields is not None else [attr for attr, _ in STATE_FIELDS]
        values = {STATE_KEYS[attr]: getattr(job, attr) for attr in names}
        lease = job._lease
        if lease is not None and "locked_at" in names and job.locked_at is None:
            values["lockToken"] = None  # the final write of a run releases the lock
        if lease is None:
            with self._lock:
                doc = self._fenced(job)
                if doc is None:
                    return False
                self._set(doc, values)
                return True
        async with lease.write_lock:
            if lease.lost:
                return False
            with self._lock:
                doc = self._fenced(job)
                if doc is None:
                    return False
                self._set(doc, values)
            if "locked_at" in names and job.locked_at is not None:
                lease.locked_at = bson_value(job.locked_at)
            return True

    async def save_state_batched(self, job: Job, *, stamp: Collection[str] = ()) -> bool:
        """``save_state`` of every field (nothing to batch in memory); the stamped attributes, and a
        lock the write keeps, take the moment of the write, as in the MongoDB store."""
        if job._lease is not None:
            written_at = bson_value(datetime.now(UTC))
            for attr in stamp:
                setattr(job, attr, written_at)
            if job.locked_at is not None:
                job.locked_at = written_at
        return await self.save_state(job)

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
            lease = job._lease
            if lease is None or lease.lost:
                continue
            async with lease.write_lock:
                with self._lock:
                    doc = self._fenced(job)
                    if doc is not None:
                        self._set(doc, {"lockedAt": at})
                if doc is None:
                    lost.append(job)
                else:
                    lease.locked_at = at
                    job.locked_at = at
        return lost

    async def release(self, jobs: Sequence[Job], *, reschedule_at: datetime | None = None) -> None:
        """Unlock the given leased jobs (fenced); with ``reschedule_at`` they become due then."""
        for job in jobs:
            lease = job._lease
            if lease is None or lease.lost:
                continue
            values: dict[str, Any] = {"lockedAt": None, "lockToken": None}
            if reschedule_at is not None:
                values["nextRunAt"] = reschedule_at
            async with lease.write_lock:
                with self._lock:
                    doc = self._fenced(job)
                    if doc is not None:
                        self._set(doc, values)
            job.locked_at = None

    async def refresh_run_fields(self, job: Job) -> None:
        """Reload lastRunAt, lockedAt and lastFinishedAt (raises JobNotFound)."""
        with self._lock:
            doc = self._docs.get(to_object_id(job.id))
            fresh = None if doc is None else job_from_document(bson_copy(doc))
        if fresh is None:
            raise JobNotFound(f"job with id {job.id} not found in database")
        job.last_run_at, job.locked_at = fresh.last_run_at, fresh.locked_at
        job.last_finished_at = fresh.last_finished_at

    # -- reading and bulk changes -----------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        with self._lock:
            doc = self._docs.get(to_object_id(job_id))
            return None if doc is None else job_from_document(bson_copy(doc))

    def _query(self, query: JobQuery) -> list[dict[str, Any]]:
        with _user_filter("data", query.criteria.data):
            sort = query_sort(query.sort)
            with self._lock:
                found = self._matching(query_filter(query))
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
        counts: dict[str, dict[str, Any]] = {}
        for doc in self.documents():
            job = job_from_document(doc)
            # A stored name that is not a job name has its own row, labelled (never an empty name).
            entry = counts.setdefault(job.display_name, _empty_overview(job.display_name, bool(job.name)))
            entry["total"] += 1
            entry[compute_job_state(job, now).value] += 1
            if job.disabled:
                entry["paused"] += 1
        return sorted(counts.values(), key=lambda e: e["name"])

    async def remove(self, criteria: JobCriteria) -> int:
        """Delete matching jobs; empty criteria delete nothing (Agenda's rule)."""
        if criteria.is_empty():
            return 0
        with _user_filter("data", criteria.data), self._lock:
            doomed = self._matching(criteria_filter(criteria))
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
                self._set(doc, {"disabled": disabled}) for doc in self._matching(criteria_filter(criteria))
            )

    async def queue_size(self, now: datetime) -> int:
        """How many jobs are due (nextRunAt < now)."""
        at = bson_value(now)
        with self._lock:
            return len(
                self._select(lambda d: isinstance(d.get("nextRunAt"), datetime) and d["nextRunAt"] < at)
            )

    async def distinct_names(self) -> list[str]:
        """The job names present, sorted."""
        with self._lock:
            return sorted({d["name"] for d in self._docs.values() if isinstance(d.get("name"), str)})


class _Absent:
    pass


_ABSENT: Final = _Absent()


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

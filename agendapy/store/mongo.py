"""The MongoDB JobStore, on PyMongo's native async client."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import bson
from bson import CodecOptions, DatetimeConversion
from pymongo import AsyncMongoClient, ReturnDocument, UpdateMany
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    WriteError,
)

from ..connections import DEFAULT_DATABASE, MongoConnection, redact_url
from ..errors import InvalidInput
from ..job import ClaimedStart, Job
from . import streams
from .base import ClaimQuota, ClaimRequest, JobCriteria, JobQuery
from .common import (
    absorb,
    count_overview,
    document_to_save,
    fenced_state_write,
    leased,
    refresh_run_fields,
    user_filter,
)
from .fenced_writes import DEFAULT_STATE_WRITE_WINDOW, FencedWrites
from .queries import (
    BY_ID,
    CLAIM_SORT,
    INDEXES,
    claim_filter,
    claim_update,
    criteria_filter,
    due_filter,
    lock_fields,
    lock_filters,
    query_filter,
    query_sort,
    save_fields,
    saved_filter,
    single_filter,
    single_update,
    start_conditions,
    start_fields,
    starts_with_claim,
    unique_filter,
    unique_update,
)
from .runs import DEFAULT_RUNS_COLLECTION, MongoRunStore
from .schema import (
    job_from_document,
    log_unreadable,
    to_object_id,
    unreadable_failure,
)

# DEFAULT_DATABASE and redact_url moved to agendapy.connections; still importable from here.
__all__ = ["DEFAULT_COLLECTION", "DEFAULT_DATABASE", "MongoJobStore", "redact_url"]

log = logging.getLogger("agendapy.store")

DEFAULT_COLLECTION = "agendaJobs"
# Documents written by other tools may hold dates beyond datetime's years 1-9999 or invalid UTF-8: they
# decode (as DatetimeMS, or with replacement characters) so one such document never fails a whole cursor.
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True,
    tzinfo=UTC,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    unicode_decode_error_handler="replace",
)
#: What a claim reads of its candidates: the branch of the claim filter that found them (``lockedAt``)
#: and whether the lock writes their start (``starts_with_claim``), with what that start replaces.
_CANDIDATE_FIELDS = dict.fromkeys(
    ("_id", "name", "lockedAt", "nextRunAt", "lastRunAt", "repeatInterval", "repeatAt"), 1
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Claim rounds in one call when a round won only unreadable documents.
_CLAIM_ROUNDS = 5

P = ParamSpec("P")
R = TypeVar("R")


def _stored_ms(value: Any) -> int | None:
    """A date as BSON stores it (milliseconds since the epoch), None for anything else."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    since: timedelta = value - _EPOCH
    return since // timedelta(milliseconds=1)


def _refused(exc: Exception) -> str | None:
    """The server's reason when it refused a filter (a duplicate key is not about the filter)."""
    if not isinstance(exc, OperationFailure) or exc.code == 11000:
        return None
    return str((exc.details or {}).get("errmsg") or exc)


def _user_filter(field: str, value: Any) -> contextlib.AbstractContextManager[None]:
    return user_filter(field, value, _refused)


def _translate_errors(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn "cannot reach the server" into DatabaseUnavailable, naming the server."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except ConnectionFailure as exc:
            store = args[0]
            assert isinstance(store, MongoJobStore)
            raise store.connection.unavailable(exc) from exc

    return wrapper


class MongoJobStore:
    """Jobs in one MongoDB collection, as Node Agenda 6 stores them.

    Args:
        db: a :class:`~agendapy.connections.MongoConnection`, or what one is made from: a
            ``mongodb://`` or ``mongodb+srv://`` URL (the database comes from its path), an
            ``AsyncMongoClient``, an ``AsyncDatabase``, or a Motor client/database.
        collection: the collection name (Agenda's default ``agendaJobs``).
        database: the database name when ``db`` does not say (default ``agenda``).
        ensure_indexes: create the indexes on connect.
        state_write_window: seconds the start and final writes of runs gather before they are sent
            together (0: those issued in the same event-loop turn).
    """

    def __init__(
        self,
        db: MongoConnection | str | AsyncMongoClient[Any] | AsyncDatabase[Any] | Any,
        *,
        collection: str = DEFAULT_COLLECTION,
        database: str | None = None,
        ensure_indexes: bool = True,
        runs_collection: str = DEFAULT_RUNS_COLLECTION,
        history_ttl: timedelta = timedelta(days=30),
        history_keep: int = 1000,
        state_write_window: float = DEFAULT_STATE_WRITE_WINDOW,
    ) -> None:
        if not isinstance(collection, str) or not collection or "$" in collection:
            raise InvalidInput("collection", collection, "must be a non-empty name without '$'")
        # A URL is checked here, before anything connects.
        self.connection = db if isinstance(db, MongoConnection) else MongoConnection(db, database=database)
        self._collection_name = collection
        self._ensure_indexes = ensure_indexes
        self._collection: AsyncCollection[dict[str, Any]] | None = None
        self._runs_collection_name = runs_collection
        self._history_ttl = history_ttl
        self._history_keep = history_keep
        self._runs: MongoRunStore | None = None
        if not isinstance(state_write_window, int | float) or not 0 <= state_write_window <= 1:
            raise InvalidInput("state_write_window", state_write_window, "must be 0 to 1 seconds")
        self._state_write_window = float(state_write_window)
        self._writes = FencedWrites(
            lambda: self.collection, window=self._state_write_window, unavailable=self.connection.unavailable
        )

    # -- connection -----------------------------------------------------------------------------

    def describe(self) -> str:
        """Where this store points, for messages (no password)."""
        return self.connection.describe()

    @property
    def collection(self) -> AsyncCollection[dict[str, Any]]:
        """The jobs collection (connect first)."""
        if self._collection is None:
            raise RuntimeError("the job store is not connected")
        return self._collection

    @property
    def runs(self) -> MongoRunStore:
        """The run records beside the jobs (connect first)."""
        if self._runs is None:
            raise RuntimeError("the job store is not connected")
        return self._runs

    @property
    def database(self) -> AsyncDatabase[dict[str, Any]]:
        """The database holding the jobs collection (connect first)."""
        return self.collection.database

    async def connect(self) -> None:
        """Resolve the client and database, check the server answers, create the indexes."""
        if self._collection is not None:
            return
        database = self.connection.database()
        codec = _CODEC
        self._collection = database.get_collection(self._collection_name, codec_options=codec)
        try:
            await database.command("ping")
        except ConnectionFailure as exc:
            await self.close()
            raise self.connection.unavailable(exc) from exc
        self._runs = MongoRunStore(
            database.get_collection(self._runs_collection_name, codec_options=codec),
            ttl=self._history_ttl,
            keep_per_name=self._history_keep,
        )
        if self._ensure_indexes:
            await self._create_indexes()
            await self._runs.create_indexes()

    async def _create_indexes(self) -> None:
        for name, keys, options in INDEXES:
            try:
                await self.collection.create_index(keys, name=name, **options)
            except OperationFailure as exc:
                # An existing collection may hold duplicate recurring documents from older Agenda
                # versions; the unique index is then skipped rather than refusing to start.
                log.warning("could not create index %s on %s: %s", name, self._collection_name, exc)

    async def close(self) -> None:
        """Close the client if this store's connection made it (after the pending batched writes)."""
        await self._writes.drain(timeout=5.0)
        await self.connection.close()
        self._collection = None
        self._runs = None

    # -- saving ---------------------------------------------------------------------------------

    @_translate_errors
    async def save_job(
        self, job: Job, *, now: datetime, last_modified_by: str | None, lock_token: str | None = None
    ) -> Job | None:
        """Agenda's saveJob: update by id, upsert a recurring or unique job, or insert (locked on the
        fly with ``lock_token``: the lock rides on the insert, no extra round trip)."""
        doc = document_to_save(job, last_modified_by)
        props = save_fields(doc)
        if job.id is not None:
            found = await self.collection.find_one_and_update(
                saved_filter(job.id, job.name), {"$set": props}, return_document=ReturnDocument.AFTER
            )
            if found is not None:
                absorb(job, found)
            return None
        if job.type == "single":
            await self._save_single(job, doc, props, now)
        elif job.unique_query is not None:
            await self._save_unique(job, doc, now)
        else:
            if lock_token is not None:
                doc.update(lock_fields(now, lock_token, last_modified_by))
            result = await self.collection.insert_one(doc)
            job.id = str(result.inserted_id)
            if lock_token is not None:
                # The stored form (milliseconds, a copy of the data), as a claim would have read it.
                stored = bson.decode(bson.encode({**doc, "_id": result.inserted_id}), codec_options=_CODEC)
                return leased(stored, lock_token, now)
        return None

    @_translate_errors
    async def insert_many(self, jobs: Sequence[Job], *, last_modified_by: str | None) -> None:
        """Insert new one-off jobs in one round trip (per 100,000); sets each job's id."""
        if not jobs:
            return
        docs = [document_to_save(job, last_modified_by) for job in jobs]
        result = await self.collection.insert_many(docs, ordered=True)
        for job, inserted_id in zip(jobs, result.inserted_ids, strict=True):
            job.id = str(inserted_id)

    async def _save_single(self, job: Job, doc: dict[str, Any], props: dict[str, Any], now: datetime) -> None:
        # One document per recurring name (the unique index settles two processes inserting at once).
        for _ in range(3):
            existing = await self.collection.find_one(single_filter(job.name))
            if existing is None:
                try:
                    result = await self.collection.insert_one(doc)
                except DuplicateKeyError:
                    continue  # another process created it first; update that one
                job.id = str(result.inserted_id)
                return
            found = await self.collection.find_one_and_update(
                {"_id": existing["_id"]},
                single_update(existing, props, now),
                return_document=ReturnDocument.AFTER,
            )
            if found is not None:
                absorb(job, found)
                return
        raise RuntimeError(f"could not save recurring job {job.name!r}: it kept changing concurrently")

    async def _save_unique(self, job: Job, doc: dict[str, Any], now: datetime) -> None:
        query = unique_filter(job)
        with _user_filter("unique", job.unique_query):
            # Debounce decides from the document as it is (its window's start).
            existing = None if job.debounce_options is None else await self.collection.find_one(query)
            found = await self.collection.find_one_and_update(
                query,
                unique_update(job, doc, existing, now),
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        if found is not None:
            absorb(job, found)

    # -- one run's locks and state --------------------------------------------------------------

    @_translate_errors
    async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
        """Lock up to ``limit`` claimable jobs of ``request.names``, in claim order, within each name's
        room (``request.per_name``).

        A claimed document agendapy cannot read is failed and unlocked at once (see
        ``unreadable_failure``) and left out; the others are returned. When a round won only such
        documents, it claims again (each failed one is no longer claimable), so they never hide good jobs.
        """
        for _ in range(_CLAIM_ROUNDS):
            docs = await self._claim_documents(request, token, limit)
            if not docs:
                return []
            jobs = [leased(doc, token, request.now, claimed_start=start) for doc, start in docs]
            readable = await self._fail_unreadable(jobs, request.now)
            if readable:
                return readable
        return []

    async def _claim_documents(
        self, request: ClaimRequest, token: str, limit: int
    ) -> list[tuple[dict[str, Any], ClaimedStart | None]]:
        """The claimed documents, as locked, each with the start its lock wrote (if it did).

        One job: Agenda's single atomic find_one_and_update. Several: finds pick the candidates
        (usually one; another for the names left with room when a name filled up), an update_many by
        ``_id`` locks those still claimable (each document's update is atomic, and the claim
        conditions are repeated without ``$or``, see ``lock_filters``, so a job another worker took
        meanwhile is left alone), and one read by id and token returns what this worker won. A few
        round trips for many jobs instead of one per job; on servers that scan for the claim query,
        one scan instead of one per job.
        """
        if limit <= 1:
            names = ClaimQuota(request, limit).open_names()
            if not names:
                return []
            found = await self.collection.find_one_and_update(
                claim_filter(request.only(names)),
                claim_update(request, token),
                sort=CLAIM_SORT,
                return_document=ReturnDocument.AFTER,
            )
            return [] if found is None else [(found, None)]
        for _ in range(3):
            candidates = await self._claim_candidates(request, limit)
            if not candidates:
                return []
            ids = [doc["_id"] for doc in candidates]
            if await self._lock_batch(request, token, candidates):
                break
            # Every candidate was taken by another worker between the two steps: look again.
        else:
            return []
        won = self.collection.find(
            {"_id": {"$in": ids}, "lockToken": token, "lockedAt": request.now}, hint=BY_ID
        )
        by_id = {doc["_id"]: doc async for doc in won}
        # Candidates whose start the lock wrote: what it replaced, for the lease (ClaimedStart).
        stamp = _stored_ms(request.now)
        starts = {
            doc["_id"]: ClaimedStart(doc.get("lastRunAt"), doc.get("nextRunAt"))
            for doc in candidates
            if starts_with_claim(request, doc)
            # Written only if the lock's update that carried it applied (see _lock_batch).
            and doc["_id"] in by_id
            and _stored_ms(by_id[doc["_id"]].get("lastRunAt")) == stamp
            and by_id[doc["_id"]].get("nextRunAt") is None
        }
        return [(by_id[i], starts.get(i)) for i in ids if i in by_id]

    @staticmethod
    def _lock_writes(
        request: ClaimRequest, token: str, candidates: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The batched lock as (filter, update) pairs: the candidates whose start the claim writes
        (``starts_with_claim``) in one ``update_many`` that also sets ``start_fields``, the others
        as ``lock_filters`` says."""
        update = claim_update(request, token)
        starting = [doc for doc in candidates if starts_with_claim(request, doc)]
        if not starting:
            return [(flt, update) for flt in lock_filters(request, candidates)]
        others = [doc for doc in candidates if not starts_with_claim(request, doc)]
        start_update = {"$set": {**update["$set"], **start_fields(request)}}
        writes = [
            ({**flt, **start_conditions(request)}, start_update) for flt in lock_filters(request, starting)
        ]
        return writes + [(flt, update) for flt in lock_filters(request, others)]

    async def _lock_batch(self, request: ClaimRequest, token: str, candidates: list[dict[str, Any]]) -> bool:
        """Lock the candidates (``_lock_writes``); whether any may have been locked.

        A server that refuses the start's fields for a document (a validator) refuses that lock's
        ``update_many`` from that document on: the candidates it did not lock are then locked without
        their start, so their runs write it and a refusal is handled as a run's (failed, unlocked).
        """
        writes = self._lock_writes(request, token, candidates)
        try:
            return await self._lock(writes) > 0
        except (WriteError, BulkWriteError) as exc:
            if not any(starts_with_claim(request, doc) for doc in candidates):
                raise
            log.warning("the server refused a claim's start fields (%s); locking without them", exc)
        await self._lock([(flt, claim_update(request, token)) for flt in lock_filters(request, candidates)])
        return True  # the refused update may have locked some before refusing: the read-back tells

    async def _lock(self, writes: list[tuple[dict[str, Any], dict[str, Any]]]) -> int:
        """Apply the batched lock (one ``update_many`` per filter, in one round trip); how many
        documents it locked."""
        if not writes:
            return 0
        if len(writes) == 1:
            flt, update = writes[0]
            return (await self.collection.update_many(flt, update)).modified_count
        result = await self.collection.bulk_write(
            [UpdateMany(flt, update) for flt, update in writes], ordered=False
        )
        return result.modified_count

    async def _fail_unreadable(self, jobs: list[Job], now: datetime) -> list[Job]:
        """Fail and unlock the claimed jobs whose documents cannot be read; return the others."""
        broken = [job for job in jobs if job.unreadable]
        if broken:
            await self._writes.apply([(job, unreadable_failure(job, now)) for job in broken])
            for job in broken:
                log_unreadable(job)
        return [job for job in jobs if not job.unreadable]

    async def _claim_candidates(self, request: ClaimRequest, limit: int) -> list[dict[str, Any]]:
        """The next claimable jobs in claim order, within the batch's quota: their ``_id``, ``name``
        and ``lockedAt`` (which branch of the claim filter found them, for ``lock_filters``).

        A find over the names with room returns ``wanted`` candidates; one of a full name is skipped,
        and then that name is left out of the next find. Each find that comes back full fills the batch
        or a name, so this ends after at most one find per name (plus one).
        """
        quota = ClaimQuota(request, limit)
        chosen: list[dict[str, Any]] = []
        while names := quota.open_names():
            wanted = quota.wanted()
            cursor = self.collection.find(
                claim_filter(request.only(names), exclude=[doc["_id"] for doc in chosen]),
                # What decides the lock's filter and whether it writes the start (starts_with_claim).
                projection=_CANDIDATE_FIELDS,
                sort=CLAIM_SORT,
                limit=wanted,
            )
            found = [doc async for doc in cursor]
            chosen.extend(doc for doc in found if quota.take(doc.get("name")))
            if len(found) < wanted:
                break  # nothing more is claimable for these names
        return chosen

    @_translate_errors
    async def save_state(self, job: Job, *, fields: Sequence[str] | None = None) -> bool:
        """Write worker-managed fields, fenced by the lease; False if the job is gone or the lock lost."""

        async def write(flt: dict[str, Any], update: dict[str, Any]) -> bool:
            return (await self.collection.update_one(flt, update)).matched_count > 0

        return await fenced_state_write(job, fields, write)

    async def save_state_batched(self, job: Job, *, stamp: Collection[str] = ()) -> bool:
        """``save_state`` of every field, fenced; the writes of runs issued within the state write
        window go to the server together, identical ones as one ``update_many``. One batch is in
        flight at a time: the writes issued meanwhile go out together as soon as it returns (group
        commit), so batches grow with the server's latency rather than only with the window.

        ``stamp`` names attributes (``last_run_at``, ``last_finished_at``) set to the moment the batch
        is written rather than to their value now, so that runs of one batch write the same values;
        the job holds the written value afterwards. A lock the write keeps is renewed to that moment.
        """
        if job.lease is None:
            return await self.save_state(job)
        return await self._writes.queue(job, stamp)

    async def remove_finished(self, job_id: str) -> None:
        """Delete a finished job by id (``remove_on_complete``); the deletions issued within the state
        write window go out as one ``delete_many``."""
        await self._writes.queue_removal(job_id)

    async def due_changes(self) -> AsyncIterator[tuple[str, datetime | None]]:
        """Yield ``(name, nextRunAt)`` of jobs that may have become claimable: inserted, rescheduled,
        unlocked or re-enabled (a change stream; needs a replica set). Claims and lock renewals do
        not appear."""
        async for due in streams.due_changes(self.collection):
            yield due

    async def run_changes(self) -> AsyncIterator[dict[str, Any]]:
        """Open a change stream of run state (starts, progress, ends, removals) and return
        its events, in the server's order, each with the document after the change (``fullDocument``;
        None once it is gone). Every change made after this returns is in it. Fleet events are derived
        from them; needs change streams like ``due_changes``."""
        return await streams.run_changes(self.collection)

    @_translate_errors
    async def renew_locks(self, jobs: Sequence[Job], now: datetime) -> list[Job]:
        """Heartbeat: move each lease's ``lockedAt`` to ``now`` in one round trip; returns the jobs
        whose lock is gone. Leases of runs that are writing their final state are left alone."""
        return await self._writes.renew_locks(jobs, now)

    @_translate_errors
    async def release(self, jobs: Sequence[Job], *, reschedule_at: datetime | None = None) -> None:
        """Unlock leased jobs in one round trip. With ``reschedule_at`` they become due then; a job
        without a next run (a recovered crash) becomes due now, so no release strands it."""
        await self._writes.release(jobs, reschedule_at=reschedule_at)

    @_translate_errors
    async def refresh_run_fields(self, job: Job) -> None:
        """Reload lastRunAt, lockedAt, lastFinishedAt (for ``is_running`` on a job read earlier)."""
        found = await self.collection.find_one(
            {"_id": to_object_id(job.id)}, projection={"lastRunAt": 1, "lockedAt": 1, "lastFinishedAt": 1}
        )
        refresh_run_fields(job, found)

    # -- reading and bulk changes -----------------------------------------------------------------

    @_translate_errors
    async def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        found = await self.collection.find_one({"_id": to_object_id(job_id)})
        return None if found is None else job_from_document(found)

    @_translate_errors
    async def query(self, query: JobQuery) -> tuple[list[Job], int]:
        """Matching jobs (sorted, skipped, limited in the database) and the total match count."""
        flt = query_filter(query)
        with _user_filter("data", query.criteria.data):
            cursor = self.collection.find(
                flt, sort=query_sort(query.sort), skip=query.skip, limit=query.limit
            )
            jobs = [job_from_document(doc) async for doc in cursor]
            total = await self.collection.count_documents(flt)
        return jobs, total

    @_translate_errors
    async def fetch_all_states(self, query: JobQuery) -> list[Job]:
        """Every matching job, sorted (the caller filters by computed state and pages)."""
        with _user_filter("data", query.criteria.data):
            cursor = self.collection.find(query_filter(query), sort=query_sort(query.sort))
            return [job_from_document(doc) async for doc in cursor]

    @_translate_errors
    async def overview(self, now: datetime) -> list[dict[str, Any]]:
        """Per name: total, running, scheduled, queued, completed, failed, repeating, paused."""
        # Every field but the payloads: a field that cannot be read makes its job count as broken.
        projection = {"data": 0, "checkpoint": 0}
        return count_overview([doc async for doc in self.collection.find({}, projection=projection)], now)

    @_translate_errors
    async def remove(self, criteria: JobCriteria) -> int:
        """Delete matching jobs; empty criteria delete nothing (Agenda's rule)."""
        if criteria.is_empty():
            return 0
        with _user_filter("data", criteria.data):
            result = await self.collection.delete_many(criteria_filter(criteria))
        return result.deleted_count

    @_translate_errors
    async def remove_all(self) -> int:
        """Delete every job in the collection."""
        result = await self.collection.delete_many({})
        return result.deleted_count

    @_translate_errors
    async def set_disabled(self, criteria: JobCriteria, disabled: bool) -> int:
        """Disable or enable matching jobs; returns how many changed."""
        if criteria.is_empty():
            return 0
        with _user_filter("data", criteria.data):
            result = await self.collection.update_many(
                criteria_filter(criteria), {"$set": {"disabled": disabled}}
            )
        return result.modified_count

    @_translate_errors
    async def queue_size(self, now: datetime) -> int:
        """How many jobs are due (Agenda's getQueueSize: nextRunAt < now)."""
        return await self.collection.count_documents(due_filter(now))

    @_translate_errors
    async def distinct_names(self) -> list[str]:
        """Distinct job names, via $group (allowed under the Stable API, unlike distinct)."""
        cursor = await self.collection.aggregate([{"$group": {"_id": "$name"}}, {"$sort": {"_id": 1}}])
        return [doc["_id"] async for doc in cursor if isinstance(doc.get("_id"), str)]

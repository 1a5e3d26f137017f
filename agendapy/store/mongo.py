"""The MongoDB JobStore, on PyMongo's native async client."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import bson
from bson import CodecOptions, DatetimeConversion
from pymongo import AsyncMongoClient, ReturnDocument, UpdateMany, UpdateOne, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    InvalidURI,
    OperationFailure,
)
from pymongo.uri_parser import parse_uri

from ..errors import DatabaseUnavailable, InvalidInput, JobNotFound
from ..job import Job, JobState, Lease, compute_job_state, set_lease
from .base import ClaimQuota, ClaimRequest, JobCriteria, JobQuery, WakeUpsUnavailable
from .queries import (
    CLAIM_SORT,
    INDEXES,
    WAKE_UP_PIPELINE,
    claim_filter,
    claim_update,
    criteria_filter,
    fence_filter,
    fence_many_filter,
    lock_fields,
    query_filter,
    query_sort,
)
from .runs import DEFAULT_RUNS_COLLECTION, MongoRunStore
from .schema import (
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

__all__ = ["DEFAULT_COLLECTION", "DEFAULT_DATABASE", "MongoJobStore", "redact_url"]

log = logging.getLogger("agendapy.store")

DEFAULT_COLLECTION = "agendaJobs"
DEFAULT_DATABASE = "agenda"
_SERVER_SELECTION_TIMEOUT_MS = 10_000
#: How long the state writes of runs gather before they go out together (seconds), by default.
DEFAULT_STATE_WRITE_WINDOW = 0.005
#: A gathered batch this large is written at once, without waiting for the window to close.
_MAX_STATE_BATCH = 200
#: How long a change stream's getMore waits for a change (seconds).
_STREAM_AWAIT_S = 1.0
#: After this many change-stream getMores in a row came back early and empty (a worker's own few
#: writes for one run make up to three), each next one waits _EMPTY_BATCH_PAUSE first: while other
#: workers write, a wake-up arrives up to that much later, and no worker sends more than ~40 such
#: getMores a second. A change, or a getMore that waited its full time, ends the run.
_EMPTY_BATCHES_FREE = 4
_EMPTY_BATCH_PAUSE = 0.025
# Documents written by other tools may hold dates beyond datetime's years 1-9999 or invalid UTF-8: they
# decode (as DatetimeMS, or with replacement characters) so one such document never fails a whole cursor.
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True,
    tzinfo=UTC,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    unicode_decode_error_handler="replace",
)
#: Claim rounds in one call when a round won only unreadable documents.
_CLAIM_ROUNDS = 5
# Server answers meaning "no change streams here" (a standalone mongod: 40573; unsupported: 115, 136).
_NO_CHANGE_STREAMS = frozenset({40573, 136, 115})

P = ParamSpec("P")
R = TypeVar("R")


#: The changes fleet events are made of: updates that start, report progress or end a run (claims
#: and heartbeats only move the lock and stay out), and deletions (to forget the job).
RUN_CHANGES_PIPELINE: list[dict[str, Any]] = [
    {
        "$match": {
            "$or": [
                {"operationType": "delete"},
                *(
                    {"operationType": "update", f"updateDescription.updatedFields.{key}": {"$exists": True}}
                    for key in ("lastRunAt", "progress", "lastFinishedAt")
                ),
            ]
        }
    }
]


def _state_values(job: Job) -> dict[str, Any]:
    values = {key: getattr(job, attr) for attr, key in STATE_FIELDS}
    if job.lease is not None and job.locked_at is None:
        # The final write of a run releases the lock. Its lastRunAt was written by the run's start
        # write (no run starts without it) and has not changed: leaving it out lets the finishes of
        # runs that started at different moments go out as one update.
        values["lockToken"] = None
        del values["lastRunAt"]
    return values


def _write_instant() -> datetime:
    """Now, to the millisecond BSON keeps (so what is stored equals what the job holds)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclasses.dataclass
class _PendingState:
    """A state write waiting for the window to close: its values are fixed when it is queued."""

    job: Job
    values: dict[str, Any]
    stamp: frozenset[str]  # document keys to set to the moment the batch is written
    done: asyncio.Future[bool]


def _same_instant(stored: Any, written: datetime | None) -> bool:
    if stored is None or written is None:
        return stored is None and written is None
    if isinstance(stored, datetime) and stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    return bool(stored == written)


def redact_url(url: str) -> str:
    """A MongoDB URL without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _brief(exc: Exception) -> str:
    """The useful head of a PyMongo connection error (without the topology dump)."""
    text = str(exc)
    for marker in (" (configured timeouts", ", Timeout:"):
        text = text.split(marker, 1)[0]
    return text


@contextlib.contextmanager
def _user_filter(field: str, value: Any) -> Iterator[None]:
    """A filter built from user input that the server refuses is bad input, not a crash."""
    try:
        yield
    except OperationFailure as exc:
        if exc.code == 11000:  # a duplicate key is not about the filter
            raise
        message = (exc.details or {}).get("errmsg") or str(exc)
        raise InvalidInput(field, value, f"the server rejected it: {message}") from None


class _ConnectionLog(monitoring.ServerListener):
    """Logs when the server becomes unreachable and when it answers again (driver monitoring)."""

    def __init__(self) -> None:
        self._lost: set[Any] = set()

    def opened(self, event: monitoring.ServerOpeningEvent) -> None:
        pass

    def closed(self, event: monitoring.ServerClosedEvent) -> None:
        pass

    def description_changed(self, event: monitoring.ServerDescriptionChangedEvent) -> None:
        before, after = event.previous_description, event.new_description
        host, port = event.server_address
        address = f"{host}:{port}"
        if before.is_server_type_known and not after.is_server_type_known:
            self._lost.add(event.server_address)
            log.warning("lost the connection to MongoDB at %s: %s", address, after.error or "no answer")
        elif event.server_address in self._lost and after.is_server_type_known:
            self._lost.discard(event.server_address)
            log.warning("the connection to MongoDB at %s is back", address)


def _translate_errors(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn "cannot reach the server" into DatabaseUnavailable, naming the server."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except ConnectionFailure as exc:
            store = args[0]
            assert isinstance(store, MongoJobStore)
            raise DatabaseUnavailable(f"cannot reach MongoDB at {store.describe()}: {_brief(exc)}") from exc

    return wrapper


class MongoJobStore:
    """Jobs in one MongoDB collection, as Node Agenda 6 stores them.

    Args:
        db: a ``mongodb://`` or ``mongodb+srv://`` URL (the database comes from its path), an
            ``AsyncMongoClient``, an ``AsyncDatabase``, or a Motor client/database (its settings are
            copied onto a native async client, since Motor is deprecated upstream).
        collection: the collection name (Agenda's default ``agendaJobs``).
        database: the database name when ``db`` does not say (default ``agenda``).
        ensure_indexes: create the indexes on connect.
        state_write_window: seconds the start and final writes of runs gather before they are sent
            together (0: those issued in the same event-loop turn).
    """

    def __init__(
        self,
        db: str | AsyncMongoClient[Any] | AsyncDatabase[Any] | Any,
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
        self._source = db
        self._collection_name = collection
        self._database_name = database
        self._ensure_indexes = ensure_indexes
        self._client: AsyncMongoClient[Any] | None = None
        self._owns_client = False
        self._collection: AsyncCollection[dict[str, Any]] | None = None
        self._url: str | None = None
        self._runs_collection_name = runs_collection
        self._history_ttl = history_ttl
        self._history_keep = history_keep
        self._runs: MongoRunStore | None = None
        if not isinstance(state_write_window, int | float) or not 0 <= state_write_window <= 1:
            raise InvalidInput("state_write_window", state_write_window, "must be 0 to 1 seconds")
        self._state_write_window = float(state_write_window)
        self._pending_states: list[_PendingState] = []
        self._flush_timer: asyncio.Handle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        if isinstance(db, str):
            self._validate_url(db)

    # -- connection -----------------------------------------------------------------------------

    def _validate_url(self, url: str) -> None:
        if not url.startswith(("mongodb://", "mongodb+srv://")):
            raise InvalidInput("db", redact_url(url), "must start with mongodb:// or mongodb+srv://")
        try:
            parse_uri(url, validate=True, warn=False, connect_timeout=None) if not url.startswith(
                "mongodb+srv://"
            ) else None
        except (InvalidURI, ConfigurationError, ValueError) as exc:
            raise InvalidInput("db", redact_url(url), str(exc)) from None
        self._url = url

    def describe(self) -> str:
        """Where this store points, for messages (no password)."""
        if self._url:
            return redact_url(self._url)
        if self._client is not None:
            return ", ".join(f"{h}:{p}" for h, p in self._client.topology_description.server_descriptions())
        return repr(self._source)

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
        database = self._resolve_database()
        codec = _CODEC
        self._collection = database.get_collection(self._collection_name, codec_options=codec)
        try:
            await database.command("ping")
        except ConnectionFailure as exc:
            await self.close()
            raise DatabaseUnavailable(f"cannot reach MongoDB at {self.describe()}: {_brief(exc)}") from exc
        self._runs = MongoRunStore(
            database.get_collection(self._runs_collection_name, codec_options=codec),
            ttl=self._history_ttl,
            keep_per_name=self._history_keep,
        )
        if self._ensure_indexes:
            await self._create_indexes()
            await self._runs.create_indexes()

    def _resolve_database(self) -> AsyncDatabase[dict[str, Any]]:
        source = self._source
        if _is_motor(source):
            source = _native_from_motor(source)
            self._owns_client = True
        if isinstance(source, str):
            parsed = parse_uri(source, warn=True) if source.startswith("mongodb://") else {"database": None}
            kwargs: dict[str, Any] = {"event_listeners": [_ConnectionLog()]}
            if "serverselectiontimeoutms" not in source.lower():
                kwargs["serverSelectionTimeoutMS"] = _SERVER_SELECTION_TIMEOUT_MS
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(source, **kwargs)
            self._client, self._owns_client = client, True
            name = self._database_name or parsed.get("database") or _db_from_srv(source) or DEFAULT_DATABASE
            return client[name]
        if isinstance(source, AsyncMongoClient):
            self._client = source
            return source[self._database_name or _default_database(source)]
        if isinstance(source, AsyncDatabase):
            self._client = source.client
            return source
        raise InvalidInput(
            "db",
            source,
            "must be a mongodb:// URL, an AsyncMongoClient, an AsyncDatabase or a Motor client/database",
        )

    async def _create_indexes(self) -> None:
        for name, keys, options in INDEXES:
            try:
                await self.collection.create_index(keys, name=name, **options)
            except OperationFailure as exc:
                # An existing collection may hold duplicate recurring documents from older Agenda
                # versions; the unique index is then skipped rather than refusing to start.
                log.warning("could not create index %s on %s: %s", name, self._collection_name, exc)

    async def close(self) -> None:
        """Close the client if this store created it (after the pending batched writes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while (self._pending_states or self._flushes) and loop.time() < deadline:
            self._start_flush()
            await asyncio.wait(set(self._flushes), timeout=max(deadline - loop.time(), 0.01))
        if self._client is not None and self._owns_client:
            await self._client.close()
        self._client = None
        self._collection = None
        self._runs = None

    # -- saving ---------------------------------------------------------------------------------

    @_translate_errors
    async def save_job(
        self, job: Job, *, now: datetime, last_modified_by: str | None, lock_token: str | None = None
    ) -> Job | None:
        """Agenda's saveJob: update by id, upsert a recurring or unique job, or insert (locked on the
        fly with ``lock_token``: the lock rides on the insert, no extra round trip)."""
        job.last_modified_by = last_modified_by
        doc = document_from_job(job)
        props = {k: v for k, v in doc.items() if k not in PROCESSOR_FIELDS}
        if job.id is not None:
            found = await self.collection.find_one_and_update(
                {"_id": to_object_id(job.id), "name": job.name},
                {"$set": props},
                return_document=ReturnDocument.AFTER,
            )
            if found is not None:
                _absorb(job, found)
            return None
        if job.type == "single":
            await self._save_single(job, doc, props, now)
        elif job.unique_query is not None:
            await self._save_unique(job, doc, props, now)
        else:
            if lock_token is not None:
                doc.update(lock_fields(now, lock_token, last_modified_by))
            result = await self.collection.insert_one(doc)
            job.id = str(result.inserted_id)
            if lock_token is not None:
                # The stored form (milliseconds, a copy of the data), as a claim would have read it.
                stored = bson.decode(bson.encode({**doc, "_id": result.inserted_id}), codec_options=_CODEC)
                return self._leased(stored, lock_token, now)
        return None

    @_translate_errors
    async def insert_many(self, jobs: Sequence[Job], *, last_modified_by: str | None) -> None:
        """Insert new one-off jobs in one round trip (per 100,000); sets each job's id."""
        if not jobs:
            return
        docs = []
        for job in jobs:
            job.last_modified_by = last_modified_by
            docs.append(document_from_job(job))
        result = await self.collection.insert_many(docs, ordered=True)
        for job, inserted_id in zip(jobs, result.inserted_ids, strict=True):
            job.id = str(inserted_id)

    async def _save_single(self, job: Job, doc: dict[str, Any], props: dict[str, Any], now: datetime) -> None:
        # One document per recurring name. A stored nextRunAt survives a re-call of every() (at every boot)
        # when it is due (Agenda's rule) or when the schedule itself did not change (so restarts never
        # push a schedule forward).
        for _ in range(3):
            existing = await self.collection.find_one({"name": job.name, "type": "single"})
            if existing is None:
                try:
                    result = await self.collection.insert_one(doc)
                except DuplicateKeyError:
                    continue  # another process created it first; update that one
                job.id = str(result.inserted_id)
                return
            update = dict(props)
            # Compare what is stored with what would be stored (BSON keeps milliseconds only).
            stored_form = bson.decode(bson.encode(props), codec_options=_CODEC)
            unchanged = all(existing.get(k) == stored_form.get(k) for k in SCHEDULE_FIELDS)
            next_run = props.get("nextRunAt")
            # A stored nextRunAt that is not a date (another tool's) is replaced, never kept.
            if isinstance(existing.get("nextRunAt"), datetime) and (
                unchanged or next_run is None or next_run <= now
            ):
                update.pop("nextRunAt", None)
            found = await self.collection.find_one_and_update(
                {"_id": existing["_id"]}, {"$set": update}, return_document=ReturnDocument.AFTER
            )
            if found is not None:
                _absorb(job, found)
                return
        raise RuntimeError(f"could not save recurring job {job.name!r}: it kept changing concurrently")

    async def _save_unique(self, job: Job, doc: dict[str, Any], props: dict[str, Any], now: datetime) -> None:
        assert job.unique_query is not None
        query = {**job.unique_query, "name": job.name}
        debounce = job.debounce_options
        if debounce is None:
            if job.unique_insert_only:
                update: dict[str, Any] = {"$setOnInsert": doc}
            else:
                update = {"$set": props, "$setOnInsert": _only_processor(doc)}
        else:
            with _user_filter("unique", job.unique_query):
                existing = await self.collection.find_one(query)
            update = _debounce_update(job, doc, props, existing, now)
        with _user_filter("unique", job.unique_query):
            found = await self.collection.find_one_and_update(
                query, update, upsert=True, return_document=ReturnDocument.AFTER
            )
        if found is not None:
            _absorb(job, found)

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
            jobs = [self._leased(doc, token, request.now) for doc in docs]
            readable = await self._fail_unreadable(jobs, request.now)
            if readable:
                return readable
        return []

    async def _claim_documents(self, request: ClaimRequest, token: str, limit: int) -> list[dict[str, Any]]:
        """The claimed documents, as locked.

        One job: Agenda's single atomic find_one_and_update. Several: finds pick the candidates
        (usually one; another for the names left with room when a name filled up), one update_many
        locks those still claimable (each document's update is atomic, and the claim conditions are
        repeated, so a job another worker took meanwhile is left alone), and one read by id and token
        returns what this worker won. A few round trips for many jobs instead of one per job; on
        servers that scan for the claim query, a scan or two instead of one per job.
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
            return [] if found is None else [found]
        for _ in range(3):
            ids = await self._claim_candidates(request, limit)
            if not ids:
                return []
            result = await self.collection.update_many(
                {"$and": [{"_id": {"$in": ids}}, claim_filter(request)]}, claim_update(request, token)
            )
            if result.modified_count:
                break
            # Every candidate was taken by another worker between the two steps: look again.
        else:
            return []
        won = self.collection.find({"_id": {"$in": ids}, "lockToken": token, "lockedAt": request.now})
        by_id = {doc["_id"]: doc async for doc in won}
        return [by_id[i] for i in ids if i in by_id]

    async def _fail_unreadable(self, jobs: list[Job], now: datetime) -> list[Job]:
        """Fail and unlock the claimed jobs whose documents cannot be read; return the others."""
        broken = [job for job in jobs if job.unreadable]
        if broken:
            await self._fenced_writes([(job, unreadable_failure(job, now)) for job in broken])
            for job in broken:
                log_unreadable(job)
        return [job for job in jobs if not job.unreadable]

    async def _claim_candidates(self, request: ClaimRequest, limit: int) -> list[Any]:
        """The ``_id``s of the next claimable jobs in claim order, within the batch's quota.

        A find over the names with room returns ``wanted`` candidates; one of a full name is skipped,
        and then that name is left out of the next find. Each find that comes back full fills the batch
        or a name, so this ends after at most one find per name (plus one).
        """
        quota = ClaimQuota(request, limit)
        chosen: list[Any] = []
        while names := quota.open_names():
            wanted = quota.wanted()
            cursor = self.collection.find(
                claim_filter(request.only(names), exclude=chosen),
                projection={"_id": 1, "name": 1},
                sort=CLAIM_SORT,
                limit=wanted,
            )
            found = [doc async for doc in cursor]
            chosen.extend(doc["_id"] for doc in found if quota.take(doc.get("name")))
            if len(found) < wanted:
                break  # nothing more is claimable for these names
        return chosen

    @staticmethod
    def _leased(doc: dict[str, Any], token: str, locked_at: datetime) -> Job:
        job = job_from_document(doc)
        set_lease(job, Lease(token=token, locked_at=locked_at))
        return job

    @_translate_errors
    async def save_state(self, job: Job, *, fields: Sequence[str] | None = None) -> bool:
        """Write worker-managed fields, fenced by the lease; False if the job is gone or the lock lost."""
        names = fields if fields is not None else [attr for attr, _ in STATE_FIELDS]
        values = {STATE_KEYS[attr]: getattr(job, attr) for attr in names}
        lease = job.lease
        if lease is not None and "locked_at" in names and job.locked_at is None:
            values["lockToken"] = None
        if lease is None:
            result = await self.collection.update_one(fence_filter(job.id, None, None), {"$set": values})
            return result.matched_count > 0
        async with lease.write_lock:
            if lease.lost:
                return False
            result = await self.collection.update_one(
                fence_filter(job.id, lease.locked_at, lease.token), {"$set": values}
            )
            if result.matched_count == 0:
                return False
            if "locked_at" in names and job.locked_at is not None:
                lease.locked_at = job.locked_at
            return True

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
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        # The values are taken now: a heartbeat that moves lockedAt before the flush must not change
        # what this write says (a final write releases the lock, whatever happens meanwhile).
        values = _state_values(job)
        keys = frozenset(STATE_KEYS[attr] for attr in stamp) & values.keys()
        self._pending_states.append(_PendingState(job, values, keys, done))
        if len(self._pending_states) >= _MAX_STATE_BATCH:
            self._start_flush()
        elif self._flush_timer is None:
            if self._state_write_window > 0:
                self._flush_timer = loop.call_later(self._state_write_window, self._start_flush)
            else:
                self._flush_timer = loop.call_soon(self._start_flush)
        return await done

    def _start_flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._flushes:
            return  # one batch in flight: this one follows when it returns (_flushed)
        batch, self._pending_states = self._pending_states, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._flush_states(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._pending_states:
            self._start_flush()

    async def _flush_states(self, batch: list[_PendingState]) -> None:
        written_at = _write_instant()
        for entry in batch:
            for key in entry.stamp:
                entry.values[key] = written_at
            if entry.values.get("lockedAt") is not None:
                # A write that keeps the lock renews it; one lockedAt for the batch lets the runs
                # claimed together stay fenced by one (lockedAt, token) pair.
                entry.values["lockedAt"] = written_at
        try:
            results = await self._fenced_writes([(entry.job, entry.values) for entry in batch])
        except ConnectionFailure as exc:
            error = DatabaseUnavailable(f"cannot reach MongoDB at {self.describe()}: {_brief(exc)}")
            for entry in batch:
                if not entry.done.done():
                    entry.done.set_exception(error)
        except Exception as exc:
            for entry in batch:
                if not entry.done.done():
                    entry.done.set_exception(exc)
        else:
            for entry, ok in zip(batch, results, strict=True):
                if ok:
                    _absorb_written(entry.job, entry.values)
                if not entry.done.done():
                    entry.done.set_result(ok)

    async def _fenced_writes(self, entries: list[tuple[Job, dict[str, Any]]]) -> list[bool]:
        """Apply ``$set: values`` to each leased job, fenced by its lease, in one round trip; tell
        which applied. Jobs whose lease (lockedAt, token) and values are the same share one
        ``update_many``. A lease's ``locked_at`` follows the ``lockedAt`` its write set."""
        async with contextlib.AsyncExitStack() as stack:
            for job, _ in entries:
                assert job.lease is not None
                await stack.enter_async_context(job.lease.write_lock)
            live = [(job, values) for job, values in entries if job.lease and not job.lease.lost]
            groups: dict[tuple[str, datetime, bytes], tuple[list[Any], dict[str, Any]]] = {}
            for job, values in live:
                lease = job.lease
                assert lease is not None
                key = (lease.token, lease.locked_at, bson.encode(values))
                groups.setdefault(key, ([], values))[0].append(to_object_id(job.id))
            writes: list[UpdateOne | UpdateMany] = []
            for (token, locked_at, _), (ids, values) in groups.items():
                if len(ids) == 1:
                    writes.append(UpdateOne(fence_filter(ids[0], locked_at, token), {"$set": values}))
                else:
                    writes.append(UpdateMany(fence_many_filter(ids, locked_at, token), {"$set": values}))
            applied: list[bool] = []
            if live:
                matched = await self._write(writes)
                if matched == len(live):
                    applied = [True] * len(live)
                else:
                    applied = await self._which_applied([job for job, _ in live], [v for _, v in live])
            outcome = dict(zip((id(job) for job, _ in live), applied, strict=True))
            for job, values in live:
                if outcome[id(job)] and job.lease is not None and values.get("lockedAt") is not None:
                    job.lease.locked_at = values["lockedAt"]
            return [outcome.get(id(job), False) for job, _ in entries]

    async def _write(self, writes: list[UpdateOne | UpdateMany]) -> int:
        """Send the updates (one command); how many documents they matched."""
        if len(writes) == 1:
            write = writes[0]
            one = self.collection.update_one if isinstance(write, UpdateOne) else self.collection.update_many
            result = await one(write._filter, write._doc)
            return result.matched_count
        bulk = await self.collection.bulk_write(writes, ordered=False)
        return bulk.matched_count

    async def _which_applied(self, jobs: list[Job], values: list[dict[str, Any]]) -> list[bool]:
        """After a partly matched bulk write: a write applied iff the document now holds what it set
        for the fields no other writer sets to the same value (this run's lastRunAt, lastFinishedAt
        and lock)."""
        ids = [to_object_id(job.id) for job in jobs]
        found = {doc["_id"]: doc async for doc in self.collection.find({"_id": {"$in": ids}})}
        outcomes = []
        for job_id, job, value in zip(ids, jobs, values, strict=True):
            doc = found.get(job_id)
            lease = job.lease
            token = None if value["lockedAt"] is None else (lease.token if lease else None)
            outcomes.append(
                doc is not None
                and ("lastRunAt" not in value or _same_instant(doc.get("lastRunAt"), value["lastRunAt"]))
                and (
                    value.get("lastFinishedAt") is None
                    or _same_instant(doc.get("lastFinishedAt"), value["lastFinishedAt"])
                )
                and _same_instant(doc.get("lockedAt"), value["lockedAt"])
                and doc.get("lockToken") == token
            )
        return outcomes

    async def due_changes(self) -> AsyncIterator[tuple[str, datetime | None]]:
        """Yield ``(name, nextRunAt)`` of jobs that may have become claimable: inserted, rescheduled,
        unlocked or re-enabled (a change stream; needs a replica set). Claims and lock renewals do
        not appear."""
        try:
            stream_cm = await self.collection.watch(
                WAKE_UP_PIPELINE, full_document="updateLookup", max_await_time_ms=int(_STREAM_AWAIT_S * 1000)
            )
        except OperationFailure as exc:
            if exc.code in _NO_CHANGE_STREAMS:
                raise WakeUpsUnavailable(f"the server has no change streams: {exc}") from None
            raise
        loop = asyncio.get_running_loop()
        early_empty = 0
        async with stream_cm as stream:
            while stream.alive:
                asked = loop.time()
                change = await stream.try_next()
                if change is None:
                    # An empty batch before the await time is up: the server woke the stream for
                    # writes the pipeline dropped (claims, starts, finishes). Without a pause, every
                    # write of the fleet would cost every worker a round trip.
                    early_empty = early_empty + 1 if loop.time() - asked < _STREAM_AWAIT_S / 2 else 0
                    if early_empty >= _EMPTY_BATCHES_FREE:
                        await asyncio.sleep(_EMPTY_BATCH_PAUSE)
                    continue
                early_empty = 0
                doc = change.get("fullDocument")
                if not doc or doc.get("disabled") is True or doc.get("lockedAt") is not None:
                    continue
                name = doc.get("name")
                if isinstance(name, str):
                    next_run = doc.get("nextRunAt")
                    if isinstance(next_run, datetime) and next_run.tzinfo is None:
                        next_run = next_run.replace(tzinfo=UTC)
                    yield name, next_run if isinstance(next_run, datetime) else None

    async def run_changes(self) -> AsyncIterator[dict[str, Any]]:
        """Open a change stream of run state (starts, progress, ends, removals) and return
        its events, in the server's order, each with the document after the change (``fullDocument``;
        None once it is gone). Every change made after this returns is in it. Fleet events are derived
        from them; needs change streams like ``due_changes``."""
        try:
            stream = await self.collection.watch(
                RUN_CHANGES_PIPELINE, full_document="updateLookup", max_await_time_ms=1000
            )
        except OperationFailure as exc:
            if exc.code in _NO_CHANGE_STREAMS:
                raise WakeUpsUnavailable(f"the server has no change streams: {exc}") from None
            raise
        return _changes_of(stream)

    @_translate_errors
    async def renew_locks(self, jobs: Sequence[Job], now: datetime) -> list[Job]:
        """Heartbeat: move each lease's ``lockedAt`` to ``now`` in one round trip; returns the jobs
        whose lock is gone. Leases of runs that are writing their final state are left alone."""
        live = [j for j in jobs if j.lease is not None and not j.lease.lost and not j.lease.finishing]
        if not live:
            return []
        applied = await self._fenced_writes([(job, {"lockedAt": now}) for job in live])
        lost = []
        for job, ok in zip(live, applied, strict=True):
            lease = job.lease
            if ok and job.locked_at is not None:
                job.locked_at = now
            elif not ok and lease is not None and not lease.finishing:
                lost.append(job)
        return lost

    @_translate_errors
    async def release(self, jobs: Sequence[Job], *, reschedule_at: datetime | None = None) -> None:
        """Unlock leased jobs in one round trip. With ``reschedule_at`` they become due then; a job
        without a next run (a recovered crash) becomes due now, so no release strands it."""
        now = datetime.now(UTC)
        entries = []
        for job in jobs:
            lease = job.lease
            if lease is None or lease.lost:
                continue
            lease.finishing = True
            values: dict[str, Any] = {"lockedAt": None, "lockToken": None}
            if reschedule_at is not None:
                values["nextRunAt"] = reschedule_at
            elif job.next_run_at is None:
                values["nextRunAt"] = now.replace(microsecond=now.microsecond // 1000 * 1000)
            entries.append((job, values))
        if entries:
            await self._fenced_writes(entries)
        for job, _ in entries:
            job.locked_at = None

    @_translate_errors
    async def refresh_run_fields(self, job: Job) -> None:
        """Reload lastRunAt, lockedAt, lastFinishedAt (for ``is_running`` on a job read earlier)."""
        found = await self.collection.find_one(
            {"_id": to_object_id(job.id)}, projection={"lastRunAt": 1, "lockedAt": 1, "lastFinishedAt": 1}
        )
        if found is None:
            raise JobNotFound(f"job with id {job.id} not found in database")
        fresh = job_from_document({"name": job.name, **found})
        job.last_run_at, job.locked_at = fresh.last_run_at, fresh.locked_at
        job.last_finished_at = fresh.last_finished_at

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
        counts: dict[str, dict[str, Any]] = {}
        async for doc in self.collection.find({}, projection=projection):
            job = job_from_document(doc)
            entry = counts.setdefault(job.name, _empty_overview(job.name))
            entry["total"] += 1
            entry[compute_job_state(job, now).value] += 1
            if job.disabled:
                entry["paused"] += 1
        return sorted(counts.values(), key=lambda e: e["name"])

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
        return await self.collection.count_documents({"nextRunAt": {"$lt": now}})

    @_translate_errors
    async def distinct_names(self) -> list[str]:
        """Distinct job names, via $group (allowed under the Stable API, unlike distinct)."""
        cursor = await self.collection.aggregate([{"$group": {"_id": "$name"}}, {"$sort": {"_id": 1}}])
        return [doc["_id"] async for doc in cursor if isinstance(doc.get("_id"), str)]


async def _changes_of(stream: Any) -> AsyncIterator[dict[str, Any]]:
    async with stream as opened:
        async for change in opened:
            yield change


def _absorb(job: Job, doc: dict[str, Any]) -> None:
    """Copy what the database decided (id, nextRunAt, debounce start) back onto the job."""
    job.id = str(doc["_id"])
    fresh = job_from_document(doc)
    job.next_run_at = fresh.next_run_at
    job.debounce_started_at = fresh.debounce_started_at
    job.data = fresh.data


def _absorb_written(job: Job, values: dict[str, Any]) -> None:
    """After a batched write applied: the job holds the instants the batch stamped."""
    for attr in ("locked_at", "last_run_at", "last_finished_at"):
        key = STATE_KEYS[attr]
        if key in values:
            setattr(job, attr, values[key])


def _only_processor(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k in PROCESSOR_FIELDS}


def _debounce_update(
    job: Job,
    doc: dict[str, Any],
    props: dict[str, Any],
    existing: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """Agenda's debounce: trailing pushes the run back (up to max_wait); leading keeps the first run."""
    options = job.debounce_options
    assert options is not None
    if existing is None:
        fields = dict(props)
        if options.strategy == "trailing":
            fields["nextRunAt"] = now + options.delay
        fields["debounceStartedAt"] = now
        return {"$set": fields, "$setOnInsert": _only_processor(doc)}
    fields = dict(props)
    started = existing.get("debounceStartedAt")
    if isinstance(started, datetime) and started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    if options.strategy == "leading":
        fields.pop("nextRunAt", None)
        fields["debounceStartedAt"] = started or now
    elif options.max_wait is not None and started is not None and now - started >= options.max_wait:
        fields["nextRunAt"] = now
        fields["debounceStartedAt"] = None
    else:
        fields["nextRunAt"] = now + options.delay
        fields["debounceStartedAt"] = started or now
    return {"$set": fields}


def _empty_overview(name: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "total": 0, "paused": 0}
    for state in JobState:
        entry[state.value] = 0
    return entry


def _is_motor(obj: Any) -> bool:
    return type(obj).__module__.startswith("motor.")


def _native_from_motor(obj: Any) -> AsyncMongoClient[Any] | AsyncDatabase[Any]:
    """A native async client with the Motor client's settings (Motor wraps a sync PyMongo client)."""
    delegate = getattr(obj, "delegate", None)
    client = getattr(delegate, "client", delegate)  # a Motor database's delegate is a sync Database
    init_kwargs = getattr(client, "_init_kwargs", None)
    if not isinstance(init_kwargs, dict):
        raise InvalidInput("db", obj, "this Motor client's settings cannot be read; pass a mongodb:// URL")
    native: AsyncMongoClient[Any] = AsyncMongoClient(**init_kwargs)
    db_name = getattr(obj, "name", None) if hasattr(obj, "client") else None
    return native[db_name] if isinstance(db_name, str) else native


def _default_database(client: AsyncMongoClient[Any]) -> str:
    try:
        return client.get_default_database().name
    except ConfigurationError:
        return DEFAULT_DATABASE


def _db_from_srv(url: str) -> str | None:
    path = urlsplit(url).path.lstrip("/")
    return path or None

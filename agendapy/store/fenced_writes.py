"""Fenced writes of leased jobs in one round trip, and the state writes of runs gathered into batches.

Every write here is fenced by the job's lease (``fence_filter``/``fence_many_filter``): it applies only
while the lease's ``(lockedAt, lockToken)`` is the stored one. The state writes of runs issued within
a short window go to the server together (group commit), identical ones as one ``update_many``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import bson
from pymongo import UpdateMany, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure

from ..job import Job
from .common import state_values
from .queries import fence_filter, fence_many_filter
from .schema import STATE_KEYS, to_object_id

__all__ = ["DEFAULT_STATE_WRITE_WINDOW", "FencedWrites"]

#: How long the state writes of runs gather before they go out together (seconds), by default.
DEFAULT_STATE_WRITE_WINDOW = 0.005
#: A gathered batch this large is written at once, without waiting for the window to close.
_MAX_STATE_BATCH = 200


def _state_values(job: Job) -> dict[str, Any]:
    values = state_values(job, None)
    if "lockToken" in values:
        # The final write of a run releases the lock. Its lastRunAt was written by the run's start
        # write (no run starts without it) and has not changed: leaving it out lets the finishes of
        # runs that started at different moments go out as one update.
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


def _absorb_written(job: Job, values: dict[str, Any]) -> None:
    """After a batched write applied: the job holds the instants the batch stamped."""
    for attr in ("locked_at", "last_run_at", "last_finished_at"):
        key = STATE_KEYS[attr]
        if key in values:
            setattr(job, attr, values[key])


class FencedWrites:
    """Fenced writes to one jobs collection, and the batching of the state writes of runs.

    Args:
        collection: the collection (called per write: the store may reconnect).
        window: seconds the state writes of runs gather before they are sent together (0: those
            issued in the same event-loop turn).
        unavailable: the error a batch's writers get when the server cannot be reached.
    """

    def __init__(
        self,
        collection: Callable[[], AsyncCollection[dict[str, Any]]],
        *,
        window: float,
        unavailable: Callable[[ConnectionFailure], Exception],
    ) -> None:
        self._collection = collection
        self._window = window
        self._unavailable = unavailable
        self._pending: list[_PendingState] = []
        self._timer: asyncio.Handle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def queue(self, job: Job, stamp: Collection[str]) -> bool:
        """``save_state`` of every field of a leased job, sent with the batch it falls into; whether
        it applied. One batch is in flight at a time: the writes issued meanwhile go out together as
        soon as it returns, so batches grow with the server's latency rather than only with the window.

        ``stamp`` names attributes set to the moment the batch is written (see
        ``MongoJobStore.save_state_batched``); a lock the write keeps is renewed to that moment.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        # The values are taken now: a heartbeat that moves lockedAt before the flush must not change
        # what this write says (a final write releases the lock, whatever happens meanwhile).
        values = _state_values(job)
        keys = frozenset(STATE_KEYS[attr] for attr in stamp) & values.keys()
        self._pending.append(_PendingState(job, values, keys, done))
        if len(self._pending) >= _MAX_STATE_BATCH:
            self._start_flush()
        elif self._timer is None:
            if self._window > 0:
                self._timer = loop.call_later(self._window, self._start_flush)
            else:
                self._timer = loop.call_soon(self._start_flush)
        return await done

    async def drain(self, timeout: float) -> None:
        """Send the queued writes now and wait for them (at most ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._pending or self._flushes) and loop.time() < deadline:
            self._start_flush()
            await asyncio.wait(set(self._flushes), timeout=max(deadline - loop.time(), 0.01))

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushes:
            return  # one batch in flight: this one follows when it returns (_flushed)
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._pending:
            self._start_flush()

    async def _flush(self, batch: list[_PendingState]) -> None:
        written_at = _write_instant()
        for entry in batch:
            for key in entry.stamp:
                entry.values[key] = written_at
            if entry.values.get("lockedAt") is not None:
                # A write that keeps the lock renews it; one lockedAt for the batch lets the runs
                # claimed together stay fenced by one (lockedAt, token) pair.
                entry.values["lockedAt"] = written_at
        try:
            results = await self.apply([(entry.job, entry.values) for entry in batch])
        except ConnectionFailure as exc:
            error = self._unavailable(exc)
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

    async def apply(self, entries: list[tuple[Job, dict[str, Any]]]) -> list[bool]:
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
            collection = self._collection()
            one = collection.update_one if isinstance(write, UpdateOne) else collection.update_many
            result = await one(write._filter, write._doc)
            return result.matched_count
        bulk = await self._collection().bulk_write(writes, ordered=False)
        return bulk.matched_count

    async def _which_applied(self, jobs: list[Job], values: list[dict[str, Any]]) -> list[bool]:
        """After a partly matched bulk write: a write applied iff the document now holds what it set
        for the fields no other writer sets to the same value (this run's lastRunAt, lastFinishedAt
        and lock)."""
        ids = [to_object_id(job.id) for job in jobs]
        found = {doc["_id"]: doc async for doc in self._collection().find({"_id": {"$in": ids}})}
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

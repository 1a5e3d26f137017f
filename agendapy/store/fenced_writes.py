"""Fenced writes of leased jobs in one round trip, and the state writes of runs gathered into batches.

Every write here is fenced by the job's lease (``fence_filter``/``fence_many_filter``): it applies only
while the lease's ``(lockedAt, lockToken)`` is the stored one. The state writes of runs issued within
a short window go to the server together (group commit), identical ones as one ``update_many``. A
write the server refuses for one document is that job's alone (see :mod:`agendapy.store.refusals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import bson
from pymongo import UpdateMany, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, WriteError

from ..job import Job
from .common import state_values
from .queries import fence_filter, fence_many_filter
from .refusals import Refused, bulk_refusals, record_refusal, single_refusal
from .schema import STATE_KEYS, to_object_id

__all__ = ["DEFAULT_STATE_WRITE_WINDOW", "FencedWrites"]

log = logging.getLogger("agendapy.store")

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
            results = await self.outcomes([(entry.job, entry.values) for entry in batch])
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
            refused: list[tuple[_PendingState, Refused]] = []
            for entry, outcome in zip(batch, results, strict=True):
                if isinstance(outcome, Refused):
                    refused.append((entry, outcome))
                    continue
                if outcome:
                    _absorb_written(entry.job, entry.values)
                if not entry.done.done():
                    entry.done.set_result(outcome)
            # After the others are answered: their runs need not wait for these extra writes.
            for entry, refusal in refused:
                await self._settle_refused(entry, refusal)

    async def _settle_refused(self, entry: _PendingState, refused: Refused) -> None:
        """One run's write was refused: the others of its batch stand. A transient refusal (the
        server stepping down) is retried like a lost connection; any other would be refused again
        on every retry, so the job is failed and unlocked without the fields the server refused, and
        its run ends without a save (never locked until its lock expires, only to fail the same way)."""
        if refused.transient:
            # A server stepping down is, for this write, a server out of reach.
            error = self._unavailable(ConnectionFailure(refused.message))
            if not entry.done.done():
                entry.done.set_exception(error)
            return
        try:
            await record_refusal(self._collection(), entry.job, entry.values, refused, _write_instant())
        except Exception as exc:
            # Not even a bare unlock could be written: the lock expires and the job comes back.
            log.error(
                "could not unlock %s (%s) after the server refused its state (%s): %s",
                entry.job.name,
                entry.job.id,
                refused.message,
                exc,
            )
        if not entry.done.done():
            entry.done.set_result(False)

    async def apply(self, entries: list[tuple[Job, dict[str, Any]]]) -> list[bool]:
        """:meth:`outcomes` for writers that cannot take a refusal (heartbeats, releases): a write
        the server refused raises, as a single update would."""
        outcomes = await self.outcomes(entries)
        for outcome in outcomes:
            if isinstance(outcome, Refused):
                raise outcome.error
        return [bool(outcome) for outcome in outcomes]

    async def outcomes(self, entries: list[tuple[Job, dict[str, Any]]]) -> list[bool | Refused]:
        """Apply ``$set: values`` to each leased job, fenced by its lease, in one round trip; tell
        which applied, and which the server refused (each refusal is that job's alone: the other
        writes of the round trip apply). Jobs whose lease (lockedAt, token) and values are the same
        share one ``update_many``. A lease's ``locked_at`` follows the ``lockedAt`` its write set."""
        async with contextlib.AsyncExitStack() as stack:
            for job, _ in entries:
                assert job.lease is not None
                await stack.enter_async_context(job.lease.write_lock)
            live = [(job, values) for job, values in entries if job.lease and not job.lease.lost]
            groups: dict[tuple[str, datetime, bytes], list[int]] = {}
            for index, (job, values) in enumerate(live):
                lease = job.lease
                assert lease is not None
                groups.setdefault((lease.token, lease.locked_at, bson.encode(values)), []).append(index)
            outcomes = await self._apply(live, list(groups.values())) if live else []
            outcome = dict(zip((id(job) for job, _ in live), outcomes, strict=True))
            for job, values in live:
                if outcome[id(job)] is True and job.lease is not None and values.get("lockedAt") is not None:
                    job.lease.locked_at = values["lockedAt"]
            return [outcome.get(id(job), False) for job, _ in entries]

    async def _apply(
        self, live: list[tuple[Job, dict[str, Any]]], members: list[list[int]]
    ) -> list[bool | Refused]:
        """Send one update per group of ``members`` (indexes into ``live``, which share lease and
        values); the outcome of each job of ``live``."""
        writes: list[UpdateOne | UpdateMany] = []
        for group in members:
            job, values = live[group[0]]
            lease = job.lease
            assert lease is not None
            if len(group) == 1:
                writes.append(UpdateOne(fence_filter(job.id, lease.locked_at, lease.token), {"$set": values}))
            else:
                fence = fence_many_filter([live[i][0].id for i in group], lease.locked_at, lease.token)
                writes.append(UpdateMany(fence, {"$set": values}))
        matched, refusals = await self._write(writes)
        if not refusals and matched == len(live):
            return [True] * len(live)
        outcomes: list[bool | Refused | None] = [None] * len(live)
        split: list[int] = []
        for write_index, refused in refusals.items():
            group = members[write_index]
            if len(group) == 1:
                outcomes[group[0]] = refused
            else:
                split.extend(group)  # one document of several refused: which one is found below
        unknown = [i for i, known in enumerate(outcomes) if known is None]
        applied = await self._which_applied([live[i][0] for i in unknown], [live[i][1] for i in unknown])
        for i, ok in zip(unknown, applied, strict=True):
            outcomes[i] = ok
        # An update_many stops at the document the server refuses: the others of its group that it
        # did not reach go again, one update each, so the refusal falls on its own job.
        retry = [i for i in split if outcomes[i] is False]
        if retry:
            again = await self._apply([live[i] for i in retry], [[n] for n in range(len(retry))])
            for i, result in zip(retry, again, strict=True):
                outcomes[i] = result
        return [False if outcome is None else outcome for outcome in outcomes]

    async def _write(self, writes: list[UpdateOne | UpdateMany]) -> tuple[int, dict[int, Refused]]:
        """Send the updates (one command, unordered: a refused one does not stop the others); how
        many documents the applied ones matched, and the refused ones by their index in ``writes``."""
        collection = self._collection()
        if len(writes) == 1:
            write = writes[0]
            one = collection.update_one if isinstance(write, UpdateOne) else collection.update_many
            try:
                result = await one(write._filter, write._doc)
            except WriteError as exc:
                return 0, {0: single_refusal(exc)}
            return result.matched_count, {}
        try:
            bulk = await collection.bulk_write(writes, ordered=False)
        except BulkWriteError as exc:
            return int(exc.details.get("nMatched", 0)), bulk_refusals(exc)
        return bulk.matched_count, {}

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

"""Fenced writes of leased jobs in one round trip, and the state writes of runs gathered into batches.

Every write here is fenced by the job's lease (``fence_filter``/``fence_many_filter``): it applies only
while the lease's ``(lockedAt, lockToken)`` is the stored one. The state writes of runs issued within
a short window go to the server together (group commit), identical ones as one ``update_many``. A
write the server refuses for one document is that job's alone (see :mod:`agendapy.store.refusals`).
The batching itself, which every store shares, is :mod:`agendapy.store.state_batches`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import bson
from pymongo import UpdateMany, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, WriteError

from ..job import Job
from .queries import fence_filter, fence_many_filter
from .refusals import Refused, bulk_refusals, record_refusal, single_refusal
from .schema import to_object_id
from .state_batches import DEFAULT_STATE_WRITE_WINDOW, PendingState, StateBatcher, write_instant

__all__ = ["DEFAULT_STATE_WRITE_WINDOW", "FencedWrites"]

log = logging.getLogger("agendapy.store")


def _same_instant(stored: Any, written: datetime | None) -> bool:
    if stored is None or written is None:
        return stored is None and written is None
    if isinstance(stored, datetime) and stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    return bool(stored == written)


class FencedWrites(StateBatcher[Refused]):
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
        super().__init__(window=window)
        self._collection = collection
        self._unavailable = unavailable

    async def _settle_refused(self, entry: PendingState, refused: Refused) -> None:
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
            await record_refusal(self._collection(), entry.job, entry.values, refused, write_instant())
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

    async def _write_leased(self, live: list[tuple[Job, dict[str, Any]]]) -> list[bool | Refused]:
        """``$set: values`` on each job, fenced by its lease; jobs whose lease (lockedAt, token) and
        values are the same share one ``update_many``."""
        groups: dict[tuple[str, datetime, bytes], list[int]] = {}
        for index, (job, values) in enumerate(live):
            lease = job.lease
            assert lease is not None
            groups.setdefault((lease.token, lease.locked_at, bson.encode(values)), []).append(index)
        return await self._apply(live, list(groups.values()))

    def _refusal_error(self, refused: Refused) -> Exception:
        return refused.error

    async def _remove_ids(self, job_ids: list[str]) -> None:
        await self._collection().delete_many({"_id": {"$in": [to_object_id(job_id) for job_id in job_ids]}})

    def _batch_error(self, exc: Exception) -> Exception:
        return self._unavailable(exc) if isinstance(exc, ConnectionFailure) else exc

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

"""The state writes of runs gathered into batches (group commit), for any store.

A run's state writes issued within a short window go to the server together; one batch is in flight
at a time. What is store-neutral lives here: the queue and its window, the instants a batch stamps,
the lease's write lock and ``lockedAt``, and answering each writer. A store's writer
(:class:`agendapy.store.fenced_writes.FencedWrites`, ``agendapy.store.postgres.state_writes.StateWrites``)
provides the write itself, fenced by each job's lease, and what to do with a write its server refused.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from ..job import Job
from .common import release_values, state_values
from .schema import STATE_KEYS

__all__ = ["DEFAULT_STATE_WRITE_WINDOW", "PendingState", "StateBatcher", "write_instant"]

#: How long the state writes of runs gather before they go out together (seconds), by default.
DEFAULT_STATE_WRITE_WINDOW = 0.005
#: A gathered batch this large is written at once, without waiting for the window to close.
_MAX_STATE_BATCH = 200

#: A store's refusal of one job's write (the others of its batch stand).
R = TypeVar("R")


def batched_state_values(job: Job) -> dict[str, Any]:
    """The document fields a batched state write of ``job`` sets."""
    values = state_values(job, None)
    if "lockToken" in values:
        # The final write of a run releases the lock. Its lastRunAt was written by the run's start
        # write (no run starts without it) and has not changed: leaving it out lets the finishes of
        # runs that started at different moments go out as one update.
        del values["lastRunAt"]
    return values


def write_instant() -> datetime:
    """Now, to the millisecond BSON keeps (so what is stored equals what the job holds)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclasses.dataclass
class PendingRemoval:
    """The deletion of a finished job waiting for the window to close."""

    job_id: str
    done: asyncio.Future[None]


@dataclasses.dataclass
class PendingState:
    """A state write waiting for the window to close: its values are fixed when it is queued."""

    job: Job
    values: dict[str, Any]
    stamp: frozenset[str]  # document keys to set to the moment the batch is written
    done: asyncio.Future[bool]


def _absorb_written(job: Job, values: dict[str, Any]) -> None:
    """After a batched write applied: the job holds the instants the batch stamped."""
    for attr in ("locked_at", "last_run_at", "last_finished_at"):
        key = STATE_KEYS[attr]
        if key in values:
            setattr(job, attr, values[key])


class StateBatcher(abc.ABC, Generic[R]):
    """Fenced writes of leased jobs (heartbeats and releases among them), and the batching of the state
    writes of runs and of the deletions of finished jobs (``remove_on_complete``); a store provides
    :meth:`_write_leased`, :meth:`_settle_refused`, :meth:`_refusal_error` and :meth:`_remove_ids`.

    Args:
        window: seconds the state writes of runs gather before they are sent together (0: those
            issued in the same event-loop turn).
    """

    def __init__(self, *, window: float) -> None:
        self._window = window
        self._pending: list[PendingState] = []
        self._removals: list[PendingRemoval] = []
        self._timer: asyncio.Handle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def queue(self, job: Job, stamp: Collection[str]) -> bool:
        """``save_state`` of every field of a leased job, sent with the batch it falls into; whether
        it applied. One batch is in flight at a time: the writes issued meanwhile go out together as
        soon as it returns, so batches grow with the server's latency rather than only with the window.

        ``stamp`` names attributes set to the moment the batch is written (see
        ``JobStore.save_state_batched``); a lock the write keeps is renewed to that moment.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        # The values are taken now: a heartbeat that moves lockedAt before the flush must not change
        # what this write says (a final write releases the lock, whatever happens meanwhile).
        values = batched_state_values(job)
        keys = frozenset(STATE_KEYS[attr] for attr in stamp) & values.keys()
        self._pending.append(PendingState(job, values, keys, done))
        self._flush_soon(len(self._pending))
        return await done

    async def queue_removal(self, job_id: str) -> None:
        """Delete the job ``job_id`` (by id, as ``remove()`` does), sent with the batch it falls into:
        the deletions of runs that end close together go out as one delete."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._removals.append(PendingRemoval(job_id, done))
        self._flush_soon(len(self._removals))
        await done

    def _flush_soon(self, queued: int) -> None:
        """Send what is queued when the window closes, or now if a batch is full."""
        if queued >= _MAX_STATE_BATCH:
            self._start_flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            if self._window > 0:
                self._timer = loop.call_later(self._window, self._start_flush)
            else:
                self._timer = loop.call_soon(self._start_flush)

    async def drain(self, timeout: float) -> None:
        """Send the queued writes now and wait for them (at most ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._pending or self._removals or self._flushes) and loop.time() < deadline:
            self._start_flush()
            await asyncio.wait(set(self._flushes), timeout=max(deadline - loop.time(), 0.01))

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushes:
            return  # one batch in flight: this one follows when it returns (_flushed)
        batch, self._pending = self._pending, []
        removals, self._removals = self._removals, []
        if batch or removals:
            task = asyncio.get_running_loop().create_task(self._flush(batch, removals))
            self._flushes.add(task)
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._pending or self._removals:
            self._start_flush()

    async def _flush(self, batch: list[PendingState], removals: list[PendingRemoval]) -> None:
        # A job's deletion is queued only after its final write returned: never in the same flush.
        try:
            if batch:
                await self._write_states(batch)
        finally:
            if removals:
                await self._remove_batch(removals)

    async def _remove_batch(self, removals: list[PendingRemoval]) -> None:
        try:
            await self._remove_ids(sorted({entry.job_id for entry in removals}))
        except Exception as exc:
            self._fail_all(removals, exc)
            return
        for entry in removals:
            if not entry.done.done():
                entry.done.set_result(None)

    def _fail_all(self, entries: Sequence[PendingState | PendingRemoval], exc: Exception) -> None:
        """A batch's round trip failed as a whole: each of its writers gets the error."""
        error = self._batch_error(exc)
        for entry in entries:
            if not entry.done.done():
                entry.done.set_exception(error)

    async def _write_states(self, batch: list[PendingState]) -> None:
        written_at = write_instant()
        for entry in batch:
            for key in entry.stamp:
                entry.values[key] = written_at
            if entry.values.get("lockedAt") is not None:
                # A write that keeps the lock renews it; one lockedAt for the batch lets the runs
                # claimed together stay fenced by one (lockedAt, token) pair.
                entry.values["lockedAt"] = written_at
        try:
            results = await self.outcomes([(entry.job, entry.values) for entry in batch])
        except Exception as exc:
            self._fail_all(batch, exc)
            return
        refused: list[tuple[PendingState, R]] = []
        for entry, outcome in zip(batch, results, strict=True):
            if not isinstance(outcome, bool):
                refused.append((entry, outcome))
                continue
            if outcome:
                _absorb_written(entry.job, entry.values)
            if not entry.done.done():
                entry.done.set_result(outcome)
        # After the others are answered: their runs need not wait for these extra writes.
        for entry, refusal in refused:
            await self._settle_refused(entry, refusal)

    async def apply(self, entries: list[tuple[Job, dict[str, Any]]]) -> list[bool]:
        """:meth:`outcomes` for writers that cannot take a refusal (heartbeats, releases): a write
        the server refused raises, as a single update would."""
        outcomes = await self.outcomes(entries)
        for outcome in outcomes:
            if not isinstance(outcome, bool):
                raise self._refusal_error(outcome)
        return [bool(outcome) for outcome in outcomes]

    async def outcomes(self, entries: list[tuple[Job, dict[str, Any]]]) -> list[bool | R]:
        """Set ``values`` on each leased job, fenced by its lease, in one round trip; tell which
        applied, and which the server refused (each refusal is that job's alone: the other writes of
        the round trip apply). A lease's ``locked_at`` follows the ``lockedAt`` its write set."""
        async with contextlib.AsyncExitStack() as stack:
            for job, _ in entries:
                assert job.lease is not None
                await stack.enter_async_context(job.lease.write_lock)
            live = [(job, values) for job, values in entries if job.lease and not job.lease.lost]
            results = await self._write_leased(live) if live else []
            outcome = dict(zip((id(job) for job, _ in live), results, strict=True))
            for job, values in live:
                if outcome[id(job)] is True and job.lease is not None and values.get("lockedAt") is not None:
                    job.lease.locked_at = values["lockedAt"]
            return [outcome.get(id(job), False) for job, _ in entries]

    async def renew_locks(self, jobs: Sequence[Job], now: datetime) -> list[Job]:
        """Heartbeat: move each lease's ``lockedAt`` to ``now`` in one round trip; returns the jobs
        whose lock is gone. Leases of runs that are writing their final state are left alone."""
        live = [j for j in jobs if j.lease is not None and not j.lease.lost and not j.lease.finishing]
        if not live:
            return []
        applied = await self.apply([(job, {"lockedAt": now}) for job in live])
        lost = []
        for job, ok in zip(live, applied, strict=True):
            lease = job.lease
            if ok and job.locked_at is not None:
                job.locked_at = now
            elif not ok and lease is not None and not lease.finishing:
                lost.append(job)
        return lost

    async def release(self, jobs: Sequence[Job], *, reschedule_at: datetime | None = None) -> None:
        """Unlock leased jobs in one round trip. With ``reschedule_at`` they become due then; a job
        without a next run (a recovered crash) becomes due now, so no release strands it."""
        entries = []
        for job in jobs:
            lease = job.lease
            if lease is None or lease.lost:
                continue
            lease.finishing = True
            entries.append((job, release_values(job, reschedule_at)))
        if entries:
            await self.apply(entries)
        for job, _ in entries:
            job.locked_at = None

    @abc.abstractmethod
    async def _write_leased(self, live: list[tuple[Job, dict[str, Any]]]) -> list[bool | R]:
        """Set ``values`` on each job, fenced by its (live, write-locked) lease; each one's outcome."""

    @abc.abstractmethod
    async def _settle_refused(self, entry: PendingState, refused: R) -> None:
        """A batched write the server refused: deal with its job and answer its writer."""

    @abc.abstractmethod
    async def _remove_ids(self, job_ids: list[str]) -> None:
        """Delete the jobs with these ids, in one round trip."""

    @abc.abstractmethod
    def _refusal_error(self, refused: R) -> Exception:
        """What :meth:`apply` raises for a refused write."""

    def _batch_error(self, exc: Exception) -> Exception:
        """The error a batch's writers get when its write failed as a whole."""
        return exc

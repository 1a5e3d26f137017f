"""The worker: claims due jobs, queues them locally, runs them within the limits, keeps their locks alive.

Three small loops, each named after its job:

* ``lock filling`` claims jobs (at start, which waits for that first pass, then every
  ``process_every``, and at once when woken);
* ``lock renewal`` moves ``lockedAt`` forward for every held job (the heartbeat), so long runs need no
  ``touch()`` and a dead worker's jobs come back one lock lifetime after it stopped renewing;
* runs are tasks started by ``_dispatch``, which is called whenever something changes.

Claiming happens in two phases per pass: first only jobs that can start at once (a free slot under the
job's ``concurrency`` and ``max_concurrency``), then a small look-ahead buffer (at most ``concurrency``
waiting jobs per name, ``max_concurrency`` in all), so one worker never hoards a fleet's backlog.
Each name claims within its own room (its ``concurrency`` and ``lock_limit``) and the worker's total
(``max_concurrency``, ``lock_limit``), earliest due and highest priority first; a name without room is
skipped, never a reason to stop claiming for the others.

A job this worker saves that is due now and has a free slot here skips the claim altogether: it is
inserted already locked by this worker and starts at once (Agenda's "lock on the fly"), see
``save_on_the_fly``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from . import schedule as sched
from .errors import DatabaseUnavailable, LockLost
from .job import Job
from .run import RunOutcome, run_job
from .store.base import ClaimRequest, WakeUpsUnavailable

if TYPE_CHECKING:
    from .definition import JobDefinition
    from .worker_context import WorkerContext

__all__ = ["DrainResult", "Worker"]

log = logging.getLogger("agendapy")

_MIN_HEARTBEAT = 0.05
_STOP_SLACK = 0.8
_STREAM_PACE = 0.025
_STREAM_BURST = 0.01
_MAX_ERROR_BACKOFF = 30.0
#: How long ``start()`` waits for its first claim pass. A pass takes milliseconds on a reachable
#: database; one that is away (or being failed over) can hold a claim for the driver's 10 s server
#: selection, and ``start()`` must not: it returns after this bound and the pass goes on behind it.
#: Kept well under the 8 s stop grace, so a signal during a start is still answered in time.
_FIRST_PASS_WAIT = 3.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DrainResult:
    """What ``drain`` saw: runs completed while draining, runs still going, whether it timed out."""

    completed: int
    running: int
    timed_out: bool


class Worker:
    """One worker's locking and running state."""

    def __init__(self, context: WorkerContext, *, names: Sequence[str] | None = None) -> None:
        self._ctx = context
        # Run-due mode: only these names, only jobs due by the cutoff (no look-ahead), outcomes kept.
        self._only_names = None if names is None else set(names)
        self._cutoff: datetime | None = None
        self._outcomes: list[RunOutcome] = []
        self._store = context.store
        self._waiting: list[tuple[Job, int]] = []
        self._seq = itertools.count()
        self._running: dict[int, tuple[Job, asyncio.Task[RunOutcome]]] = {}
        self._running_by_name: Counter[str] = Counter()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        # Slots promised to jobs being saved locked on the fly, per name, until their write returns.
        self._reserved: Counter[str] = Counter()
        # What the claim under way may still lock (per name, in all), while its round trip lasts.
        self._claiming: tuple[dict[str, int], int] = ({}, 0)
        self._wake = asyncio.Event()
        self._filling = True
        self._fill_task: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._completed = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._hurry = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the lock-filling and lock-renewal loops, and return once the first claim pass is over.

        That pass takes every job that is due (up to the limits) and starts those that can run, so a
        ``drain()`` right after ``start()`` waits for them. If the pass fails (the database is away),
        the error is reported as in every pass and claiming goes on in the background; if it takes
        longer than ``_FIRST_PASS_WAIT`` (3 s: the database does not answer), ``start()`` returns
        then and the pass goes on in the background.
        """
        self._renew_task = asyncio.create_task(self._lock_renewal(), name="agendapy: lock renewal")
        if self._ctx.change_streams:
            self._listen_task = asyncio.create_task(self._wake_up_listening(), name="agendapy: wake-ups")
        first_pass = asyncio.get_running_loop().create_future()
        fill_task = asyncio.create_task(self._lock_filling(first_pass), name="agendapy: lock filling")
        self._fill_task = fill_task
        # The fill task ends without finishing its first pass only when a stop cancels it.
        await asyncio.wait(
            [first_pass, fill_task], timeout=_FIRST_PASS_WAIT, return_when=asyncio.FIRST_COMPLETED
        )

    def hurry(self) -> None:
        """Cut a graceful stop short: cancel the running jobs now."""
        self._hurry.set()

    def wake(self) -> None:
        """Claim now instead of at the next poll (a job became due)."""
        self._wake.set()

    async def save_on_the_fly(self, name: str, write: Callable[[str | None], Awaitable[Job | None]]) -> bool:
        """Save a new job of ``name`` that is due now, locked by this worker when it can start at once.

        Agenda's "lock on the fly": while this worker is claiming and has an immediate slot for the
        name (the same rule as a claim pass's first phase), a lock token is passed to ``write``, which
        inserts the job already locked with it and returns the locked copy; it is queued and started
        before this returns, with no claim round trip and no race with the next pass. Without a slot
        ``write(None)`` saves it as usual. Returns whether the job was taken here; if not, the caller
        wakes the claim loop as for any other due job.
        """
        if not self._filling or self._fill_task is None:
            await write(None)
            return False
        if not self._has_slot_now(name):
            await write(None)
            return False
        # Hold the slot across the write, so concurrent saves and claim passes do not promise it again.
        self._reserved[name] += 1
        writing = asyncio.ensure_future(write(uuid.uuid4().hex))
        try:
            leased = await asyncio.shield(writing)
        except asyncio.CancelledError:
            # The caller went away mid-write; the job may be in the database locked by us. Unlock it.
            with contextlib.suppress(Exception):
                leased = await asyncio.wait_for(writing, 2.0)
                if leased is not None:
                    await asyncio.wait_for(self._store.release([leased]), 2.0)
            raise
        finally:
            self._reserved[name] -= 1
        if leased is None:
            return False
        leased.agenda = self._ctx.owner
        if not self._filling:
            # A stop or drain came during the write: hand the job to other workers as it would a
            # claimed one that had not started.
            await self._release_quietly([leased])
            return True
        self._accept(leased)
        self._dispatch()
        return True

    async def stop_filling(self, timeout: float | None = None) -> None:
        """Stop claiming, and unlock the jobs held but not running (Agenda 6.2.6's stop), within
        ``timeout`` seconds (what is not unlocked by then comes back when its lock expires)."""
        self._filling = False
        tasks = [task for task in (self._fill_task, self._listen_task) if task is not None]
        for task in tasks:
            task.cancel()
        self._fill_task = self._listen_task = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        waiting = [job for job, _ in self._waiting]
        self._waiting.clear()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        if waiting:
            try:
                await asyncio.wait_for(self._store.release(waiting), timeout)
            except Exception as exc:
                log.warning("could not unlock %d waiting jobs on stop: %s", len(waiting), exc)

    async def drain(self, timeout: float | None) -> DrainResult:
        """Stop claiming, hand back the jobs held but not started, and wait up to ``timeout`` seconds
        for the runs started before the call (see ``Agenda.drain``)."""
        completed_before = self._completed
        await self.stop_filling()
        timed_out = not await self._wait_idle(timeout)
        if not timed_out:
            await self._stop_renewal()
        return DrainResult(
            completed=self._completed - completed_before, running=len(self._running), timed_out=timed_out
        )

    async def stop(self, grace: float) -> None:
        """Stop claiming, ask running handlers to stop, wait ``grace`` s, then cancel and unlock them.

        Returns within about ``grace`` + 1 s whatever the database does: platforms kill soon after.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for job, _ in self._running.values():
            if job.lease is not None:
                job.lease.stop_event.set()
        unlocking = asyncio.ensure_future(self.stop_filling(timeout=max(grace, 0.5)))
        if not await self._wait_idle(max(deadline - loop.time(), 0.0), interruptible=True):
            tasks = [task for _, task in self._running.values()]
            for task in tasks:
                task.cancel()
            # Cancelled runs unlock themselves; give them a moment, not forever.
            await asyncio.wait(tasks, timeout=_STOP_SLACK)
        await asyncio.wait([unlocking], timeout=max(deadline + _STOP_SLACK - loop.time(), 0.1))
        await self._stop_renewal()

    async def _stop_renewal(self) -> None:
        if self._renew_task is not None:
            self._renew_task.cancel()
            await asyncio.gather(self._renew_task, return_exceptions=True)
            self._renew_task = None

    async def _wait_idle(self, timeout: float | None, *, interruptible: bool = False) -> bool:
        if not self._running:
            return True
        waits = [asyncio.ensure_future(self._idle.wait())]
        if interruptible:
            waits.append(asyncio.ensure_future(self._hurry.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        return not self._running

    async def run_due(self, cutoff: datetime) -> list[RunOutcome]:
        """Claim and run every job due by ``cutoff``, wait for all of them, and return their outcomes.

        Jobs that waited for their ``requires`` get another round while the previous round made
        progress (a required job may just have run).
        """
        self._renew_task = asyncio.create_task(self._lock_renewal(), name="agendapy: lock renewal")
        try:
            while True:
                self._cutoff = cutoff
                before = len(self._outcomes)
                await self._drain_due()
                round_outcomes = self._outcomes[before:]
                waiting = {o.job.name for o in round_outcomes if o.status == "waiting"}
                progressed = any(o.status == "succeeded" for o in round_outcomes)
                if not waiting or not progressed:
                    break
                self._only_names = waiting
                cutoff = sched.utcnow() + self._ctx.dependency_check_every
        finally:
            await self.stop_filling()
            await self._stop_renewal()
        return self._latest_outcomes()

    async def _drain_due(self) -> None:
        while True:
            self._wake.clear()
            await self._fill()
            self._dispatch()
            if not self._running and not self._waiting:
                return
            await self._wake.wait()

    def _latest_outcomes(self) -> list[RunOutcome]:
        """One outcome per job: its last (a job that waited and then ran reports the run)."""
        latest: dict[str, RunOutcome] = {}
        for outcome in self._outcomes:
            latest[outcome.job.id or str(id(outcome.job))] = outcome
        return list(latest.values())

    # -- stats ---------------------------------------------------------------------------------

    @property
    def waiting_jobs(self) -> list[Job]:
        """Jobs locked by this worker and waiting for a slot or their time."""
        return [job for job, _ in self._waiting]

    @property
    def running_jobs(self) -> list[Job]:
        """Jobs this worker is running."""
        return [job for job, _ in self._running.values()]

    def locked_count(self, name: str | None = None) -> int:
        """Jobs this worker holds locks on (waiting + running), for one name or all."""
        if name is None:
            return len(self._waiting) + len(self._running)
        return self._waiting_count(name) + self._running_by_name[name]

    def running_count(self, name: str | None = None) -> int:
        """Jobs running now, for one name or all."""
        return len(self._running) if name is None else self._running_by_name[name]

    def _waiting_count(self, name: str) -> int:
        return sum(1 for job, _ in self._waiting if job.name == name)

    # -- lock filling ----------------------------------------------------------------------------

    async def _lock_filling(self, first_pass: asyncio.Future[None] | None = None) -> None:
        failures = 0
        while self._filling:
            self._wake.clear()
            try:
                await self._fill()
                if failures:
                    log.warning("database reachable again; claiming resumed")
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1 or isinstance(exc, DatabaseUnavailable):
                    log.error("claiming jobs failed (%s); retrying", exc)
                await self._ctx.report_error(exc)
            self._dispatch()
            if first_pass is not None and not first_pass.done():
                first_pass.set_result(None)
            interval = self._ctx.process_every.total_seconds()
            if failures:
                interval = min(interval * 2 ** min(failures, 6), max(interval, _MAX_ERROR_BACKOFF))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def _fill(self) -> None:
        for immediate in (True, False):
            while self._filling:
                quotas, room = self._claimable(immediate=immediate)
                if room <= 0:
                    break
                jobs = await self._claim(quotas, room)
                for job in jobs:
                    self._accept(job)
                self._dispatch()
                if len(jobs) < room:
                    break  # fewer due than there was room for: nothing more to claim now

    def _has_slot_now(self, name: str) -> bool:
        """Whether a job of ``name`` saved now may be locked on the fly: a claim pass would start it at
        once, and the lock limits hold even if the claim under way takes all it asked for."""
        quotas, room = self._claimable(immediate=True)
        if room <= 0 or quotas.get(name, 0) <= 0:
            return False
        # Concurrency needs no such margin (a run starts only in a free slot; an extra job waits
        # locked), but a lock limit counts locks, so it must not be passed even for a moment.
        claiming, claiming_total = self._claiming
        held = self.locked_count() + self._reserved.total()
        if self._ctx.lock_limit and held + claiming_total >= self._ctx.lock_limit:
            return False
        limit = self._ctx.definitions[name].lock_limit
        held_name = self.locked_count(name) + self._reserved[name]
        return not (limit and held_name + claiming.get(name, 0) >= limit)

    def _claimable(self, *, immediate: bool) -> tuple[dict[str, int], int]:
        """How many jobs each name may claim now, and how many in all.

        ``immediate``: only as many as can start at once (free slots under each name's concurrency and
        ``max_concurrency``). Otherwise the look-ahead buffer: up to ``concurrency`` waiting jobs per
        name and ``max_concurrency`` in all. Each name's lock limit caps its own room, the worker's
        ``lock_limit`` the total; a name without room is left out and never holds back the others.
        """
        ctx = self._ctx
        # Jobs being saved locked on the fly count as waiting: their slots are promised.
        waiting_total = len(self._waiting) + self._reserved.total()
        if immediate:
            room = ctx.max_concurrency - len(self._running) - waiting_total
        else:
            room = ctx.max_concurrency - waiting_total
        if ctx.lock_limit:
            room = min(room, ctx.lock_limit - self.locked_count() - self._reserved.total())
        quotas: dict[str, int] = {}
        for name, definition in ctx.definitions.items():
            if self._only_names is not None and name not in self._only_names:
                continue
            waiting = self._waiting_count(name) + self._reserved[name]
            if immediate:
                free = definition.concurrency - self._running_by_name[name] - waiting
            else:
                free = definition.concurrency - waiting
            if definition.lock_limit:
                free = min(free, definition.lock_limit - self.locked_count(name) - self._reserved[name])
            if free > 0:
                quotas[name] = free
        return quotas, min(room, sum(quotas.values()))

    async def _claim(self, quotas: dict[str, int], limit: int) -> list[Job]:
        ctx = self._ctx
        now = sched.utcnow()
        request = ClaimRequest(
            names=list(quotas),
            now=now,
            next_scan_at=self._cutoff if self._cutoff is not None else now + ctx.process_every,
            lock_deadlines={name: now - ctx.definitions[name].lock_lifetime for name in quotas},
            owner=ctx.name,
            per_name=quotas,
        )
        claiming = asyncio.ensure_future(self._store.claim(request, uuid.uuid4().hex, limit))
        # Cleared before the caller accepts the jobs, with no await in between: they are then held.
        self._claiming = (quotas, limit)
        try:
            jobs = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # Stopped mid-claim: the database may have locked jobs for us. Unlock what it returns.
            with contextlib.suppress(Exception):
                claimed = await asyncio.wait_for(claiming, 2.0)
                if claimed:
                    await asyncio.wait_for(self._store.release(claimed), 2.0)
            raise
        finally:
            self._claiming = ({}, 0)
        for job in jobs:
            job.agenda = ctx.owner
        return jobs

    def _accept(self, job: Job) -> None:
        held = self._held(job.id)
        if held is not None:
            # This worker claimed a job it already holds: its lock looked expired to the claim query
            # (a slow round trip, a late heartbeat). Keep the one run, under the new lock.
            asyncio.get_running_loop().create_task(self._adopt_lock(held, job))
            return
        self._waiting.append((job, next(self._seq)))
        self._waiting.sort(key=_queue_key)

    def _held(self, job_id: str | None) -> Job | None:
        for job, _ in self._waiting:
            if job.id == job_id:
                return job
        for job, _ in self._running.values():
            if job.id == job_id:
                return job
        return None

    async def _adopt_lock(self, held: Job, claimed: Job) -> None:
        lease, fresh = held.lease, claimed.lease
        if lease is None or fresh is None:
            return
        async with lease.write_lock:
            lease.token, lease.locked_at = fresh.token, fresh.locked_at
            if held.locked_at is not None:
                held.locked_at = fresh.locked_at

    # -- running ---------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start every waiting job that is due and has a free slot; time the ones due soon."""
        ctx = self._ctx
        now = sched.utcnow()
        window = ctx.process_every
        if self._cutoff is not None:
            window = max(window, self._cutoff - now)
        release: list[Job] = []
        keep: list[tuple[Job, int]] = []
        for job, seq in self._waiting:
            definition = ctx.definitions.get(job.name)
            if definition is None:
                release.append(job)
                continue
            if job.next_run_at is not None and job.next_run_at > now:
                if job.next_run_at - now > window:
                    release.append(job)  # no longer due within the window (rescheduled meanwhile)
                else:
                    self._arm_timer(seq, job.next_run_at - now)
                    keep.append((job, seq))
                continue
            if (
                len(self._running) >= ctx.max_concurrency
                or self._running_by_name[job.name] >= definition.concurrency
                or not self._filling
            ):
                keep.append((job, seq))
                continue
            self._start_run(job, seq, definition)
        self._waiting = keep
        if release:
            asyncio.get_running_loop().create_task(self._release_quietly(release))

    def _arm_timer(self, seq: int, delay: timedelta) -> None:
        if seq in self._timers:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(seq, None)
            self._dispatch()

        self._timers[seq] = loop.call_later(max(delay.total_seconds(), 0.0), fire)

    def _start_run(self, job: Job, seq: int, definition: JobDefinition) -> None:
        timer = self._timers.pop(seq, None)
        if timer is not None:
            timer.cancel()
        self._running_by_name[job.name] += 1
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(
            self._run(job, definition), name=f"agendapy: run {job.name}"
        )
        self._running[seq] = (job, task)
        name = job.name

        def done(_task: asyncio.Task[RunOutcome]) -> None:
            self._finished(seq, name)

        task.add_done_callback(done)

    async def _run(self, job: Job, definition: JobDefinition) -> RunOutcome:
        try:
            outcome = await run_job(self._ctx, job, definition)
        except asyncio.CancelledError:
            # Cancelled before the handler ran (the start write, the run record, the start event):
            # nothing ran, so hand the job straight back.
            lease = job.lease
            if lease is not None and not lease.finishing and not lease.lost:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._store.release([job], reschedule_at=sched.utcnow()), 1.0)
            raise
        except Exception as exc:
            log.exception("run of %s (%s) crashed", job.name, job.id)
            await self._ctx.report_error(exc)
            outcome = RunOutcome(job, ran=True, succeeded=False, error=exc, status="failed")
        self._outcomes.append(outcome)
        return outcome

    def _finished(self, seq: int, name: str) -> None:
        self._running.pop(seq, None)
        self._running_by_name[name] -= 1
        self._completed += 1
        if not self._running:
            self._idle.set()
        if self._filling:
            self._wake.set()
            self._dispatch()

    async def _release_quietly(self, jobs: list[Job]) -> None:
        try:
            await self._store.release(jobs)
        except Exception as exc:
            log.warning("could not unlock %d jobs: %s", len(jobs), exc)

    # -- wake-ups ---------------------------------------------------------------------------------

    async def _wake_up_listening(self) -> None:
        """Claim at once when a job of ours becomes due (change streams); polling stays the fallback."""
        pause = 1.0
        while self._filling:
            try:
                loop = asyncio.get_running_loop()
                last = 0.0
                async for name, next_run_at in self._store.due_changes():
                    pause = 1.0
                    if (
                        next_run_at is not None
                        and name in self._ctx.definitions
                        and next_run_at <= sched.utcnow() + self._ctx.process_every
                    ):
                        self._wake.set()
                    # A change on a quiet collection wakes at once. When changes come in a burst, or
                    # the worker has no free slot to fill anyway, pausing before reading on lets them
                    # arrive in one batch instead of one round trip each.
                    now = loop.time()
                    burst, last = now - last < _STREAM_BURST, now
                    if burst or len(self._running) >= self._ctx.max_concurrency:
                        await asyncio.sleep(_STREAM_PACE)
            except asyncio.CancelledError:
                raise
            except WakeUpsUnavailable as exc:
                every = self._ctx.process_every.total_seconds()
                log.info("no instant wake-ups (%s); polling every %g s", exc, every)
                return
            except Exception as exc:
                log.warning("change stream failed (%s); polling until it is back", exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_ERROR_BACKOFF)

    # -- lock renewal ----------------------------------------------------------------------------

    async def _lock_renewal(self) -> None:
        while True:
            # Every definition's lifetime counts, not only the held jobs': a job claimed during the
            # sleep must be renewed in time. Waking every quarter lifetime and renewing what is a
            # quarter old keeps each lock under half its lifetime even when a round is slow.
            lifetimes = [d.lock_lifetime for d in self._ctx.definitions.values()]
            lifetimes.append(self._ctx.default_lock_lifetime)
            await asyncio.sleep(max(min(lifetimes).total_seconds() / 4, _MIN_HEARTBEAT))
            now = sched.utcnow()
            due = [
                job
                for job in self.waiting_jobs + self.running_jobs
                if job.lease is not None
                and not job.lease.finishing
                and now - job.lease.locked_at >= self._lifetime(job) / 4
            ]
            if not due:
                continue
            try:
                lost = await self._store.renew_locks(due, now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing %d locks failed: %s", len(due), exc)
                await self._ctx.report_error(exc)
                continue
            for job in lost:
                await self._lost(job)

    def _lifetime(self, job: Job) -> timedelta:
        definition = self._ctx.definitions.get(job.name)
        return definition.lock_lifetime if definition is not None else self._ctx.default_lock_lifetime

    async def _lost(self, job: Job) -> None:
        lease = job.lease
        if lease is None or lease.lost:
            return
        lease.lost = True
        lease.stop_event.set()
        self._waiting = [(j, s) for j, s in self._waiting if j is not job]
        log.warning("lost the lock of %s (%s): another worker owns it now", job.name, job.id)
        await self._ctx.events.emit_job_event("lock lost", job.name, job)
        await self._ctx.report_error(LockLost(f"job {job.name!r} ({job.id}) lost its lock"))


def _queue_key(entry: tuple[Job, int]) -> tuple[datetime, int, int]:
    job, seq = entry
    return (job.next_run_at or _EPOCH, -job.priority, seq)

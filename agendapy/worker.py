"""The worker: claims due jobs, queues them locally, runs them within the limits, keeps their locks alive.

Background loops, each named after its job, started from one list (``_loops``) and run by
``loops.supervise`` (a failure is reported and the loop goes on):

* ``lock filling`` claims jobs (at start, which waits for that first pass, then every
  ``process_every``, and at once when woken); after runs end it claims again only if its last claim
  took all the room it had for some names (more of them may be due), and once those names have half
  their slots free (``Claimer.worth_topping_up``), so each search for due jobs locks a batch rather
  than the one job a finished run makes room for;
* ``lock renewal`` (``renewal.py``) moves ``lockedAt`` forward for every held job (the heartbeat), so
  long runs need no ``touch()`` and a dead worker's jobs come back one lock lifetime after it stopped
  renewing;
* ``wake-ups`` (``wakeups.py``) wakes lock filling when the store reports a job due now; while the
  last claim came back full (a backlog: the worker claims again as its runs end) its stream is closed.

Runs are tasks started by ``_dispatch``, which is called whenever something changes. How much a pass
may claim, and the claim itself, are ``claiming.py``'s. A pass has two phases: first only jobs that can
start at once (a free slot under the job's ``concurrency`` and ``max_concurrency``), then a small
look-ahead buffer (at most ``concurrency`` waiting jobs per name, ``max_concurrency`` in all), so one
worker never hoards a fleet's backlog. A job this worker saves due now with a free slot here skips the
claim: it is inserted locked and starts at once (``save_on_the_fly``). Run-due mode (``run_due.py``)
drives the same worker with a narrower ``ClaimScope`` and no claiming loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from . import schedule as sched
from .claiming import Claimer
from .errors import DatabaseUnavailable
from .job import Job
from .loops import Loop, supervise
from .renewal import LockRenewal
from .run import RunOutcome, run_job
from .wakeups import WakeUps

if TYPE_CHECKING:
    from .definition import JobDefinition
    from .worker_context import WorkerContext

__all__ = ["DrainResult", "Worker"]

log = logging.getLogger("agendapy")

_STOP_SLACK = 0.8
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

    def __init__(
        self, context: WorkerContext, *, on_outcome: Callable[[RunOutcome], None] | None = None
    ) -> None:
        self._ctx = context
        self.claimer = Claimer(context, self)
        self._on_outcome = on_outcome
        self._store = context.store
        self._waiting: list[tuple[Job, int]] = []
        self._seq = itertools.count()
        self._running: dict[int, tuple[Job, asyncio.Task[RunOutcome]]] = {}
        self._running_by_name: Counter[str] = Counter()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._wake = asyncio.Event()
        # The next claim pass claims whatever room there is (but for backlogged names below half
        # their room, left to the top-ups): it is the first, a poll, a job became due (wake()) or a
        # run left its job due again. Otherwise only runs ended (a top-up): it claims only for the
        # names the last claim took all their room for (more may be due), once they have half their
        # slots free.
        self._claim_any = True
        # The names whose last claim took all the room it had for them: more of them may be due.
        self._backlogged: frozenset[str] = frozenset()
        # Set once claiming stops (stop, drain, the end of run-due); lock renewal has its own.
        self._claiming_stopped = asyncio.Event()
        self._renewal_stopped = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._first_pass: asyncio.Future[None] | None = None
        self._renewal = LockRenewal(
            context, held=lambda: self.waiting_jobs + self.running_jobs, forget=self._forget
        )
        self._wakeups = WakeUps(
            context, wake=self.wake, busy=lambda: len(self._running) >= context.max_concurrency
        )
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
        self._first_pass = first_pass = asyncio.get_running_loop().create_future()
        self._start_loops(self._loops())
        # The fill task ends without finishing its first pass only when a stop cancels it.
        await asyncio.wait(
            [first_pass, self._tasks["lock filling"]],
            timeout=_FIRST_PASS_WAIT,
            return_when=asyncio.FIRST_COMPLETED,
        )

    def _loops(self) -> list[tuple[Loop, asyncio.Event]]:
        """Every background loop of a started worker, with the event that stops it, in start order."""
        loops = [(self._renewal.loop(), self._renewal_stopped)]
        if self._ctx.change_streams:
            loops.append((self._wakeups.loop(), self._claiming_stopped))
        loops.append((self._filling_loop(), self._claiming_stopped))
        return loops

    def _start_loops(self, loops: list[tuple[Loop, asyncio.Event]]) -> None:
        for loop, stop in loops:
            self._tasks[loop.name] = asyncio.create_task(supervise(loop, stop), name=f"agendapy: {loop.name}")

    def start_renewal(self) -> None:
        """Start only the heartbeat (run-due mode claims in its own rounds)."""
        self._start_loops([(self._renewal.loop(), self._renewal_stopped)])

    @property
    def _filling(self) -> bool:
        return not self._claiming_stopped.is_set()

    def hurry(self) -> None:
        """Cut a graceful stop short: cancel the running jobs now."""
        self._hurry.set()

    def wake(self) -> None:
        """Claim now instead of at the next poll (a job became due)."""
        self._claim_any = True
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
        if not self._filling or "lock filling" not in self._tasks:
            await write(None)
            return False
        leased = await self.claimer.insert_locked(name, write)
        if leased is None:
            return False
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
        self._claiming_stopped.set()
        tasks = [task for name in ("lock filling", "wake-ups") if (task := self._tasks.pop(name, None))]
        for task in tasks:
            task.cancel()
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
            await self.stop_renewal()
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
        await self.stop_renewal()

    async def stop_renewal(self) -> None:
        """Stop the heartbeat (the held jobs' locks then expire unless released)."""
        self._renewal_stopped.set()
        task = self._tasks.pop("lock renewal", None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

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

    async def claim_round(self) -> bool:
        """Claim what the scope allows and start what can run; returns whether any job is still held
        (run-due mode: it then waits for ``woken()`` and claims again)."""
        self._wake.clear()
        await self._fill()
        self._dispatch()
        return bool(self._running or self._waiting)

    async def woken(self) -> None:
        """Wait until a run ends or a job becomes due (what ``wake()`` signals)."""
        await self._wake.wait()

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
        return self.waiting_count(name) + self._running_by_name[name]

    def running_count(self, name: str | None = None) -> int:
        """Jobs running now, for one name or all."""
        return len(self._running) if name is None else self._running_by_name[name]

    def waiting_count(self, name: str | None = None) -> int:
        """Jobs locked by this worker and waiting for a slot or their time, for one name or all."""
        if name is None:
            return len(self._waiting)
        return sum(1 for job, _ in self._waiting if job.name == name)

    def held_ids(self) -> frozenset[str]:
        """The ids of the jobs this worker holds locks on (waiting + running)."""
        jobs = [job for job, _ in self._waiting] + [job for job, _ in self._running.values()]
        return frozenset(job.id for job in jobs if job.id is not None)

    # -- lock filling ----------------------------------------------------------------------------

    def _filling_loop(self) -> Loop:
        return Loop(
            "lock filling",
            self._filling_round,
            then=self._after_filling,
            on_error=self._filling_failed,
            on_recovery=lambda: log.warning("database reachable again; claiming resumed"),
        )

    async def _filling_round(self) -> None:
        self._wake.clear()
        claim_any, self._claim_any = self._claim_any, False
        if claim_any:
            await self._fill()
        elif self._backlogged:
            await self._fill(top_up=True)

    async def _filling_failed(self, error: Exception, failures: int) -> None:
        if failures == 1 or isinstance(error, DatabaseUnavailable):
            log.error("claiming jobs failed (%s); retrying", error)
        await self._ctx.report_error(error)

    async def _after_filling(self, failures: int) -> None:
        """Start what was claimed, then wait for a wake-up or the next poll (later while failing)."""
        self._dispatch()
        if self._first_pass is not None and not self._first_pass.done():
            self._first_pass.set_result(None)
        interval = self._ctx.process_every.total_seconds()
        if failures:
            interval = min(interval * 2 ** min(failures, 6), max(interval, _MAX_ERROR_BACKOFF))
        try:
            await asyncio.wait_for(self._wake.wait(), interval)
        except TimeoutError:
            self._claim_any = True  # the poll

    async def _fill(self, *, top_up: bool = False) -> None:
        """Claim in two phases (jobs that start at once, then the look-ahead); a batch that came back
        full is followed by another at once. A top-up (runs ended while names had more due) claims in
        a phase only once those names have room for half of what they can hold
        (``Claimer.worth_topping_up``), so each search locks a batch."""
        for immediate in (True, False):
            while self._filling:
                quotas, room = self.claimer.room(immediate=immediate)
                whole_room = room
                if top_up:
                    if not self.claimer.worth_topping_up(quotas, room, self._backlogged):
                        break
                    # A top-up searches for the names that had more due; the others are claimed by
                    # polls and wake-ups, as before the runs ended.
                    quotas = {name: quotas[name] for name in self._backlogged if name in quotas}
                else:
                    quotas = self.claimer.without_small_backlogs(quotas, self._backlogged)
                room = min(room, sum(quotas.values()))
                if room < 1:
                    break
                # Jobs of the first phase that are due start in the _dispatch below (their slots are
                # free): the store may write their starts with the locks.
                jobs = await self.claimer.claim(quotas, room, start_due=immediate)
                for job in jobs:
                    self._accept(job)
                self._dispatch()
                # Names this claim had no room for keep their mark: nothing was learnt of them.
                self._backlogged = (self._backlogged - quotas.keys()) | self.claimer.saturated(
                    quotas, room, jobs
                )
                # Wake-ups stay on while the worker has room for names other than the backlogged
                # ones: a job of one of those saved elsewhere still starts at once.
                self._wakeups.backlog(len(jobs) >= whole_room)
                if len(jobs) < room:
                    break  # fewer due than there was room for: nothing more to claim now

    def _accept(self, job: Job) -> None:
        held = self._held(job.id)
        if held is not None:
            # This worker claimed a job it already holds. Its claims leave the jobs it holds out of
            # the expired-lock branch (ClaimRequest.held), but the due branch can still return one:
            # a recurring job or retry whose final write unlocked it while its run is finishing (the
            # ``finishing`` case in _adopt_lock), or a job taken on while the claim was under way.
            # Keep the one run, under the new lock.
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
            finishing = lease.finishing
            lease.token, lease.locked_at = fresh.token, fresh.locked_at
            if held.locked_at is not None:
                held.locked_at = fresh.locked_at
        if finishing:
            # The run is writing its final state, which may be stored already with its reply still on
            # the way: then this claim took the job's next run (a retry, the next interval), and its
            # lock would outlive the run, held by no one. Once the run ends, hand that lock back; if
            # the final write went out under it instead, it is gone already and this matches nothing.
            await self._run_ended(held)
            await self._release_quietly([claimed])

    async def _run_ended(self, job: Job) -> None:
        for held, task in list(self._running.values()):
            if held is job:
                await asyncio.wait([task])

    # -- running ---------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start every waiting job that is due and has a free slot; time the ones due soon."""
        ctx = self._ctx
        now = sched.utcnow()
        window = ctx.process_every
        until = self.claimer.scope.until
        if until is not None:
            window = max(window, until - now)
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
        if outcome.job.next_run_at is not None:
            # The run left its job due again (a recurring job, a retry), unlocked: the pass after it
            # claims whatever room there is, so a next run due before the poll is not late (no wake-up
            # comes without change streams).
            self._claim_any = True
        if self._on_outcome is not None:
            self._on_outcome(outcome)
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

    def _forget(self, job: Job) -> None:
        """Drop a waiting job whose lock another worker took over (a running one ends on its own)."""
        self._waiting = [(j, s) for j, s in self._waiting if j is not job]


def _queue_key(entry: tuple[Job, int]) -> tuple[datetime, int, int]:
    job, seq = entry
    return (job.next_run_at or _EPOCH, -job.priority, seq)

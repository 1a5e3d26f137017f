"""One run of one job: Agenda's Job.run() sequence, with timeouts and fenced state writes.

start save (lastRunAt, next run) -> ``start`` -> handler -> ``success`` | ``fail`` (+ ``retry`` or
``retry exhausted``) -> final save (lock released) -> ``complete`` -> remove if ``remove_on_complete``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import schedule as sched
from .dependencies import check_requirements, log_waiting
from .errors import DatabaseUnavailable, Interrupted, LockLost
from .fork import uses_fork
from .handler import invoke_handler
from .job import Job
from .schedule.planning import RunPlan, fixed_delay_next_run, plan_run

if TYPE_CHECKING:
    from .definition import JobDefinition
    from .schedule.ticks import RunInterval
    from .worker_context import WorkerContext

__all__ = ["RetryDetails", "RunOutcome", "run_job"]

log = logging.getLogger("agendapy")

_MAX_SAVE_RETRY_DELAY = 5.0


@dataclass(frozen=True)
class RetryDetails(Mapping[str, Any]):
    """The second argument of the ``retry`` event: Agenda's ``{attempt, delay, nextRunAt, error}``.

    ``delay`` is in seconds. Readable as attributes or as a mapping.
    """

    attempt: int
    delay: float
    next_run_at: datetime
    error: BaseException

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Any:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: ``status`` is succeeded, failed, skipped, waiting or "not run"."""

    job: Job
    ran: bool
    succeeded: bool
    error: BaseException | None = None
    status: str = "succeeded"
    #: Why a skipped run did not call its handler.
    reason: str | None = None


async def run_job(ctx: WorkerContext, job: Job, definition: JobDefinition | None) -> RunOutcome:
    """Run ``job`` once; with a lease every write is fenced, without one (``job.run()``) by id only."""
    events = ctx.events
    # The claim that locked the job may have written its start already (a one-off job due at once):
    # the run then starts at that moment and sends no start write. Taken here, before any await, so a
    # release from now on knows the start stands.
    lease = job.lease
    claimed = lease.claimed_start if lease is not None else None
    if lease is not None:
        lease.claimed_start = None
    now = job.last_run_at if claimed is not None and job.last_run_at is not None else sched.utcnow()
    due = job.next_run_at if claimed is None else claimed.next_run_at
    plan = plan_run(job, definition, now)
    previous_last_run = job.last_run_at if claimed is None else claimed.last_run_at
    failures_before = job.fail_count
    job.last_run_at = now
    if job.lease is not None:
        # The start write renews the lock too: a claim answered slowly must not start out expired.
        job.locked_at = now
    if plan.agenda_rule:
        failures = job.fail_count
        job.compute_next_run_at()
        if job.fail_count != failures:
            # A schedule stored by another tool that cannot be computed: Agenda's rule runs the job
            # this once and schedules nothing more. Say so, or the job stops repeating in silence.
            log.warning(
                "%s (%s) will not run again until its schedule is fixed: %s",
                job.name,
                job.id,
                job.fail_reason,
            )
    else:
        job.next_run_at = plan.next_run_at
    if plan.interval is not None:
        job.interval_started_at = plan.interval.started_at
        job.interval_ended_at = plan.interval.ended_at

    if job.requires and plan.interval is not None:
        check = await check_requirements(ctx.store, job.requires, plan.interval, now)
        if check.given_up:
            return await _give_up(ctx, job, definition, plan, check.reason, previous_last_run)
        if check.missing:
            return await _wait_for_requirements(
                ctx, job, check.missing, check.reason, previous_last_run, now, due, plan.interval
            )
    job.waiting_for = None
    job.waiting_reason = None

    # A start that schedules no next run (a one-off job) lets the store stamp lastRunAt with the
    # moment of the write: the runs of one batch then write the same values, in one update.
    start_stamp = ("last_run_at",) if job.next_run_at is None and plan.interval is None else ()
    # The claim's start stands when the run plans what it wrote: no next run, no interval, no
    # schedule error to record (a failed schedule changes failCount, which the claim did not write).
    started_by_claim = (
        claimed is not None
        and plan.interval is None
        and job.next_run_at is None
        and job.fail_count == failures_before
        and not (lease is not None and lease.lost)
    )
    # Otherwise the start is written, kept trying while the database is away (PostgreSQL refuses at
    # once where MongoDB's driver waits): the job is claimed and nothing ran yet, so the run starts
    # when the database is back.
    if not started_by_claim and not await keep_trying(
        lambda: ctx.store.save_state_batched(job, stamp=start_stamp), job
    ):
        error: BaseException = (
            LockLost(f"job {job.name!r} ({job.id}) lost its lock before it started")
            if job.lease is not None and job.lease.lost
            else LockLost(
                f"job {job.name!r} ({job.id}) cannot be updated in the database, maybe it was removed"
            )
        )
        await ctx.report_error(error)
        return RunOutcome(job, ran=False, succeeded=False, error=error, status="not run")

    run_id: str | None = None
    if plan.skip_reason is not None:
        return await _skip(ctx, job, definition, plan, plan.skip_reason)
    if plan.guard or ctx.records_history(job, definition):
        run_id = await ctx.store.runs.start(
            name=job.name,
            job_id=job.id,
            interval=plan.interval,
            guard=plan.guard,
            started_at=now,
            worker=ctx.name,
        )
        if run_id is None:
            return await _skip(ctx, job, definition, plan, "another worker already ran this interval")

    await events.emit_job_event("start", job.name, job)
    succeeded = False
    failure: BaseException | None = None
    try:
        if definition is None:
            raise LookupError("Undefined job")
        await invoke_handler(ctx, definition, job)
        if job.lock_lost:
            raise LockLost(f"job {job.name!r} lost its lock while running; its result was not saved")
    except asyncio.CancelledError:
        # A plain function goes on in its thread after a cancel: its job must not run elsewhere yet.
        still_running = definition is not None and not definition.is_async and not uses_fork(definition, job)
        await _interrupted(ctx, job, run_id, guarded=plan.guard, still_running=still_running)
        # Agenda emits complete after every run; an interrupted one too (listeners close spans, timers).
        await events.emit_job_event("complete", job.name, job)
        raise
    except Interrupted:
        await _interrupted(ctx, job, run_id, guarded=plan.guard, still_running=False)
        await events.emit_job_event("complete", job.name, job)
        return RunOutcome(job, ran=True, succeeded=False, status="interrupted")
    except Exception as exc:
        failure = exc
    else:
        succeeded = True

    finished_at = sched.utcnow()
    if succeeded:
        job.last_finished_at = finished_at
        job.fail_count = 0
        job.checkpoint_state = None
        await events.emit_job_event("success", job.name, job)
    else:
        assert failure is not None
        job.fail(failure)
        job.fail_stack = failure_stack(failure)
        await events.emit_job_event("fail", job.name, failure, job)
        await _handle_retry(ctx, job, definition, failure)
    if job.fixed_delay and job.next_run_at is None:
        job.next_run_at = fixed_delay_next_run(job, finished_at)

    _finishing(job)
    # lastFinishedAt may take the moment of the write unless the next run was computed from it.
    final_stamp = ("last_finished_at",) if succeeded and not job.fixed_delay else ()
    saved = not job.lock_lost and await _save_final_state(ctx, job, final_stamp)
    if not saved:
        log.debug("final state of %s (%s) not saved: removed or lock taken over", job.name, job.id)
    if run_id is not None:
        await _finish_record(ctx, job, run_id, succeeded, failure, finished_at)
    await events.emit_job_event("complete", job.name, job)

    remove = definition.remove_on_complete if definition is not None else ctx.remove_on_complete
    # Only a job whose final state this run wrote: one taken over by another worker is that worker's.
    if saved and succeeded and remove and job.next_run_at is None and not job.repeat_interval:
        await _remove_finished(ctx, job)
    return RunOutcome(
        job, ran=True, succeeded=succeeded, error=failure, status="succeeded" if succeeded else "failed"
    )


#: The most of a traceback kept in ``failStack`` (its end, where the handler raised, is what is kept).
MAX_FAIL_STACK = 8000
_FAIL_STACK_FRAMES = 30
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def failure_stack(error: BaseException) -> str:
    """The traceback of ``error`` as text, at most :data:`MAX_FAIL_STACK` characters (the innermost
    frames and the exception line; the outer ones are cut)."""
    # Start at the handler: the frames of agendapy's own run loop above it say nothing about the failure.
    tb = error.__traceback__
    while (
        tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR)
    ):
        tb = tb.tb_next
    lines = traceback.format_exception(type(error), error, tb, limit=-_FAIL_STACK_FRAMES)
    text = "".join(lines).rstrip("\n")
    if len(text) > MAX_FAIL_STACK:
        text = "... (traceback cut)\n" + text[-(MAX_FAIL_STACK - 20) :]
    return text


async def _remove_finished(ctx: WorkerContext, job: Job) -> None:
    """Delete a finished one-off job (``remove_on_complete``). A deletion that fails (the database
    went away) leaves the job stored, finished and unlocked: the run still succeeded; the error is
    reported."""
    if job.id is None:
        return
    try:
        await ctx.store.remove_finished(job.id)
    except Exception as exc:
        log.warning("could not remove finished job %s (%s): %s", job.name, job.id, exc)
        await ctx.report_error(exc)


def _finishing(job: Job) -> None:
    """The next write releases the lock: from now on heartbeats leave this lease alone."""
    job.locked_at = None
    if job.lease is not None:
        job.lease.finishing = True


async def _wait_for_requirements(
    ctx: WorkerContext,
    job: Job,
    missing: list[str],
    reason: str,
    previous_last_run: datetime | None,
    now: datetime,
    due: datetime | None,
    interval: RunInterval,
) -> RunOutcome:
    """Not a run: keep the interval pending, unlock, and check again shortly."""
    changed = job.waiting_reason != reason
    job.waiting_for = missing
    job.waiting_reason = reason
    job.last_run_at = previous_last_run
    job.next_run_at = now + ctx.dependency_check_every
    _finishing(job)
    log_waiting(
        job.name,
        job.id,
        interval,
        reason,
        changed=changed,
        now=now,
        due=due,
        check_every=ctx.dependency_check_every,
    )
    await ctx.store.save_state(job)
    return RunOutcome(job, ran=False, succeeded=False, status="waiting")


async def _give_up(
    ctx: WorkerContext,
    job: Job,
    definition: JobDefinition | None,
    plan: RunPlan,
    reason: str,
    previous_last_run: datetime | None,
) -> RunOutcome:
    """A requirement can no longer be met for this interval: record it as skipped, with the reason,
    and go on to the next interval as after a run, so one lost interval never blocks the later ones."""
    assert plan.interval is not None
    span = f"[{plan.interval.started_at.isoformat()}, {plan.interval.ended_at.isoformat()})"
    log.warning("%s (%s) gives up %s: %s", job.name, job.id, span, reason)
    now = job.last_run_at or sched.utcnow()
    job.last_run_at = previous_last_run  # the handler did not run
    job.waiting_for = None
    job.waiting_reason = None
    # Recorded (and guarded like a run, so no other worker runs an interval given up here).
    record = plan.guard or ctx.records_history(job, definition)
    return await _skipped(ctx, job, plan, reason, record=record, guard=plan.guard, started_at=now)


async def _skip(
    ctx: WorkerContext, job: Job, definition: JobDefinition | None, plan: RunPlan, reason: str
) -> RunOutcome:
    """Advance the schedule without calling the handler (the interval was run elsewhere, or missed)."""
    log.info("%s (%s) skipped: %s", job.name, job.id, reason)
    record = plan.skip_reason is not None and ctx.records_history(job, definition)
    started_at = job.last_run_at or sched.utcnow()
    return await _skipped(ctx, job, plan, reason, record=record, guard=False, started_at=started_at)


async def _skipped(
    ctx: WorkerContext,
    job: Job,
    plan: RunPlan,
    reason: str,
    *,
    record: bool,
    guard: bool,
    started_at: datetime,
) -> RunOutcome:
    """End a run whose handler is not called: a ``skipped`` run record (when ``record``), the lock
    released with the schedule advanced."""
    if record:
        await ctx.store.runs.start(
            name=job.name,
            job_id=job.id,
            interval=plan.interval,
            guard=guard,
            started_at=started_at,
            worker=ctx.name,
            status="skipped",
            error=reason,
        )
    _finishing(job)
    await ctx.store.save_state(job)
    return RunOutcome(job, ran=False, succeeded=False, status="skipped", reason=reason)


async def _finish_record(
    ctx: WorkerContext,
    job: Job,
    run_id: str,
    succeeded: bool,
    failure: BaseException | None,
    finished_at: datetime,
) -> None:
    try:
        await ctx.store.runs.finish(
            run_id,
            status="succeeded" if succeeded else "failed",
            finished_at=finished_at,
            error=job.fail_reason if failure is not None else None,
        )
        await ctx.trim_history(job.name)
    except Exception as exc:
        log.warning("could not record the end of run %s of %s: %s", run_id, job.name, exc)


async def _save_final_state(ctx: WorkerContext, job: Job, stamp: tuple[str, ...]) -> bool:
    """Save the outcome; while the database is unreachable, keep trying (the lease stays valid, since
    nobody can take the lock over while the database is down), so a finished run is never run again."""
    return await keep_trying(lambda: ctx.store.save_state_batched(job, stamp=stamp), job)


async def keep_trying(write: Callable[[], Awaitable[bool]], job: Job) -> bool:
    """Run a fenced write of ``job``'s run, retrying with a growing pause while the database is away."""
    delay = 0.1
    while True:
        try:
            return await write()
        except DatabaseUnavailable as exc:
            log.warning("writing %s (%s) failed (%s); retrying in %.1f s", job.name, job.id, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_SAVE_RETRY_DELAY)


async def _handle_retry(
    ctx: WorkerContext, job: Job, definition: JobDefinition | None, error: BaseException
) -> None:
    strategy = definition.backoff if definition is not None else None
    if strategy is None:
        return
    try:
        delay = strategy(job.fail_count, error, job)
    except Exception as exc:
        log.exception("backoff strategy of %r raised", job.name)
        await ctx.report_error(exc)
        return
    if delay is None:
        await ctx.events.emit_job_event("retry exhausted", job.name, error, job)
        return
    job.next_run_at = sched.utcnow() + timedelta(seconds=float(delay))
    details = RetryDetails(
        attempt=job.fail_count, delay=float(delay), next_run_at=job.next_run_at, error=error
    )
    await ctx.events.emit_job_event("retry", job.name, job, details)


async def _interrupted(
    ctx: WorkerContext, job: Job, run_id: str | None, *, guarded: bool, still_running: bool = False
) -> None:
    """A run cancelled by a stop: unlock it and make it due now, so another worker resumes it at once.

    A once-per-interval record stays "running": the worker that resumes the job takes it over. A
    handler still running in its thread (``still_running``) keeps the lock instead: the job comes back
    one lock lifetime after this worker stops renewing it, so it never runs twice at once.
    """
    if run_id is not None and not guarded:
        try:
            await ctx.store.runs.finish(
                run_id, status="failed", finished_at=sched.utcnow(), error="interrupted; resumed later"
            )
        except Exception as exc:
            log.warning("could not record the interruption of %s: %s", job.name, exc)
    lease = job.lease
    if lease is None or lease.lost:
        return
    if still_running:
        lease.finishing = True  # the lock stays: nothing may release it while the thread runs
        log.warning(
            "%s (%s) ignored the request to stop and still runs in its thread; it stays locked and "
            "comes back when its lock expires",
            job.name,
            job.id,
        )
        return
    try:
        await ctx.store.release([job], reschedule_at=sched.utcnow())
        log.info("interrupted %s (%s); released for another worker", job.name, job.id)
    except DatabaseUnavailable as exc:
        # Expected when the database went away (a stop during an outage): one line, no traceback.
        log.warning(
            "could not release interrupted job %s (%s): %s; it comes back when its lock expires",
            job.name,
            job.id,
            exc,
        )
    except Exception:
        log.exception("could not release interrupted job %s (%s)", job.name, job.id)

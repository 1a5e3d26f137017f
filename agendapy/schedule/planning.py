"""Before a run: which interval it handles, when the next run is, whether to skip it.

Plain recurring jobs follow Agenda (the next run counts from this run's start). A job switches to
*interval scheduling* when its definition has ``once_per_interval``, or it ``requires`` other jobs, or
it names a ``misfire`` policy: its runs then follow the ticks of its schedule
(:mod:`agendapy.schedule.ticks`) and each handles the interval that ends at its tick.

Misfires (ticks that passed while no worker ran):

* ``"once"`` (default): one catch-up run for the latest interval, then back on schedule;
* ``"skip"``: a run late by more than one interval is skipped; the job waits for the next tick;
* ``"all"``: every missed interval runs, oldest first, one after the other.

``fixed_delay`` jobs have no next run while they run; it is set at the finish (finish + interval),
so runs never overlap and downtime leaves one catch-up run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..definition import JobDefinition
from ..errors import InvalidInput
from .next_run import apply_date_constraints
from .repeat import interval_from_document
from .ticks import RunInterval, interval_ending_at_or_before, tick_after, tick_at_or_before
from .timezones import parse_timezone

__all__ = ["PlannedJob", "RunPlan", "fixed_delay_next_run", "plan_run"]


class PlannedJob(Protocol):
    """The fields of a job that planning reads (a :class:`~agendapy.Job` has them all)."""

    @property
    def repeat_interval(self) -> str | int | None: ...
    @property
    def repeat_timezone(self) -> str | None: ...
    @property
    def next_run_at(self) -> datetime | None: ...
    @property
    def start_date(self) -> datetime | None: ...
    @property
    def end_date(self) -> datetime | None: ...
    @property
    def skip_days(self) -> Sequence[int] | None: ...
    @property
    def fixed_delay(self) -> bool: ...
    @property
    def misfire(self) -> str | None: ...
    @property
    def requires(self) -> Sequence[str] | None: ...
    @property
    def waiting_for(self) -> Sequence[str] | None: ...
    @property
    def interval_started_at(self) -> datetime | None: ...
    @property
    def interval_ended_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class RunPlan:
    """What a run will do before its handler is called."""

    interval: RunInterval | None
    next_run_at: datetime | None
    guard: bool = False
    skip_reason: str | None = None
    #: Compute the next run with Agenda's rule (``job.compute_next_run_at()``) after setting lastRunAt.
    agenda_rule: bool = False


def _interval_scheduling(job: PlannedJob, definition: JobDefinition | None) -> bool:
    once = definition is not None and definition.once_per_interval
    return bool(once or job.requires or job.misfire is not None)


def plan_run(job: PlannedJob, definition: JobDefinition | None, now: datetime) -> RunPlan:
    """Plan the run of ``job`` starting ``now`` (sets nothing on the job)."""
    if not job.repeat_interval:
        return RunPlan(interval=None, next_run_at=None, agenda_rule=True)
    try:
        spec = interval_from_document(job.repeat_interval)
        zone = parse_timezone(job.repeat_timezone, field="repeatTimezone")
    except InvalidInput:
        return RunPlan(interval=None, next_run_at=None, agenda_rule=True)  # fails the job, as Agenda
    if job.fixed_delay:
        return RunPlan(interval=None, next_run_at=None)
    scheduled = job.next_run_at or now

    if not _interval_scheduling(job, definition):
        handled = interval_ending_at_or_before(spec, max(scheduled, now), zone)
        return RunPlan(interval=handled, next_run_at=None, agenda_rule=True)

    misfire = job.misfire or "once"
    pending = job.waiting_for is not None and job.interval_started_at and job.interval_ended_at
    if pending:
        assert job.interval_started_at is not None and job.interval_ended_at is not None
        handled = RunInterval(job.interval_started_at, job.interval_ended_at)
    elif misfire == "once":
        handled = interval_ending_at_or_before(spec, max(scheduled, now), zone)
    else:
        handled = interval_ending_at_or_before(spec, scheduled, zone)
    if misfire == "all":
        following = tick_after(spec, handled.ended_at, zone)
    elif pending and misfire == "once" and tick_at_or_before(spec, now, zone) > handled.ended_at:
        # It waited for its requirements past later ticks: one catch-up run for the latest interval
        # right after this one, as after downtime, rather than none until the next tick.
        following = now
    else:
        following = tick_after(spec, max(now, handled.ended_at), zone)
    next_run_at = apply_date_constraints(
        following,
        start_date=job.start_date,
        end_date=job.end_date,
        skip_days=job.skip_days,
        timezone=zone,
    )
    skip_reason = None
    if misfire == "skip" and not pending and tick_at_or_before(spec, now, zone) > handled.ended_at:
        skip_reason = f"missed: the interval ending {handled.ended_at.isoformat()} was not run in time"
    guard = definition is not None and definition.once_per_interval
    return RunPlan(interval=handled, next_run_at=next_run_at, guard=guard, skip_reason=skip_reason)


def fixed_delay_next_run(job: PlannedJob, finished_at: datetime) -> datetime | None:
    """The next run of a fixed-delay job: its finish plus its interval (date constraints applied)."""
    if not job.repeat_interval:
        return None
    try:
        spec = interval_from_document(job.repeat_interval)
        zone = parse_timezone(job.repeat_timezone, field="repeatTimezone")
    except InvalidInput:
        return None
    if spec.every is None:
        return None
    return apply_date_constraints(
        finished_at + spec.every,
        start_date=job.start_date,
        end_date=job.end_date,
        skip_days=job.skip_days,
        timezone=zone,
    )

"""Whether the jobs a recurring job ``requires`` have covered the interval it is about to run.

The rule (documented in docs/intervals.md, "What covers an interval"), for a job D about to run for
[start, end) and each job R it requires:

* R covers time from its *first interval* on: the earliest interval any recorded run of R handled. The
  part of [start, end) before it counts as covered, since R did not exist then (D and R created in one
  deploy, in either order, by one worker or several).
* From there on, succeeded runs of R must cover the rest of [start, end) without a gap.
* While that can still happen, D waits and keeps its interval. It *gives the interval up* (records it
  as skipped, with the reason) when it no longer can:

  - R already handled a later interval than the uncovered part (runs of a job go forward: a missed or
    failed interval is not run again once the job moved on), or R skipped that part;
  - R has no recorded run at all, and either no recurring job named R exists or R finishes runs
    without recording them (``history="none"``); after a grace of one interval length past ``end``, so
    that R created just after D in the same deploy is found.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .schedule.ticks import RunInterval
from .store.base import JobCriteria, JobQuery, JobStore
from .store.runs import RequiredRuns

__all__ = ["Requirement", "RequirementsCheck", "assess", "check_requirements", "log_waiting"]

log = logging.getLogger("agendapy")

#: How many jobs of a required name are read to find a recurring one (``every()`` keeps one per name;
#: recurring jobs sort first, by their future ``nextRunAt``).
_JOBS_READ = 20


@dataclass(frozen=True)
class Requirement:
    """One required job, judged for one interval."""

    name: str
    met: bool
    #: Why it is not met (None when it is).
    reason: str | None = None
    #: It can no longer be met for this interval: the dependent gives the interval up.
    final: bool = False


@dataclass(frozen=True)
class RequirementsCheck:
    """Every requirement of a job for one interval."""

    requirements: list[Requirement]

    @property
    def missing(self) -> list[str]:
        """Names of the requirements not met."""
        return [r.name for r in self.requirements if not r.met]

    @property
    def given_up(self) -> bool:
        """Some requirement can no longer be met: the interval cannot run."""
        return any(r.final for r in self.requirements)

    @property
    def reason(self) -> str:
        """Why the interval waits or is given up (the final reasons only, when it is given up)."""
        unmet = [r for r in self.requirements if not r.met and (r.final or not self.given_up)]
        return "; ".join(r.reason or r.name for r in unmet)


def _span(start: datetime, end: datetime) -> str:
    return f"[{start.isoformat()}, {end.isoformat()})"


def assess(name: str, interval: RunInterval, runs: RequiredRuns) -> Requirement | None:
    """Judge one requirement from its run history; None when it has no recorded interval run yet (the
    caller then looks at its job)."""
    if runs.first_started_at is None:
        return None
    start = max(interval.started_at, runs.first_started_at)
    if start >= interval.ended_at:
        return Requirement(name, met=True)
    reached = start
    for record in runs.overlapping:
        if record.status != "succeeded":
            continue
        assert record.interval_started_at is not None and record.interval_ended_at is not None
        if record.interval_started_at > reached:
            break
        reached = max(reached, record.interval_ended_at)
        if reached >= interval.ended_at:
            return Requirement(name, met=True)
    gap = _span(reached, interval.ended_at)
    after_gap = [
        r for r in runs.overlapping if r.interval_ended_at is not None and r.interval_ended_at > reached
    ]
    failed = [r for r in after_gap if r.status == "failed"]
    skipped = any(r.status == "skipped" for r in after_gap)
    moved_on = runs.last_started_at is not None and runs.last_started_at > reached
    if failed:
        reason = f"{name!r} failed for {gap}: {failed[-1].error}"
    elif skipped:
        reason = f"{name!r} skipped {gap}"
    elif moved_on:
        reason = f"{name!r} did not run for {gap}"
    else:
        reason = f"{name!r} has not completed {gap} yet"
    if moved_on:
        reason += " and has gone on to later intervals"
    return Requirement(name, met=False, reason=reason, final=moved_on or skipped)


async def _without_runs(store: JobStore, name: str, interval: RunInterval, now: datetime) -> Requirement:
    """A required job with no recorded interval run: wait for its first, unless it cannot come."""
    jobs, _ = await store.query(JobQuery(criteria=JobCriteria(name=name), limit=_JOBS_READ))
    recurring = [job for job in jobs if job.repeat_interval]
    grace_over = now >= interval.ended_at + (interval.ended_at - interval.started_at)
    if not recurring:
        reason = f"{name!r} is not scheduled (no recurring job of that name)"
        return Requirement(name, met=False, reason=reason, final=grace_over)
    if any(job.last_finished_at is not None for job in recurring):
        reason = f"{name!r} runs, but its runs are not recorded (history='none'), so none can count"
        return Requirement(name, met=False, reason=reason, final=grace_over)
    if all(job.disabled for job in recurring):
        return Requirement(name, met=False, reason=f"{name!r} is disabled and has not run yet")
    return Requirement(name, met=False, reason=f"{name!r} has not run yet")


async def check_requirements(
    store: JobStore, names: Sequence[str], interval: RunInterval, now: datetime
) -> RequirementsCheck:
    """Judge each required job of a run for ``interval``, starting ``now``."""
    requirements: list[Requirement] = []
    for name in names:
        runs = await store.runs.coverage(name, interval)
        judged = assess(name, interval, runs)
        if judged is None:
            judged = await _without_runs(store, name, interval, now)
        requirements.append(judged)
    return RequirementsCheck(requirements)


def log_waiting(
    name: str,
    job_id: str | None,
    interval: RunInterval,
    reason: str,
    *,
    changed: bool,
    now: datetime,
    due: datetime | None,
    check_every: timedelta,
) -> None:
    """Log a check that leaves a job waiting for its requirements, on one line.

    Waiting a moment is the normal case: every interval of a pipeline, the dependent usually comes due
    while the run it needs is still going. That is DEBUG, once per new reason. A wait that outlasts
    the interval's own length past its end means the pipeline is stuck: one WARNING, at the first
    check after that moment (or when the reason changes after it). A given-up interval is a WARNING
    of its own (the runner logs it).
    """
    text = " ".join(reason.split())  # a required run's error may span lines; a log record must not
    stuck_at = interval.ended_at + (interval.ended_at - interval.started_at)
    # A waiting check sets the next one ``check_every`` on, so this check, ``due`` then, follows one
    # made at ``due - check_every`` (a first check is due at a tick, no later than ``stuck_at``). Read
    # from ``due``, not ``now``: a busy worker may run a check late, and it is still the first past
    # ``stuck_at``.
    first_stuck_check = (due or now) - check_every < stuck_at
    if now >= stuck_at and (changed or first_stuck_check):
        log.warning(
            "%s (%s) is still waiting for %s, which ended %s ago: %s",
            name,
            job_id,
            _span(interval.started_at, interval.ended_at),
            _ago(now - interval.ended_at),
            text,
        )
    elif changed:
        log.debug("%s (%s) waits: %s", name, job_id, text)


def _ago(elapsed: timedelta) -> str:
    seconds = int(elapsed.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"

"""Run planning: which interval a run handles, its next run, misfires and fixed delay.

Planning reads a job through a narrow protocol (:class:`PlannedJob`); a plain dataclass stands in for
a stored job here, so no database is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from schedule_support import utc

from agendapy.definition import JobDefinition
from agendapy.schedule.planning import RunPlan, fixed_delay_next_run, plan_run
from agendapy.schedule.ticks import RunInterval

HOUR_MS = 3_600_000
SCHEDULED = utc(2026, 3, 2, 10)  # the tick the run was due at
NOW = utc(2026, 3, 2, 13, 20)  # the worker was down until now: ticks 11:00, 12:00, 13:00 were missed


@dataclass
class StoredJob:
    """The fields planning reads, as a job document holds them."""

    repeat_interval: str | int | None = HOUR_MS
    repeat_timezone: str | None = None
    next_run_at: datetime | None = SCHEDULED
    start_date: datetime | None = None
    end_date: datetime | None = None
    skip_days: list[int] | None = None
    fixed_delay: bool = False
    misfire: str | None = None
    requires: list[str] | None = None
    waiting_for: list[str] | None = None
    interval_started_at: datetime | None = None
    interval_ended_at: datetime | None = None


def definition(*, once_per_interval: bool) -> JobDefinition:
    return JobDefinition(
        name="report",
        fn=lambda job: None,
        concurrency=1,
        lock_limit=0,
        lock_lifetime=timedelta(minutes=10),
        priority=0,
        once_per_interval=once_per_interval,
    )


def hours(start: int, end: int) -> RunInterval:
    return RunInterval(utc(2026, 3, 2, start), utc(2026, 3, 2, end))


def test_a_plain_recurring_job_follows_agendas_rule_and_handles_the_latest_interval() -> None:
    plan = plan_run(StoredJob(), None, NOW)
    assert plan == RunPlan(interval=hours(12, 13), next_run_at=None, agenda_rule=True)


@pytest.mark.parametrize("repeat_interval", [None, "", "not an interval"])
def test_without_a_readable_interval_agendas_rule_decides(repeat_interval: str | None) -> None:
    plan = plan_run(StoredJob(repeat_interval=repeat_interval), None, NOW)
    assert plan == RunPlan(interval=None, next_run_at=None, agenda_rule=True)


def test_a_fixed_delay_job_has_no_next_run_while_it_runs() -> None:
    plan = plan_run(StoredJob(fixed_delay=True, misfire="all"), None, NOW)
    assert plan == RunPlan(interval=None, next_run_at=None)


def test_misfire_once_runs_the_latest_interval_then_goes_back_on_schedule() -> None:
    plan = plan_run(StoredJob(), definition(once_per_interval=True), NOW)
    assert plan == RunPlan(interval=hours(12, 13), next_run_at=utc(2026, 3, 2, 14), guard=True)


def test_misfire_all_runs_every_missed_interval_oldest_first() -> None:
    plan = plan_run(StoredJob(misfire="all"), None, NOW)
    assert plan == RunPlan(interval=hours(9, 10), next_run_at=utc(2026, 3, 2, 11))


def test_misfire_skip_skips_a_late_run_and_waits_for_the_next_tick() -> None:
    plan = plan_run(StoredJob(misfire="skip"), None, NOW)
    assert plan.interval == hours(9, 10)
    assert plan.next_run_at == utc(2026, 3, 2, 14)
    assert plan.skip_reason is not None
    assert "2026-03-02T10:00:00+00:00" in plan.skip_reason


def test_misfire_skip_runs_a_run_that_is_on_time() -> None:
    plan = plan_run(StoredJob(misfire="skip"), None, utc(2026, 3, 2, 10, 0, 1))
    assert plan == RunPlan(interval=hours(9, 10), next_run_at=utc(2026, 3, 2, 11))


def test_a_run_that_waited_for_its_requirements_keeps_its_interval_and_catches_up_at_once() -> None:
    job = StoredJob(
        requires=["import"],
        waiting_for=["import"],
        interval_started_at=utc(2026, 3, 2, 9),
        interval_ended_at=utc(2026, 3, 2, 10),
    )
    plan = plan_run(job, None, NOW)
    assert plan.interval == hours(9, 10)
    assert plan.next_run_at == NOW  # later ticks passed while it waited: one catch-up run next


def test_date_constraints_apply_to_the_next_run() -> None:
    ends = plan_run(StoredJob(misfire="all", end_date=utc(2026, 3, 2, 10, 30)), None, NOW)
    assert ends.next_run_at is None
    starts = plan_run(StoredJob(misfire="all", start_date=utc(2026, 3, 3)), None, NOW)
    assert starts.next_run_at == utc(2026, 3, 3)


def test_fixed_delay_counts_from_the_finish() -> None:
    finished = utc(2026, 3, 2, 13, 20, 5)
    assert fixed_delay_next_run(StoredJob(fixed_delay=True), finished) == finished + timedelta(hours=1)
    assert fixed_delay_next_run(StoredJob(end_date=NOW), finished) is None
    assert fixed_delay_next_run(StoredJob(repeat_interval="0 * * * *"), finished) is None  # cron: no delay
    assert fixed_delay_next_run(StoredJob(repeat_interval=None), finished) is None
    assert fixed_delay_next_run(StoredJob(repeat_timezone="Mars/Olympus"), finished) is None

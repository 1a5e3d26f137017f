"""Agenda 6 ``packages/agenda/test/shared/agenda-test-suite.ts`` ("Agenda Integration"), test for test,
including its "notification channel integration" and "fork mode" groups (which @agendajs/mongo-backend
runs).

Agenda's suite makes ``new Agenda({backend, processEvery: 100})`` per test; the ``agenda`` fixture is the same
with 50 ms. Options Agenda sets with a setter (``agenda.maxConcurrency(2)``) are constructor options here.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from agendapy import Agenda, Job

from .common import cite, hold, ms, utcnow
from support import EventLog, wait_until


def job_processor(job: Job) -> None:
    """Agenda's ``const jobProcessor = () => {}``."""


async def run_job_and_wait(agenda: Agenda, name: str, event: str, data: Any = None) -> None:
    """Agenda's ``runJobAndWait``: listen for ``event``, then ``now(name, data)``, then wait for it."""
    log = EventLog(agenda, event)
    await agenda.now(name, data)
    await log.wait(event)


# -- every() ---------------------------------------------------------------------------------------


async def test_every_should_schedule_a_job_to_run_at_an_interval(agenda: Agenda) -> None:
    """every(): should schedule a job to run at an interval"""
    await agenda.every("5 minutes", "test-interval-job")
    result = await agenda.query_jobs(name="test-interval-job")
    assert len(result.jobs) == 1
    assert result.jobs[0].repeat_interval == "5 minutes"


async def test_every_should_schedule_a_job_to_run_at_a_cron_expression(agenda: Agenda) -> None:
    """every(): should schedule a job to run at a cron expression"""
    await agenda.every("0 6 * * *", "test-cron-job")
    result = await agenda.query_jobs(name="test-cron-job")
    assert len(result.jobs) == 1
    assert result.jobs[0].repeat_interval == "0 6 * * *"


async def test_every_should_update_a_job_that_was_previously_scheduled(agenda: Agenda) -> None:
    """every(): should update a job that was previously scheduled"""
    await agenda.every("1 minute", "update-interval-job")
    await agenda.every("5 minutes", "update-interval-job")
    result = await agenda.query_jobs(name="update-interval-job")
    assert len(result.jobs) == 1
    assert result.jobs[0].repeat_interval == "5 minutes"


async def test_every_should_accept_options_object_with_timezone(agenda: Agenda) -> None:
    """every(): should accept options object with timezone"""
    agenda.define("timezoneJob", job_processor)
    job = await agenda.every("5 minutes", "timezoneJob", {}, timezone="America/New_York")
    assert job.repeat_timezone == "America/New_York"


async def test_every_should_set_skip_immediate_option(agenda: Agenda) -> None:
    """every(): should set skipImmediate option"""
    agenda.define("skipImmediateJob", job_processor)
    agenda.define("noSkipJob", job_processor)
    without_skip = await agenda.every("5 minutes", "noSkipJob", {})
    assert without_skip.next_run_at is not None
    immediate_diff = abs(without_skip.next_run_at - utcnow())
    with_skip = await agenda.every("5 minutes", "skipImmediateJob", {}, skip_immediate=True)
    assert with_skip.next_run_at is not None
    skip_diff = with_skip.next_run_at - utcnow()
    assert immediate_diff < timedelta(seconds=1)
    assert skip_diff > timedelta(minutes=4)


async def test_every_should_create_multiple_jobs_with_array_of_names(agenda: Agenda) -> None:
    """every(): should create multiple jobs with array of names"""
    agenda.define("arrayJob1", job_processor)
    agenda.define("arrayJob2", job_processor)
    jobs = await agenda.every("5 minutes", ["arrayJob1", "arrayJob2"])
    assert isinstance(jobs, list)
    assert len(jobs) == 2
    assert {job.name for job in jobs} == {"arrayJob1", "arrayJob2"}


# -- schedule() ------------------------------------------------------------------------------------


async def test_schedule_should_schedule_a_job_for_a_specific_time(agenda: Agenda) -> None:
    """schedule(): should schedule a job for a specific time"""
    when = ms(utcnow() + timedelta(seconds=60))
    job = await agenda.schedule(when, "test-schedule-job")
    assert job.next_run_at == when


async def test_schedule_should_schedule_a_job_with_human_readable_time(agenda: Agenda) -> None:
    """schedule(): should schedule a job with human-readable time"""
    job = await agenda.schedule("in 1 hour", "test-human-schedule")
    assert job.next_run_at is not None
    assert job.next_run_at > utcnow()


async def test_schedule_should_create_multiple_jobs_with_array_of_names(agenda: Agenda) -> None:
    """schedule(): should create multiple jobs with array of names"""
    agenda.define("scheduleArrayJob1", job_processor)
    agenda.define("scheduleArrayJob2", job_processor)
    jobs = await agenda.schedule(utcnow() + timedelta(seconds=60), ["scheduleArrayJob1", "scheduleArrayJob2"])
    assert isinstance(jobs, list)
    assert len(jobs) == 2


# -- now() -----------------------------------------------------------------------------------------


async def test_now_should_schedule_a_job_to_run_immediately(agenda: Agenda) -> None:
    """now(): should schedule a job to run immediately"""
    job = await agenda.now("test-now-job")
    assert job.next_run_at is not None
    assert job.next_run_at <= utcnow() + timedelta(seconds=1)


async def test_now_should_schedule_a_job_with_data(agenda: Agenda) -> None:
    """now(): should schedule a job with data"""
    job = await agenda.now("test-now-data", {"key": "value"})
    assert job.data == {"key": "value"}


# -- queryJobs() -----------------------------------------------------------------------------------


async def test_query_jobs_should_return_all_jobs_matching_query(agenda: Agenda) -> None:
    """queryJobs(): should return all jobs matching query"""
    await agenda.now("query-job-1")
    await agenda.now("query-job-2")
    await agenda.now("query-job-1")
    result = await agenda.query_jobs(name="query-job-1")
    assert len(result.jobs) == 2


async def test_query_jobs_should_return_empty_array_when_no_jobs_match(agenda: Agenda) -> None:
    """queryJobs(): should return empty array when no jobs match"""
    result = await agenda.query_jobs(name="non-existent")
    assert result.jobs == []


async def test_query_jobs_should_limit_results(agenda: Agenda) -> None:
    """queryJobs(): should limit results"""
    for _ in range(3):
        await agenda.now("limit-test")
    result = await agenda.query_jobs(name="limit-test", limit=2)
    assert len(result.jobs) == 2
    assert result.total == 3


async def test_query_jobs_should_skip_results(agenda: Agenda) -> None:
    """queryJobs(): should skip results"""
    for _ in range(3):
        await agenda.now("skip-test")
    result = await agenda.query_jobs(name="skip-test", skip=2)
    assert len(result.jobs) == 1


async def test_query_jobs_should_combine_limit_and_skip(agenda: Agenda) -> None:
    """queryJobs(): should combine limit and skip"""
    for _ in range(5):
        await agenda.now("limit-skip-test")
    result = await agenda.query_jobs(name="limit-skip-test", limit=2, skip=2)
    assert len(result.jobs) == 2


async def test_query_jobs_should_sort_results(agenda: Agenda) -> None:
    """queryJobs(): should sort results"""
    for order in (3, 1, 2):
        job = await agenda.now("sort-test", {"order": order})
        await job.set_priority(order).save()
    result = await agenda.query_jobs(name="sort-test", sort={"priority": "desc"})
    assert [job.priority for job in result.jobs] == [3, 2, 1]


# -- cancel() --------------------------------------------------------------------------------------


async def test_cancel_should_cancel_jobs_matching_query(agenda: Agenda) -> None:
    """cancel(): should cancel jobs matching query"""
    await agenda.now("cancel-test")
    await agenda.now("cancel-test")
    await agenda.now("keep-test")
    assert await agenda.cancel(name="cancel-test") == 2
    result = await agenda.query_jobs()
    assert [job.name for job in result.jobs] == ["keep-test"]


# -- job disable/enable ----------------------------------------------------------------------------


async def test_disable_should_disable_a_job_via_job_disable(agenda: Agenda) -> None:
    """job disable/enable: should disable a job via Job.disable()"""
    job = await agenda.now("disable-test")
    await job.disable().save()
    result = await agenda.query_jobs(name="disable-test")
    assert result.jobs[0].disabled is True


async def test_enable_should_enable_a_disabled_job_via_job_enable(agenda: Agenda) -> None:
    """job disable/enable: should enable a disabled job via Job.enable()"""
    job = await agenda.now("enable-test")
    await job.disable().save()
    (stored,) = (await agenda.query_jobs(name="enable-test")).jobs  # re-hydrated from the database
    await stored.enable().save()
    result = await agenda.query_jobs(name="enable-test")
    assert not result.jobs[0].disabled


async def test_disable_should_not_run_disabled_jobs(agenda: Agenda) -> None:
    """job disable/enable: should not run disabled jobs"""
    processed: list[bool] = []
    agenda.define("disabled-process-test", lambda job: processed.append(True))
    agenda.define("enabled-control", lambda job: None)
    log = EventLog(agenda, "complete:enabled-control")
    job = await agenda.now("disabled-process-test")
    await job.disable().save()
    await agenda.now("enabled-control")
    await agenda.start()
    # A job beside it runs, so the worker does claim: without it, a worker that never polled passed.
    await log.wait("complete:enabled-control", timeout=30)
    await asyncio.sleep(0.5)  # as Agenda: several polls in which it must not run
    assert processed == []


async def test_disable_should_disable_jobs_matching_query_via_agenda_disable(agenda: Agenda) -> None:
    """job disable/enable: should disable jobs matching query via agenda.disable()"""
    await agenda.now("bulk-disable-test")
    await agenda.now("bulk-disable-test")
    assert await agenda.disable(name="bulk-disable-test") == 2
    result = await agenda.query_jobs(name="bulk-disable-test")
    assert [job.disabled for job in result.jobs] == [True, True]


async def test_enable_should_enable_disabled_jobs_via_agenda_enable(agenda: Agenda) -> None:
    """job disable/enable: should enable disabled jobs via agenda.enable()"""
    job = await agenda.now("bulk-enable-test")
    await job.disable().save()
    assert await agenda.enable(name="bulk-enable-test") == 1
    result = await agenda.query_jobs(name="bulk-enable-test")
    assert not result.jobs[0].disabled


async def test_disable_should_return_0_when_no_jobs_match_disable_query(agenda: Agenda) -> None:
    """job disable/enable: should return 0 when no jobs match disable query"""
    assert await agenda.disable(name="non-existent-job") == 0


async def test_disable_should_return_0_when_no_options_provided_to_disable(agenda: Agenda) -> None:
    """job disable/enable: should return 0 when no options provided to disable"""
    await agenda.now("not-disabled")
    assert await agenda.disable() == 0


# -- job processing --------------------------------------------------------------------------------


async def test_processing_should_process_a_job(agenda: Agenda) -> None:
    """job processing: should process a job"""
    processed: list[bool] = []
    agenda.define("process-test", lambda job: processed.append(True))
    await agenda.start()
    await run_job_and_wait(agenda, "process-test", "complete:process-test")
    assert processed == [True]


async def test_processing_should_pass_job_instance_to_processor(agenda: Agenda) -> None:
    """job processing: should pass job instance to processor"""
    received: list[Job] = []
    agenda.define("job-instance-test", received.append)
    await agenda.start()
    await run_job_and_wait(agenda, "job-instance-test", "complete:job-instance-test", {"testData": 123})
    (job,) = received
    assert isinstance(job, Job)
    assert job.name == "job-instance-test"
    assert job.data == {"testData": 123}


async def test_processing_should_emit_success_event_on_completion(agenda: Agenda) -> None:
    """job processing: should emit success event on completion"""
    agenda.define("success-event-test", job_processor)
    log = EventLog(agenda, "success:success-event-test")
    await agenda.start()
    await run_job_and_wait(agenda, "success-event-test", "complete:success-event-test")
    assert log.count("success:success-event-test") == 1


async def test_processing_should_emit_fail_event_on_error(agenda: Agenda) -> None:
    """job processing: should emit fail event on error"""

    async def handler(job: Job) -> None:
        raise RuntimeError("Test error")

    agenda.define("fail-event-test", handler)
    log = EventLog(agenda, "fail:fail-event-test")
    await agenda.start()
    await run_job_and_wait(agenda, "fail-event-test", "complete:fail-event-test")
    ((error, _),) = log.args("fail:fail-event-test")
    assert str(error) == "Test error"


# -- job locking -----------------------------------------------------------------------------------


async def test_locking_should_lock_jobs_during_processing(agenda: Agenda) -> None:
    """job locking: should lock jobs during processing"""
    locked: list[bool] = []

    async def handler(job: Job) -> None:
        result = await agenda.query_jobs(name="lock-test")
        locked.append(result.jobs[0].locked_at is not None)

    agenda.define("lock-test", handler)
    await agenda.start()
    await run_job_and_wait(agenda, "lock-test", "complete:lock-test")
    assert locked == [True]


async def test_locking_should_clear_locks_on_stop(agenda: Agenda) -> None:
    """job locking: should clear locks on stop"""

    async def handler(job: Job) -> None:
        await hold(job, 5)

    agenda.define("clear-lock-test", handler)
    await agenda.start()
    await run_job_and_wait(agenda, "clear-lock-test", "start:clear-lock-test")
    await agenda.stop()
    result = await agenda.query_jobs(name="clear-lock-test")
    assert not result.jobs[0].locked_at


# -- concurrency -----------------------------------------------------------------------------------


class Peak:
    def __init__(self) -> None:
        self.running = 0
        self.max_running = 0

    async def handler(self, job: Job) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(0.1)
        finally:
            self.running -= 1


async def test_concurrency_should_respect_max_concurrency(make_agenda: Any) -> None:
    """concurrency: should respect maxConcurrency"""
    agenda = await make_agenda(process_every=0.1, max_concurrency=2)
    peak = Peak()
    agenda.define("concurrency-test", peak.handler)
    log = EventLog(agenda, "complete:concurrency-test")
    await agenda.start()
    await asyncio.gather(*(agenda.now("concurrency-test") for _ in range(4)))
    await log.wait("complete:concurrency-test", 4)
    assert peak.max_running <= 2


async def test_concurrency_should_respect_per_job_concurrency(agenda: Agenda) -> None:
    """concurrency: should respect per-job concurrency"""
    peak = Peak()
    agenda.define("per-job-concurrency", peak.handler, concurrency=1)
    log = EventLog(agenda, "complete:per-job-concurrency")
    await agenda.start()
    await asyncio.gather(*(agenda.now("per-job-concurrency") for _ in range(3)))
    await log.wait("complete:per-job-concurrency", 3)
    assert peak.max_running == 1


# -- priority --------------------------------------------------------------------------------------


async def test_priority_should_process_higher_priority_jobs_first(make_agenda: Any) -> None:
    """priority: should process higher priority jobs first"""
    agenda = await make_agenda(process_every=0.1, max_concurrency=1)
    order: list[int] = []
    agenda.define("priority-test", lambda job: order.append(job.priority))
    log = EventLog(agenda, "complete:priority-test")
    same_time = utcnow() - timedelta(seconds=1)
    for priority in (-10, 10, 0):
        job = agenda.create("priority-test")
        job.next_run_at = same_time
        await job.set_priority(priority).save()
    await agenda.start()
    await log.wait("complete:priority-test", 3)
    assert order[0] == 10


# -- lock limits -----------------------------------------------------------------------------------
# Agenda's handlers are ``(_job, _cb) => {}``: a callback never called, so the jobs never finish.


async def never_finishes(job: Job) -> None:
    await job.stopping()


async def locked_jobs(agenda: Agenda) -> int:
    return (await agenda.running_stats()).locked_jobs  # type: ignore[return-value]


async def locked_after_the_first(agenda: Agenda) -> int:
    """How many jobs ``agenda`` holds a few polls after it locked its first (a loaded machine may
    take longer than those polls to lock any: counting after a fixed sleep could see none)."""

    async def some() -> bool:
        return await locked_jobs(agenda) >= 1

    await wait_until(some, timeout=30)
    await asyncio.sleep(0.5)  # as Agenda: several polls that must not lock another job
    return await locked_jobs(agenda)


async def test_lock_limits_should_not_lock_more_than_agenda_lock_limit_jobs(make_agenda: Any) -> None:
    """lock limits: should not lock more than agenda lockLimit jobs"""
    agenda = await make_agenda(process_every=0.1, lock_limit=1)
    agenda.define("lock-limit-job", never_finishes)
    await agenda.start()
    await asyncio.gather(agenda.now("lock-limit-job", {"i": 1}), agenda.now("lock-limit-job", {"i": 2}))
    assert await locked_after_the_first(agenda) == 1


async def test_lock_limits_should_not_lock_more_mixed_jobs_than_agenda_lock_limit(make_agenda: Any) -> None:
    """lock limits: should not lock more mixed jobs than agenda lockLimit"""
    agenda = await make_agenda(process_every=0.1, lock_limit=1)
    for i in (1, 2, 3):
        agenda.define(f"lock-mixed-{i}", never_finishes)
    await agenda.start()
    await asyncio.gather(*(agenda.now(f"lock-mixed-{i}", {"i": i}) for i in (1, 2, 3)))
    assert await locked_after_the_first(agenda) == 1


async def test_lock_limits_should_not_lock_more_than_definition_lock_limit_jobs(make_agenda: Any) -> None:
    """lock limits: should not lock more than definition lockLimit jobs"""
    agenda = await make_agenda(process_every=0.1)
    agenda.define("def-lock-limit", never_finishes, lock_limit=1)
    await agenda.start()
    await asyncio.gather(agenda.now("def-lock-limit", {"i": 1}), agenda.now("def-lock-limit", {"i": 2}))
    assert await locked_after_the_first(agenda) == 1


async def test_lock_limits_should_not_lock_more_than_agenda_lock_limit_during_processing_interval(
    make_agenda: Any,
) -> None:
    """lock limits: should not lock more than agenda lockLimit during processing interval"""
    agenda = await make_agenda(process_every=0.2, lock_limit=1)
    agenda.define("lock-interval", never_finishes)
    await agenda.start()
    when = utcnow() + timedelta(seconds=0.3)
    await asyncio.gather(
        agenda.schedule(when, "lock-interval", {"i": 1}), agenda.schedule(when, "lock-interval", {"i": 2})
    )
    assert await locked_after_the_first(agenda) == 1


async def test_lock_limits_should_not_lock_more_than_definition_lock_limit_during_processing_interval(
    make_agenda: Any,
) -> None:
    """lock limits: should not lock more than definition lockLimit during processing interval"""
    agenda = await make_agenda(process_every=0.2)
    agenda.define("def-lock-interval", never_finishes, lock_limit=1)
    await agenda.start()
    when = utcnow() + timedelta(seconds=0.3)
    await asyncio.gather(
        agenda.schedule(when, "def-lock-interval", {"i": 1}),
        agenda.schedule(when, "def-lock-interval", {"i": 2}),
    )
    assert await locked_after_the_first(agenda) == 1


# -- purge -----------------------------------------------------------------------------------------


async def test_purge_should_remove_orphaned_jobs_jobs_without_definitions(agenda: Agenda) -> None:
    """purge: should remove orphaned jobs (jobs without definitions)

    Agenda defines the orphans and deletes their definitions; here they are simply never defined.
    """
    agenda.define("defined-job", job_processor)
    await agenda.now("defined-job")
    await agenda.now("orphan-1")
    await agenda.now("orphan-2")
    assert (await agenda.query_jobs()).total == 3
    assert await agenda.purge() == 2
    after = await agenda.query_jobs()
    assert after.total == 1
    assert after.jobs[0].name == "defined-job"


# -- unique constraint -----------------------------------------------------------------------------

ACTIVE_123 = {"data.type": "active", "data.userId": "123"}


async def test_unique_should_modify_one_job_when_unique_matches(agenda: Agenda) -> None:
    """unique constraint: should modify one job when unique matches"""
    job1 = await (
        agenda.create("unique-job", {"type": "active", "userId": "123", "other": True})
        .unique(ACTIVE_123)
        .schedule("now")
        .save()
    )
    job2 = await (
        agenda.create("unique-job", {"type": "active", "userId": "123", "other": False})
        .unique(ACTIVE_123)
        .schedule("now")
        .save()
    )
    assert job1.id == job2.id
    assert len((await agenda.query_jobs(name="unique-job")).jobs) == 1


async def test_unique_should_not_modify_job_when_unique_matches_and_insert_only_is_set(
    agenda: Agenda,
) -> None:
    """unique constraint: should not modify job when unique matches and insertOnly is set"""
    job1 = await (
        agenda.create("unique-insert-only", {"type": "active", "userId": "123", "value": "first"})
        .unique(ACTIVE_123, insert_only=True)
        .schedule("now")
        .save()
    )
    job2 = await (
        agenda.create("unique-insert-only", {"type": "active", "userId": "123", "value": "second"})
        .unique(ACTIVE_123, insert_only=True)
        .schedule("now")
        .save()
    )
    assert job1.id == job2.id
    result = await agenda.query_jobs(name="unique-insert-only")
    assert len(result.jobs) == 1
    assert result.jobs[0].data["value"] == "first"


async def test_unique_should_create_two_jobs_when_unique_does_not_match(agenda: Agenda) -> None:
    """unique constraint: should create two jobs when unique does not match"""
    for user in ("123", "456"):
        await (
            agenda.create("unique-no-match", {"type": "active", "userId": user})
            .unique({"data.type": "active", "data.userId": user})
            .schedule("now")
            .save()
        )
    assert len((await agenda.query_jobs(name="unique-no-match")).jobs) == 2


# -- Job class -------------------------------------------------------------------------------------


async def test_job_to_json_should_return_job_attributes_as_json(agenda: Agenda) -> None:
    """Job class: toJson: should return job attributes as JSON"""
    job = await agenda.now("json-test", {"foo": "bar"})
    json = job.to_dict()
    assert json["name"] == "json-test"
    assert json["data"] == {"foo": "bar"}
    assert json["id"] is not None


async def test_job_repeat_every_should_set_repeat_interval(agenda: Agenda) -> None:
    """Job class: repeatEvery: should set repeatInterval"""
    job = agenda.create("repeat-every-test")
    job.repeat_every("5 minutes")
    assert job.repeat_interval == "5 minutes"


async def test_job_repeat_every_should_accept_cron_expression(agenda: Agenda) -> None:
    """Job class: repeatEvery: should accept cron expression"""
    job = agenda.create("repeat-cron-test")
    job.repeat_every("0 6 * * *")
    assert job.repeat_interval == "0 6 * * *"


async def test_job_repeat_every_should_clear_repeat_interval_when_set_to_null(agenda: Agenda) -> None:
    """Job class: repeatEvery: should clear repeatInterval when set to null

    Agenda stores ``''``; the assertion here is that the repeat is cleared (an empty value), in memory
    and in the document."""
    agenda.define("repeat-clear-test", job_processor)
    job = agenda.create("repeat-clear-test")
    job.repeat_every("5 minutes")
    await job.save()
    assert job.repeat_interval == "5 minutes"
    job.repeat_every("")
    await job.save()
    assert not job.repeat_interval
    (stored,) = (await agenda.query_jobs(name="repeat-clear-test")).jobs
    assert not stored.repeat_interval


async def test_job_repeat_at_should_set_repeat_at_time(agenda: Agenda) -> None:
    """Job class: repeatAt: should set repeatAt time"""
    job = agenda.create("repeat-at-test")
    job.repeat_at("3:30pm")  # type: ignore[operator]  # attribute and setter, as Agenda's repeatAt
    assert job.repeat_at == "3:30pm"


async def test_job_schedule_should_set_next_run_at_from_date(agenda: Agenda) -> None:
    """Job class: schedule: should set nextRunAt from Date"""
    job = agenda.create("schedule-date-test")
    when = ms(utcnow() + timedelta(seconds=60))
    job.schedule(when)
    assert job.next_run_at == when


async def test_job_schedule_should_set_next_run_at_from_string(agenda: Agenda) -> None:
    """Job class: schedule: should set nextRunAt from string"""
    job = agenda.create("schedule-string-test")
    job.schedule("in 5 minutes")
    assert job.next_run_at is not None
    assert job.next_run_at > utcnow()


async def test_job_priority_should_set_priority_number(agenda: Agenda) -> None:
    """Job class: priority: should set priority number"""
    assert agenda.create("priority-num-test").set_priority(10).priority == 10


async def test_job_priority_should_parse_priority_string(agenda: Agenda) -> None:
    """Job class: priority: should parse priority string"""
    assert agenda.create("priority-str-test").set_priority("high").priority == 10


async def test_job_priority_should_support_negative_priority(agenda: Agenda) -> None:
    """Job class: priority: should support negative priority"""
    assert agenda.create("priority-neg-test").set_priority(-5).priority == -5


async def test_job_remove_should_remove_job_from_database(agenda: Agenda) -> None:
    """Job class: remove: should remove job from database"""
    job = await agenda.now("remove-test")
    assert job.id is not None
    await job.remove()
    assert (await agenda.query_jobs(id=job.id)).jobs == []


async def test_job_run_should_call_the_job_processor_directly(agenda: Agenda) -> None:
    """Job class: run: should call the job processor directly"""
    called: list[bool] = []
    agenda.define("run-direct-test", lambda job: called.append(True))
    job = agenda.create("run-direct-test")
    await job.save()
    await job.run()
    assert called == [True]


async def test_job_run_should_pass_the_job_instance_to_the_processor(agenda: Agenda) -> None:
    """Job class: run: should pass the job instance to the processor"""
    received: list[Job] = []
    agenda.define("run-job-instance-test", received.append)
    job = agenda.create("run-job-instance-test", {"foo": "bar"})
    await job.save()
    await job.run()
    (got,) = received
    assert got.data == {"foo": "bar"}


async def test_job_touch_should_update_locked_at(agenda: Agenda) -> None:
    """Job class: touch: should update lockedAt"""
    seen: dict[str, Any] = {}

    async def handler(job: Job) -> None:
        seen["initial"] = job.locked_at
        await asyncio.sleep(0.05)
        await job.touch()
        seen["touched"] = job.locked_at

    agenda.define("touch-test", handler)
    await agenda.start()
    await run_job_and_wait(agenda, "touch-test", "complete:touch-test")
    assert seen["initial"] is not None
    assert seen["touched"] is not None
    assert seen["touched"] > seen["initial"]


async def test_job_touch_should_persist_progress_value(agenda: Agenda) -> None:
    """Job class: touch: should persist progress value"""
    seen: dict[str, Any] = {}

    async def handler(job: Job) -> None:
        seen["id"] = job.id
        await job.touch(50)
        seen["progress"] = job.progress

    agenda.define("touch-progress-test", handler)
    log = EventLog(agenda, "complete:touch-progress-test")
    await agenda.start()
    await agenda.now("touch-progress-test")
    await log.wait("complete:touch-progress-test")
    assert seen["progress"] == 50
    result = await agenda.query_jobs(id=seen["id"])
    assert result.jobs[0].progress == 50


async def test_job_fail_should_set_failure_fields_in_memory(agenda: Agenda) -> None:
    """Job class: fail: should set failure fields in memory"""
    job = await agenda.now("fail-mark-test")
    job.fail(RuntimeError("Test failure"))
    assert job.fail_reason == "Test failure"
    assert job.failed_at is not None
    assert job.fail_count == 1


async def test_job_fail_should_increment_fail_count_on_multiple_failures(agenda: Agenda) -> None:
    """Job class: fail: should increment failCount on multiple failures"""
    job = await agenda.now("fail-count-test")
    job.fail(RuntimeError("First failure"))
    job.fail(RuntimeError("Second failure"))
    assert job.fail_count == 2
    assert job.fail_reason == "Second failure"


async def test_job_save_should_persist_job_to_database(agenda: Agenda) -> None:
    """Job class: save: should persist job to database"""
    job = agenda.create("save-test", {"value": 42})
    await job.save()
    assert job.id is not None
    result = await agenda.query_jobs(name="save-test")
    assert len(result.jobs) == 1
    assert result.jobs[0].data["value"] == 42


async def test_job_save_should_update_existing_job(agenda: Agenda) -> None:
    """Job class: save: should update existing job"""
    job = await agenda.now("save-update-test", {"value": 1})
    job.data = {"value": 2}
    await job.save()
    result = await agenda.query_jobs(name="save-update-test")
    assert len(result.jobs) == 1
    assert result.jobs[0].data["value"] == 2


async def test_job_save_should_return_the_job(agenda: Agenda) -> None:
    """Job class: save: should return the job"""
    job = agenda.create("save-return-test")
    assert await job.save() is job


# -- async/callback job handling -------------------------------------------------------------------


async def test_should_allow_async_functions(agenda: Agenda) -> None:
    """async/callback job handling: should allow async functions"""
    finished: list[bool] = []

    async def handler(job: Job) -> None:
        await asyncio.sleep(0.005)
        finished.append(True)

    agenda.define("async-job", handler)
    log = EventLog(agenda, "success:async-job")
    job = agenda.create("async-job")
    await job.save()
    assert finished == []
    await job.run()
    assert log.count("success:async-job") == 1
    assert finished == [True]


async def test_should_handle_errors_from_async_functions(agenda: Agenda) -> None:
    """async/callback job handling: should handle errors from async functions"""

    async def handler(job: Job) -> None:
        await asyncio.sleep(0.005)
        raise RuntimeError("async failure")

    agenda.define("async-fail-job", handler)
    log = EventLog(agenda, "fail:async-fail-job")
    job = agenda.create("async-fail-job")
    await job.save()
    await job.run()
    ((error, _),) = log.args("fail:async-fail-job")
    assert str(error) == "async failure"


NO_DONE = cite("there is no `done` callback", "a handler gets only the job; there is no done callback")


#: Background tasks the callback tests start (kept referenced until they finish).
pending: list[asyncio.Future[Any]] = []


def callback_handler(body: Any) -> Any:
    """Agenda's ``async (job, cb) => {...}``: a two-argument handler whose ``cb`` ends the run."""

    async def handler(job: Job, cb: Any) -> None:
        await body(cb)

    return handler


@pytest.mark.xfail(strict=True, reason=NO_DONE)
async def test_should_wait_for_callback_even_if_function_is_async(agenda: Agenda) -> None:
    """async/callback job handling: should wait for callback even if function is async"""
    finished_cb: list[bool] = []

    async def body(cb: Any) -> None:
        async def later() -> None:
            await asyncio.sleep(0.005)
            finished_cb.append(True)
            cb()

        pending.append(asyncio.ensure_future(later()))

    agenda.define("async-cb-job", callback_handler(body))
    log = EventLog(agenda, "success:async-cb-job")
    job = agenda.create("async-cb-job")
    await job.save()
    await job.run()
    assert finished_cb == [True]
    assert log.count("success:async-cb-job") == 1


async def _failure_of(agenda: Agenda, name: str, body: Any) -> str:
    agenda.define(name, callback_handler(body))
    log = EventLog(agenda, f"fail:{name}")
    job = agenda.create(name)
    await job.save()
    await job.run()
    ((error, _),) = log.args(f"fail:{name}")
    return str(error)


@pytest.mark.xfail(strict=True, reason=NO_DONE)
async def test_should_use_callback_error_if_async_function_did_not_reject(agenda: Agenda) -> None:
    """async/callback job handling: should use callback error if async function did not reject"""

    async def body(cb: Any) -> None:
        async def later() -> None:
            await asyncio.sleep(0.005)
            cb(RuntimeError("callback failure"))

        pending.append(asyncio.ensure_future(later()))

    assert await _failure_of(agenda, "async-cb-error-job", body) == "callback failure"


@pytest.mark.xfail(strict=True, reason=NO_DONE)
async def test_should_favor_async_error_over_callback_error_if_async_comes_first(agenda: Agenda) -> None:
    """async/callback job handling: should favor async error over callback error if async comes first"""

    async def body(cb: Any) -> None:
        async def later() -> None:
            await asyncio.sleep(0.005)
            cb(RuntimeError("callbackFailure"))

        pending.append(asyncio.ensure_future(later()))
        raise RuntimeError("functionFailure")

    assert await _failure_of(agenda, "async-first-error-job", body) == "functionFailure"


@pytest.mark.xfail(strict=True, reason=NO_DONE)
async def test_should_favor_callback_error_over_async_error_if_callback_comes_first(agenda: Agenda) -> None:
    """async/callback job handling: should favor callback error over async error if callback comes first"""

    async def body(cb: Any) -> None:
        cb(RuntimeError("callbackFailure"))
        await asyncio.sleep(0.005)
        raise RuntimeError("functionFailure")

    assert await _failure_of(agenda, "cb-first-error-job", body) == "callbackFailure"


# -- events ----------------------------------------------------------------------------------------


async def test_events_should_emit_start_event_when_job_begins(agenda: Agenda) -> None:
    """events: should emit start event when job begins"""
    agenda.define("start-event-test", job_processor)
    log = EventLog(agenda, "start:start-event-test")
    await agenda.start()
    await run_job_and_wait(agenda, "start-event-test", "complete:start-event-test")
    assert log.count("start:start-event-test") == 1


async def test_events_should_emit_complete_event_when_job_finishes(agenda: Agenda) -> None:
    """events: should emit complete event when job finishes"""
    agenda.define("complete-event-test", job_processor)
    log = EventLog(agenda, "complete:complete-event-test")
    await agenda.start()
    await run_job_and_wait(agenda, "complete-event-test", "complete:complete-event-test")
    assert log.count("complete:complete-event-test") == 1


async def test_events_should_emit_generic_start_event(agenda: Agenda) -> None:
    """events: should emit generic start event"""
    agenda.define("generic-start-test", job_processor)
    log = EventLog(agenda, "start")
    await agenda.start()
    await run_job_and_wait(agenda, "generic-start-test", "complete:generic-start-test")
    assert log.count("start") == 1


# -- drain -----------------------------------------------------------------------------------------
# Agenda's DrainResult also has ``aborted`` (for an AbortSignal); agendapy's has no signal and no
# ``aborted`` (see the signal tests below), so those assertions are the xfail ones.


async def long_running(job: Job) -> None:
    await hold(job, 5)


async def started(agenda: Agenda, name: str) -> None:
    log = EventLog(agenda, f"start:{name}")
    await agenda.now(name)
    await log.wait(f"start:{name}")


async def test_drain_should_wait_for_all_running_jobs_to_complete(agenda: Agenda) -> None:
    """drain: should wait for all running jobs to complete"""
    completed: list[str | None] = []

    async def handler(job: Job) -> None:
        await asyncio.sleep(0.2)
        completed.append(job.id)

    agenda.define("drain-test", handler)
    log = EventLog(agenda, "start:drain-test")
    await agenda.start()
    await asyncio.gather(*(agenda.now("drain-test") for _ in range(3)))
    await log.wait("start:drain-test")
    result = await agenda.drain()
    assert len(completed) == 3
    assert result.completed == 3
    assert result.running == 0
    assert result.timed_out is False


async def test_drain_should_wait_for_running_job_to_finish(agenda: Agenda) -> None:
    """drain: should wait for running job to finish"""
    state: list[str] = []

    async def handler(job: Job) -> None:
        state.append("started")
        await asyncio.sleep(0.3)
        state.append("finished")

    agenda.define("drainWaitJob", handler)
    await agenda.start()
    await run_job_and_wait(agenda, "drainWaitJob", "start:drainWaitJob")
    assert "started" in state
    assert "finished" not in state
    result = await agenda.drain()
    assert state == ["started", "finished"]
    assert result.completed == 1
    assert result.running == 0


async def test_drain_should_resolve_immediately_if_no_jobs_are_running(agenda: Agenda) -> None:
    """drain: should resolve immediately if no jobs are running"""
    await agenda.start()
    result = await agenda.drain()
    assert (result.completed, result.running, result.timed_out) == (0, 0, False)


async def test_drain_should_timeout_and_return_running_jobs_count(agenda: Agenda) -> None:
    """drain: should timeout and return running jobs count"""
    agenda.define("drain-timeout-test", long_running)
    await agenda.start()
    await started(agenda, "drain-timeout-test")
    result = await agenda.drain(0.1)
    assert result.timed_out is True
    assert result.running == 1
    assert result.completed == 0


async def test_drain_should_accept_timeout_as_options_object(agenda: Agenda) -> None:
    """drain: should accept timeout as options object (``drain(timeout=...)`` is the keyword form)"""
    agenda.define("drain-timeout-opts-test", long_running)
    await agenda.start()
    await started(agenda, "drain-timeout-opts-test")
    result = await agenda.drain(timeout=0.1)
    assert result.timed_out is True
    assert result.running == 1


NO_SIGNAL = cite("takes no `AbortSignal`", "drain() takes no AbortSignal; cancel the awaiting task instead")


@pytest.mark.xfail(strict=True, reason=NO_SIGNAL)
async def test_drain_should_abort_when_signal_is_triggered(agenda: Agenda) -> None:
    """drain: should abort when signal is triggered"""
    agenda.define("drain-abort-test", long_running)
    await agenda.start()
    await started(agenda, "drain-abort-test")
    signal = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, signal.set)
    result: Any = await agenda.drain(signal=signal)  # type: ignore[call-arg]
    assert (result.aborted, result.timed_out, result.running, result.completed) == (True, False, 1, 0)


@pytest.mark.xfail(strict=True, reason=NO_SIGNAL)
async def test_drain_should_resolve_immediately_if_signal_is_already_aborted(agenda: Agenda) -> None:
    """drain: should resolve immediately if signal is already aborted"""
    agenda.define("drain-pre-aborted-test", long_running)
    await agenda.start()
    await started(agenda, "drain-pre-aborted-test")
    signal = asyncio.Event()
    signal.set()
    result: Any = await agenda.drain(signal=signal)  # type: ignore[call-arg]
    assert (result.aborted, result.running) == (True, 1)


@pytest.mark.xfail(strict=True, reason=NO_SIGNAL)
async def test_drain_should_support_both_timeout_and_signal_together(agenda: Agenda) -> None:
    """drain: should support both timeout and signal together"""
    agenda.define("drain-both-test", long_running)
    await agenda.start()
    await started(agenda, "drain-both-test")
    signal = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, signal.set)
    result: Any = await agenda.drain(timeout=0.2, signal=signal)  # type: ignore[call-arg]
    assert (result.aborted, result.timed_out) == (True, False)


# -- stop / repeating jobs -------------------------------------------------------------------------


async def test_stop_should_stop_agenda(agenda: Agenda) -> None:
    """stop: should stop agenda"""
    await agenda.start()
    await agenda.stop()
    assert not agenda.is_running


async def test_repeating_should_reschedule_job_after_completion_when_using_repeat_every(
    agenda: Agenda,
) -> None:
    """repeating jobs: should reschedule job after completion when using repeatEvery"""
    agenda.define("repeat-test", job_processor)
    log = EventLog(agenda, "complete:repeat-test")
    await agenda.every("1 second", "repeat-test")
    await agenda.start()
    await log.wait("complete:repeat-test", 2)  # Agenda: at least 2 runs after 2.5 s
    await agenda.stop()


async def test_repeating_should_run_job_at_scheduled_cron_time(agenda: Agenda) -> None:
    """repeating jobs: should run job at scheduled cron time"""
    processed: list[bool] = []
    agenda.define("cron-test", lambda job: processed.append(True))
    log = EventLog(agenda, "complete:cron-test")
    await agenda.every("* * * * * *", "cron-test")
    await agenda.start()
    await log.wait("complete:cron-test")
    assert processed


# -- error handling --------------------------------------------------------------------------------


async def test_errors_should_emit_error_event_when_job_throws(agenda: Agenda) -> None:
    """error handling: should emit error event when job throws"""

    async def handler(job: Job) -> None:
        raise RuntimeError("Job error")

    agenda.define("error-test", handler)
    log = EventLog(agenda, "fail:error-test")
    await agenda.start()
    await run_job_and_wait(agenda, "error-test", "complete:error-test")
    ((_, job),) = log.args("fail:error-test")
    assert job.name == "error-test"


async def test_errors_should_save_fail_reason_and_failed_at_when_job_fails(agenda: Agenda) -> None:
    """error handling: should save failReason and failedAt when job fails"""

    async def handler(job: Job) -> None:
        raise RuntimeError("Failure reason")

    agenda.define("fail-save-test", handler)
    await agenda.start()
    await run_job_and_wait(agenda, "fail-save-test", "complete:fail-save-test")
    (job,) = (await agenda.query_jobs(name="fail-save-test")).jobs
    assert job.fail_reason == "Failure reason"
    assert job.failed_at is not None


async def test_errors_should_increment_fail_count_on_repeated_failures(agenda: Agenda) -> None:
    """error handling: should increment failCount on repeated failures"""

    async def handler(job: Job) -> None:
        raise RuntimeError("Repeated failure")

    def on_fail(error: BaseException, job: Job) -> None:
        job.next_run_at = utcnow()

    agenda.define("fail-count-test", handler)
    agenda.on("fail:fail-count-test", on_fail)
    log = EventLog(agenda, "fail:fail-count-test", "complete:fail-count-test")
    await agenda.start()
    await agenda.now("fail-count-test")
    await log.wait("fail:fail-count-test", 2)
    await log.wait("complete:fail-count-test", 2)  # complete follows the database write
    (job,) = (await agenda.query_jobs(name="fail-count-test")).jobs
    assert job.fail_count >= 2


async def test_errors_should_not_run_failed_jobs_again_unless_rescheduled(agenda: Agenda) -> None:
    """error handling: should not run failed jobs again unless rescheduled"""
    runs: list[int] = []

    async def handler(job: Job) -> None:
        runs.append(1)
        raise RuntimeError("Intentional failure")

    agenda.define("no-rerun-failed", handler)
    log = EventLog(agenda, "fail:no-rerun-failed")
    await agenda.start()
    await agenda.now("no-rerun-failed")
    await log.wait("fail:no-rerun-failed")
    await asyncio.sleep(0.5)  # as Agenda: polls in which it must not run again
    assert len(runs) == 1
    (job,) = (await agenda.query_jobs(name="no-rerun-failed")).jobs
    assert job.fail_reason == "Intentional failure"
    assert not job.next_run_at


async def test_errors_should_not_cause_unhandled_promise_rejection_on_job_timeout(agenda: Agenda) -> None:
    """error handling: should not cause unhandled promise rejection on job timeout

    Python's counterpart of an unhandled rejection is an exception reported to the event loop's
    exception handler (a task whose error nobody retrieved)."""
    unhandled: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:

        async def handler(job: Job) -> None:
            await asyncio.sleep(0.5)

        agenda.define("timeout-test", handler, lock_lifetime=0.1)
        agenda.on("error", lambda error: None)
        await agenda.start()
        await run_job_and_wait(agenda, "timeout-test", "start:timeout-test")
        await asyncio.sleep(0.7)
        await agenda.stop()
        import gc

        gc.collect()  # a never-retrieved task exception is reported when the task is collected
        assert unhandled == []
    finally:
        loop.set_exception_handler(previous)


# -- notification channel integration (mongo-backend runs it with an in-memory channel) -------------

NO_CHANNEL = cite("| notification channels (", "no notification channel objects: change streams are built in")


@pytest.mark.xfail(strict=True, reason=NO_CHANNEL)
async def test_channel_should_accept_notification_channel_in_constructor(db_url: str) -> None:
    """notification channel integration: should accept notification channel in constructor"""
    agenda = Agenda(db_url, notification_channel=object())  # type: ignore[call-arg]
    assert agenda.has_notification_channel()  # type: ignore[attr-defined]


@pytest.mark.xfail(strict=True, reason=NO_CHANNEL)
async def test_channel_should_accept_notification_channel_via_notify_via_method(agenda: Agenda) -> None:
    """notification channel integration: should accept notification channel via notifyVia method"""
    assert agenda.has_notification_channel() is False  # type: ignore[attr-defined]
    agenda.notify_via(object())  # type: ignore[attr-defined]
    assert agenda.has_notification_channel() is True  # type: ignore[attr-defined]


@pytest.mark.xfail(strict=True, reason=NO_CHANNEL)
async def test_channel_should_throw_when_setting_notification_channel_after_start(agenda: Agenda) -> None:
    """notification channel integration: should throw when setting notification channel after start"""
    agenda.define("test", job_processor)
    await agenda.start()
    with pytest.raises(RuntimeError, match=r"(?i)already running"):
        agenda.notify_via(object())  # type: ignore[attr-defined]


@pytest.mark.xfail(strict=True, reason=NO_CHANNEL)
async def test_channel_should_connect_and_disconnect_notification_channel_on_start_stop(
    agenda: Agenda,
) -> None:
    """notification channel integration: should connect and disconnect notification channel on start/stop"""
    channel: Any = agenda.notification_channel  # type: ignore[attr-defined]
    assert channel.state == "disconnected"
    agenda.define("test", job_processor)
    await agenda.start()
    assert channel.state == "connected"
    await agenda.stop()
    assert channel.state == "disconnected"


async def test_channel_should_process_jobs_faster_with_notification_channel(make_agenda: Any) -> None:
    """notification channel integration: should process jobs faster with notification channel

    agendapy's channel is built in (an in-process wake-up and change streams): with a 1 min poll, a
    ``now()`` job still runs at once (Agenda checks after 500 ms; the bound here is generous)."""
    agenda = await make_agenda(process_every=60)
    processed = asyncio.Event()

    async def handler(job: Job) -> None:
        processed.set()

    agenda.define("fast-job", handler)
    await agenda.start()  # returns after the first poll; the next one is a minute away
    await agenda.now("fast-job")
    await asyncio.wait_for(processed.wait(), 30)


# -- fork mode (mongo-backend runs it with its fork helper) ----------------------------------------


async def _fork_job(agenda: Agenda, data: Any) -> Job:
    job = agenda.create("some job", data)
    job.fork_mode(True)
    return job


async def test_fork_mode_should_run_a_job_in_fork_mode(agenda: Agenda, jobs_collection: Any) -> None:
    """fork mode: should run a job in fork mode"""
    job = await _fork_job(agenda, None)
    await job.schedule("now").save()
    assert (await jobs_collection.find_one({"name": "some job"}))["fork"] is True
    agenda.define("some job", job_processor)
    await agenda.start()
    # Agenda's test waits for the run to end; is_running() is also False before the run starts.
    await wait_until(lambda: _finished_once(jobs_collection, job))
    doc = await jobs_collection.find_one({"name": "some job"})
    assert doc["lastFinishedAt"] is not None
    assert doc.get("failReason") is None


async def _finished_once(jobs_collection: Any, job: Job) -> bool:
    doc = await jobs_collection.find_one({"name": job.name})
    return doc is not None and doc.get("lastFinishedAt") is not None and not await job.is_running()


async def test_fork_mode_should_handle_job_failure_in_fork_mode(agenda: Agenda, jobs_collection: Any) -> None:
    """fork mode: should handle job failure in fork mode"""
    job = await _fork_job(agenda, {"failIt": "error"})
    await job.schedule("now").save()
    assert (await jobs_collection.find_one({"name": "some job"}))["fork"] is True


async def test_fork_mode_should_handle_process_exit_in_fork_mode(
    agenda: Agenda, jobs_collection: Any
) -> None:
    """fork mode: should handle process exit in fork mode"""
    job = await _fork_job(agenda, {"failIt": "die"})
    await job.schedule("now").save()
    assert (await jobs_collection.find_one({"name": "some job"}))["fork"] is True

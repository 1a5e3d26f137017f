"""Agenda 6 ``packages/agenda/test/shared/debounce-test-suite.ts`` ("Debounce"), test for test.

Delays are seconds (docs/migrate/from-agenda.md:82): Agenda's ``debounce(1000)`` is ``debounce(1.0)``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from agendapy import Agenda, Job

from .common import ms, utcnow
from support import EventLog


def debounced(
    agenda: Agenda, name: str, data: dict[str, Any], key: dict[str, Any], delay: float, **kw: Any
) -> Job:
    return agenda.create(name, data).unique(key).debounce(delay, **kw)


def define_noop(agenda: Agenda, name: str) -> None:
    agenda.define(name, lambda job: None)


# -- trailing debounce (default) -------------------------------------------------------------------


async def test_trailing_should_delay_job_execution_by_the_debounce_delay(agenda: Agenda) -> None:
    """trailing debounce (default): should delay job execution by the debounce delay"""
    define_noop(agenda, "debounceTest")
    before = utcnow()
    job = await debounced(agenda, "debounceTest", {"key": "test1"}, {"data.key": "test1"}, 1.0).save()
    after = utcnow()
    assert job.next_run_at is not None
    assert ms(before) + timedelta(seconds=1) <= job.next_run_at <= after + timedelta(seconds=1.1)


async def test_trailing_should_reset_the_timer_on_subsequent_saves(agenda: Agenda) -> None:
    """trailing debounce (default): should reset the timer on subsequent saves"""
    define_noop(agenda, "debounceTest")
    job1 = await debounced(agenda, "debounceTest", {"key": "test2"}, {"data.key": "test2"}, 1.0).save()
    first = job1.next_run_at
    assert first is not None
    await asyncio.sleep(0.2)
    # Bounded by the time before the save, not after it: on a loaded machine the save itself may take
    # longer than the 0.1 s a bound read afterwards left it.
    before = utcnow()
    job2 = await debounced(
        agenda, "debounceTest", {"key": "test2", "updated": True}, {"data.key": "test2"}, 1.0
    ).save()
    assert job2.next_run_at is not None
    assert job2.next_run_at > first
    assert job2.next_run_at >= ms(before) + timedelta(seconds=1)


async def test_trailing_should_update_job_data_on_subsequent_saves(agenda: Agenda) -> None:
    """trailing debounce (default): should update job data on subsequent saves"""
    define_noop(agenda, "debounceTest")
    key = {"data.key": "test3"}
    await debounced(agenda, "debounceTest", {"key": "test3", "value": "first"}, key, 1.0).save()
    job2 = await debounced(agenda, "debounceTest", {"key": "test3", "value": "second"}, key, 1.0).save()
    assert job2.data == {"key": "test3", "value": "second"}


async def test_trailing_should_only_create_one_job_in_the_database(agenda: Agenda) -> None:
    """trailing debounce (default): should only create one job in the database"""
    define_noop(agenda, "debounceTest")
    for i in range(5):
        await debounced(
            agenda, "debounceTest", {"key": "test4", "iteration": i}, {"data.key": "test4"}, 0.5
        ).save()
    result = await agenda.query_jobs(name="debounceTest")
    assert len(result.jobs) == 1
    assert result.jobs[0].data == {"key": "test4", "iteration": 4}


# -- leading debounce ------------------------------------------------------------------------------


async def test_leading_should_execute_immediately_on_first_call(agenda: Agenda) -> None:
    """leading debounce: should execute immediately on first call"""
    define_noop(agenda, "debounceLeading")
    before = utcnow()
    job = await debounced(
        agenda, "debounceLeading", {"key": "lead1"}, {"data.key": "lead1"}, 5.0, strategy="leading"
    ).save()
    after = utcnow()
    assert job.next_run_at is not None
    assert before - timedelta(seconds=0.1) <= job.next_run_at <= after + timedelta(seconds=0.1)


async def test_leading_should_keep_original_next_run_at_on_subsequent_saves(agenda: Agenda) -> None:
    """leading debounce: should keep original nextRunAt on subsequent saves"""
    define_noop(agenda, "debounceLeading")
    key = {"data.key": "lead2"}
    job1 = await debounced(agenda, "debounceLeading", {"key": "lead2"}, key, 5.0, strategy="leading").save()
    await asyncio.sleep(0.2)
    job2 = await debounced(
        agenda, "debounceLeading", {"key": "lead2", "updated": True}, key, 5.0, strategy="leading"
    ).save()
    assert job1.next_run_at is not None
    assert job2.next_run_at == ms(job1.next_run_at)


async def test_leading_should_still_update_job_data_on_subsequent_saves(agenda: Agenda) -> None:
    """leading debounce: should still update job data on subsequent saves"""
    define_noop(agenda, "debounceLeading")
    key = {"data.key": "lead3"}
    await debounced(
        agenda, "debounceLeading", {"key": "lead3", "value": "first"}, key, 5.0, strategy="leading"
    ).save()
    job2 = await debounced(
        agenda, "debounceLeading", {"key": "lead3", "value": "second"}, key, 5.0, strategy="leading"
    ).save()
    assert job2.data == {"key": "lead3", "value": "second"}


# -- maxWait ---------------------------------------------------------------------------------------


async def test_max_wait_should_force_execution_when_max_wait_is_exceeded(agenda: Agenda) -> None:
    """maxWait: should force execution when maxWait is exceeded"""
    define_noop(agenda, "debounceMaxWait")
    key = {"data.key": "max1"}
    job1 = await debounced(agenda, "debounceMaxWait", {"key": "max1"}, key, 2.0, max_wait=0.5).save()
    assert job1.debounce_started_at is not None
    await asyncio.sleep(0.6)
    job2 = await debounced(
        agenda, "debounceMaxWait", {"key": "max1", "updated": True}, key, 2.0, max_wait=0.5
    ).save()
    assert job2.next_run_at is not None
    assert job2.next_run_at <= utcnow() + timedelta(seconds=0.1)
    assert job2.debounce_started_at is None


async def test_max_wait_should_keep_debouncing_while_within_max_wait(agenda: Agenda) -> None:
    """maxWait: should keep debouncing while within maxWait"""
    define_noop(agenda, "debounceMaxWait")
    key = {"data.key": "max2"}
    job1 = await debounced(agenda, "debounceMaxWait", {"key": "max2"}, key, 0.5, max_wait=5.0).save()
    first = job1.next_run_at
    assert first is not None
    await asyncio.sleep(0.2)
    before = utcnow()  # as above: a bound read before the save
    job2 = await debounced(
        agenda, "debounceMaxWait", {"key": "max2", "updated": True}, key, 0.5, max_wait=5.0
    ).save()
    assert job2.next_run_at is not None
    assert job2.next_run_at > first
    assert job2.next_run_at >= ms(before) + timedelta(seconds=0.5)


# -- different unique keys / unique required / execution -------------------------------------------


async def test_should_debounce_independently_per_unique_key(agenda: Agenda) -> None:
    """debounce with different unique keys: should debounce independently per unique key"""
    define_noop(agenda, "debounceMulti")
    job1 = await debounced(agenda, "debounceMulti", {"entityId": 1}, {"data.entityId": 1}, 1.0).save()
    job2 = await debounced(agenda, "debounceMulti", {"entityId": 2}, {"data.entityId": 2}, 1.0).save()
    assert len((await agenda.query_jobs(name="debounceMulti")).jobs) == 2
    assert job1.id != job2.id


async def test_should_work_only_when_unique_constraint_is_set(agenda: Agenda) -> None:
    """debounce requires unique constraint: should work only when unique constraint is set"""
    define_noop(agenda, "debounceNoUnique")
    job1 = await agenda.create("debounceNoUnique", {"value": 1}).debounce(1.0).save()
    job2 = await agenda.create("debounceNoUnique", {"value": 2}).debounce(1.0).save()
    assert job1.id != job2.id
    assert len((await agenda.query_jobs(name="debounceNoUnique")).jobs) == 2


async def test_should_execute_job_after_debounce_delay(agenda: Agenda) -> None:
    """job execution with debounce: should execute job after debounce delay"""
    executed: list[Any] = []
    agenda.define("debounceExec", lambda job: executed.append(job.data))
    log = EventLog(agenda, "complete:debounceExec")
    key = {"data.key": "exec1"}
    await debounced(agenda, "debounceExec", {"key": "exec1", "value": 1}, key, 0.2).save()
    await asyncio.sleep(0.05)
    await debounced(agenda, "debounceExec", {"key": "exec1", "value": 2}, key, 0.2).save()
    await asyncio.sleep(0.05)
    await debounced(agenda, "debounceExec", {"key": "exec1", "value": 3}, key, 0.2).save()
    await agenda.start()
    await log.wait("complete:debounceExec")
    await agenda.stop()
    assert executed == [{"key": "exec1", "value": 3}]
    assert len((await agenda.query_jobs(name="debounceExec")).jobs) == 1

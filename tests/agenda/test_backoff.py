"""Agenda 6 ``packages/agenda/test/shared/backoff-test-suite.ts`` ("Backoff Strategies"), test for test.

Delays are seconds in agendapy (docs/migrate/from-agenda.md:82): Agenda's 1000 ms is 1.0 here. A
strategy is called as ``strategy(attempt, error, job)`` instead of with a context object.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from agendapy import Agenda, Job, backoff

from support import EventLog

ERROR = RuntimeError("test")


def job() -> Job:
    return Job(name="test", data={})


def delays(strategy: Any, attempts: int, error: BaseException = ERROR) -> list[float | None]:
    return [strategy(attempt, error, job()) for attempt in range(1, attempts + 1)]


# -- constant backoff ------------------------------------------------------------------------------


def test_constant_backoff_should_return_the_same_delay_for_each_attempt() -> None:
    """constant backoff: should return the same delay for each attempt"""
    assert delays(backoff.constant(delay=1, max_retries=3), 4) == [1, 1, 1, None]


def test_constant_backoff_should_respect_max_delay() -> None:
    """constant backoff: should respect maxDelay"""
    assert delays(backoff.constant(delay=5, max_delay=2, max_retries=3), 1) == [2]


# -- linear backoff --------------------------------------------------------------------------------


def test_linear_backoff_should_increase_delay_linearly() -> None:
    """linear backoff: should increase delay linearly"""
    assert delays(backoff.linear(delay=1, increment=1, max_retries=4), 5) == [1, 2, 3, 4, None]


def test_linear_backoff_should_use_delay_as_default_increment() -> None:
    """linear backoff: should use delay as default increment"""
    assert delays(backoff.linear(delay=0.5, max_retries=3), 3) == pytest.approx([0.5, 1.0, 1.5])


def test_linear_backoff_should_respect_max_delay() -> None:
    """linear backoff: should respect maxDelay"""
    assert delays(backoff.linear(delay=1, increment=2, max_delay=3, max_retries=5), 3) == [1, 3, 3]


# -- exponential backoff ---------------------------------------------------------------------------


def test_exponential_backoff_should_increase_delay_exponentially() -> None:
    """exponential backoff: should increase delay exponentially"""
    got = delays(backoff.exponential(delay=0.1, factor=2, max_retries=5), 6)
    assert got[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert got[5] is None


def test_exponential_backoff_should_respect_max_delay() -> None:
    """exponential backoff: should respect maxDelay"""
    got = delays(backoff.exponential(delay=0.1, factor=2, max_delay=0.5, max_retries=10), 5)
    assert got == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_exponential_backoff_should_apply_jitter_when_configured() -> None:
    """exponential backoff: should apply jitter when configured"""
    strategy = backoff.exponential(delay=1, factor=2, max_retries=3, jitter=0.5)
    results = {strategy(1, ERROR, job()) for _ in range(20)}
    assert None not in results
    assert len(results) > 1
    assert all(0.5 <= value <= 1.5 for value in results if value is not None)


# -- combine / when / presets ----------------------------------------------------------------------


def test_combine_strategy_should_try_strategies_in_sequence() -> None:
    """combine strategy: should try strategies in sequence"""

    def first_two(attempt: int, error: BaseException, job: Job) -> float | None:
        return 0.1 if attempt <= 2 else None

    def then_exponential(attempt: int, error: BaseException, job: Job) -> float | None:
        if attempt > 4:
            return None
        return 1.0 * 2 ** (attempt - 2 - 1)

    got = delays(backoff.combine(first_two, then_exponential), 5)
    assert got[:4] == pytest.approx([0.1, 0.1, 1.0, 2.0])
    assert got[4] is None


def test_when_conditional_strategy_should_only_retry_when_condition_is_met() -> None:
    """when (conditional) strategy: should only retry when condition is met"""
    strategy = backoff.when(
        lambda error, job: "timeout" in str(error), backoff.constant(delay=1, max_retries=3)
    )
    assert strategy(1, RuntimeError("connection timeout"), job()) == 1
    assert strategy(1, RuntimeError("validation failed"), job()) is None


def test_preset_strategies_aggressive_should_have_fast_retries() -> None:
    """preset strategies: aggressive should have fast retries"""
    got = delays(backoff.aggressive(), 4)
    assert got[:3] == pytest.approx([0.1, 0.2, 0.4])
    assert got[3] is None


def test_preset_strategies_standard_should_have_balanced_retries() -> None:
    """preset strategies: standard should have balanced retries"""
    delay = backoff.standard()(1, ERROR, job())
    assert delay is not None
    assert 0.9 <= delay <= 1.1


# -- auto-retry integration ------------------------------------------------------------------------


async def test_auto_retry_should_automatically_retry_with_backoff_strategy(agenda: Agenda) -> None:
    """auto-retry integration: should automatically retry with backoff strategy"""
    attempts: list[int] = []

    async def handler(job: Job) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError(f"Attempt {len(attempts)} failed")

    agenda.define("auto-retry-job", handler, backoff=backoff.constant(delay=0.1, max_retries=5))
    log = EventLog(agenda, "retry:auto-retry-job", "success:auto-retry-job")
    await agenda.now("auto-retry-job")
    await agenda.start()
    await log.wait("success:auto-retry-job")
    assert len(attempts) == 3
    assert [details.delay for _, details in log.args("retry:auto-retry-job")] == pytest.approx([0.1, 0.1])


async def test_auto_retry_should_emit_retry_exhausted_when_max_retries_reached(agenda: Agenda) -> None:
    """auto-retry integration: should emit retry exhausted when max retries reached"""
    attempts: list[int] = []

    async def handler(job: Job) -> None:
        attempts.append(1)
        raise RuntimeError("Always fails")

    agenda.define("exhausted-job", handler, backoff=backoff.constant(delay=0.05, max_retries=2))
    log = EventLog(agenda, "retry exhausted:exhausted-job")
    await agenda.now("exhausted-job")
    await agenda.start()
    ((error, failed),) = await log.wait("retry exhausted:exhausted-job")
    assert len(attempts) == 3  # initial + 2 retries
    assert str(error) == "Always fails"
    assert failed.fail_count == 3


async def test_auto_retry_should_provide_retry_details_in_event(agenda: Agenda) -> None:
    """auto-retry integration: should provide retry details in event"""

    async def handler(job: Job) -> None:
        raise RuntimeError("test error")

    agenda.define("details-job", handler, backoff=backoff.exponential(delay=0.1, max_retries=1))
    log = EventLog(agenda, "retry:details-job", "retry exhausted:details-job")
    await agenda.now("details-job")
    await agenda.start()
    await log.wait("retry exhausted:details-job")
    ((_, details),) = log.args("retry:details-job")
    assert details.attempt == 1
    assert details.delay == pytest.approx(0.1)
    assert str(details.error) == "test error"
    assert isinstance(details.next_run_at, datetime)


async def test_auto_retry_should_not_auto_retry_jobs_without_backoff_configured(agenda: Agenda) -> None:
    """auto-retry integration: should not auto-retry jobs without backoff configured"""
    attempts: list[int] = []

    async def handler(job: Job) -> None:
        attempts.append(1)
        raise RuntimeError("Always fails")

    agenda.define("no-backoff-job", handler)
    log = EventLog(agenda, "retry:no-backoff-job", "fail:no-backoff-job")
    await agenda.now("no-backoff-job")
    await agenda.start()
    await log.wait("fail:no-backoff-job")
    await asyncio.sleep(0.2)  # as Agenda: give a retry the time to (wrongly) happen
    assert len(attempts) == 1
    assert log.count("retry:no-backoff-job") == 0


async def test_auto_retry_should_auto_retry_repeating_jobs_when_backoff_is_configured(agenda: Agenda) -> None:
    """auto-retry integration: should auto-retry repeating jobs when backoff is configured"""
    attempts: list[int] = []

    async def handler(job: Job) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("First attempt fails")

    agenda.define("repeating-job", handler, backoff=backoff.constant(delay=0.05, max_retries=3))
    log = EventLog(agenda, "retry:repeating-job", "success:repeating-job")
    await agenda.every("1 second", "repeating-job")
    await agenda.start()
    await log.wait("success:repeating-job")
    assert log.count("retry:repeating-job") == 1
    assert len(attempts) == 2


async def test_auto_retry_should_work_with_custom_backoff_function(agenda: Agenda) -> None:
    """auto-retry integration: should work with custom backoff function"""
    attempts: list[int] = []

    async def handler(job: Job) -> None:
        attempts.append(1)
        if len(attempts) < 4:
            raise RuntimeError("Failing")

    def custom(attempt: int, error: BaseException, job: Job) -> float | None:
        if attempt > 3:
            return None
        return [0.1, 0.1, 0.2][attempt - 1]

    agenda.define("custom-backoff-job", handler, backoff=custom)
    log = EventLog(agenda, "retry:custom-backoff-job", "success:custom-backoff-job")
    await agenda.now("custom-backoff-job")
    await agenda.start()
    await log.wait("success:custom-backoff-job")
    assert len(attempts) == 4
    assert [details.delay for _, details in log.args("retry:custom-backoff-job")] == [0.1, 0.1, 0.2]

"""Retries: manual rescheduling from fail listeners, backoff strategies, and remove_on_complete.

Ports Node Agenda 6's retry suite (96-99), backoff suite (100-117; delays in seconds here) and
removeOnComplete suite (130-136) to agendapy's public API.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agendapy import Agenda, Job, backoff

from support import EventLog, wait_until


def utcnow() -> datetime:
    return datetime.now(UTC)


def flaky(failures: int, attempts: list[int], message: str = "flaky") -> Any:
    """A handler that fails ``failures`` times, then succeeds; records each attempt."""

    async def handler(job: Job) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) <= failures:
            raise RuntimeError(message)

    return handler


def delays(strategy: Any, job: Job, attempts: int, error: BaseException | None = None) -> list[float | None]:
    error = error or RuntimeError("boom")
    return [strategy(attempt, error, job) for attempt in range(1, attempts + 1)]


# -- manual retry from a fail listener -------------------------------------------------------------


@pytest.mark.parametrize("failures", [1, 2])
async def test_fail_listener_setting_next_run_retries(agenda: Agenda, failures: int) -> None:
    attempts: list[int] = []
    agenda.define("manual", flaky(failures, attempts))

    def on_fail(error: BaseException, job: Job) -> None:
        job.next_run_at = utcnow()

    agenda.on("fail:manual", on_fail)
    log = EventLog(agenda, "success:manual", "fail:manual")
    await agenda.now("manual")
    await agenda.start()
    await log.wait("success:manual")
    assert attempts == list(range(1, failures + 2))
    assert log.count("fail:manual") == failures


@pytest.mark.parametrize("failures", [1, 2])
async def test_fail_listener_rescheduling_and_saving_retries(
    agenda: Agenda, jobs_collection: Any, failures: int
) -> None:
    attempts: list[int] = []
    agenda.define("resave", flaky(failures, attempts))

    async def on_fail(error: BaseException, job: Job) -> None:
        await job.schedule("now").save()

    agenda.on("fail:resave", on_fail)
    log = EventLog(agenda, "success:resave")
    await agenda.now("resave")
    await agenda.start()
    await log.wait("success:resave")
    await asyncio.sleep(0.2)
    assert attempts == list(range(1, failures + 2))
    assert await jobs_collection.count_documents({}) == 1


# -- backoff strategies (pure) ---------------------------------------------------------------------


async def test_constant_backoff(agenda: Agenda) -> None:
    job = agenda.create("b")
    assert delays(backoff.constant(delay=1, max_retries=3), job, 4) == [1, 1, 1, None]
    assert delays(backoff.constant(delay=5, max_delay=2), job, 1) == [2]


async def test_linear_backoff(agenda: Agenda) -> None:
    job = agenda.create("b")
    assert delays(backoff.linear(delay=1, increment=1, max_retries=4), job, 5) == [1, 2, 3, 4, None]
    assert delays(backoff.linear(delay=0.5), job, 3) == pytest.approx([0.5, 1.0, 1.5])
    assert delays(backoff.linear(delay=1, increment=2, max_delay=3), job, 3) == [1, 3, 3]


async def test_exponential_backoff(agenda: Agenda) -> None:
    job = agenda.create("b")
    got = delays(backoff.exponential(delay=0.1, factor=2, max_retries=5), job, 6)
    assert got[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert got[5] is None
    capped = delays(backoff.exponential(delay=0.1, factor=2, max_retries=5, max_delay=0.5), job, 5)
    assert capped == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


async def test_default_max_retries_is_three(agenda: Agenda) -> None:
    job = agenda.create("b")
    assert delays(backoff.constant(delay=1), job, 4) == [1, 1, 1, None]


async def test_jitter_varies_within_bounds(agenda: Agenda) -> None:
    job = agenda.create("b")
    strategy = backoff.constant(delay=1, jitter=0.5, max_retries=100)
    values = [strategy(1, RuntimeError("x"), job) for _ in range(50)]
    assert all(0.5 <= v <= 1.5 for v in values)
    assert len(set(values)) > 1


async def test_combine_takes_the_first_non_none(agenda: Agenda) -> None:
    job = agenda.create("b")
    strategy = backoff.combine(
        backoff.constant(delay=0.1, max_retries=2), backoff.linear(delay=1, increment=1, max_retries=4)
    )
    got = delays(strategy, job, 5)
    assert got[:4] == pytest.approx([0.1, 0.1, 3, 4])
    assert got[4] is None


async def test_when_applies_only_if_the_condition_holds(agenda: Agenda) -> None:
    job = agenda.create("b")
    strategy = backoff.when(
        lambda error, job: "timeout" in str(error), backoff.constant(delay=1, max_retries=5)
    )
    assert strategy(1, RuntimeError("connection timeout"), job) == 1
    assert strategy(1, RuntimeError("bad request"), job) is None


async def test_presets(agenda: Agenda) -> None:
    job = agenda.create("b")
    assert delays(backoff.aggressive(), job, 4)[:3] == pytest.approx([0.1, 0.2, 0.4])
    assert delays(backoff.aggressive(), job, 4)[3] is None
    assert 0.9 <= backoff.standard()(1, RuntimeError("x"), job) <= 1.1
    relaxed = backoff.relaxed()(1, RuntimeError("x"), job)
    assert 4.5 <= relaxed <= 5.5


# -- backoff while processing ----------------------------------------------------------------------


async def test_backoff_retries_until_success(agenda: Agenda, jobs_collection: Any) -> None:
    attempts: list[int] = []
    agenda.define("retried", flaky(2, attempts), backoff=backoff.constant(delay=0.1, max_retries=5))
    log = EventLog(agenda, "retry:retried", "success:retried", "retry exhausted:retried", "complete:retried")
    await agenda.now("retried")
    await agenda.start()
    await log.wait("success:retried")
    await log.wait("complete:retried", 3)  # the final state is saved between success and complete
    assert attempts == [1, 2, 3]
    details = [d for _, d in log.args("retry:retried")]
    assert [d.delay for d in details] == pytest.approx([0.1, 0.1])
    assert [d.attempt for d in details] == [1, 2]
    assert log.count("retry exhausted:retried") == 0
    doc = await jobs_collection.find_one({"name": "retried"})
    assert doc["failCount"] == 0  # success resets the count
    assert doc["lastFinishedAt"] is not None


async def test_retry_details(agenda: Agenda) -> None:
    attempts: list[int] = []
    agenda.define("detailed", flaky(1, attempts, "detail error"), backoff=backoff.constant(delay=0.1))
    log = EventLog(agenda, "retry", "retry:detailed", "success:detailed")
    await agenda.now("detailed")
    await agenda.start()
    before = utcnow()
    await log.wait("success:detailed")
    ((job, details),) = log.args("retry:detailed")
    assert log.count("retry") == 1
    assert isinstance(job, Job)
    assert details.attempt == 1 == details["attempt"]
    assert details.delay == pytest.approx(0.1) == details["delay"]
    assert str(details.error) == "detail error" == str(details["error"])
    assert isinstance(details.next_run_at, datetime)
    assert details["next_run_at"] == details.next_run_at
    assert before - timedelta(seconds=1) < details.next_run_at < utcnow() + timedelta(seconds=1)


async def test_retries_exhausted(agenda: Agenda, jobs_collection: Any) -> None:
    attempts: list[int] = []
    agenda.define(
        "hopeless", flaky(99, attempts, "Always fails"), backoff=backoff.constant(delay=0.05, max_retries=2)
    )
    log = EventLog(
        agenda, "retry exhausted:hopeless", "retry exhausted", "retry:hopeless", "complete:hopeless"
    )
    await agenda.now("hopeless")
    await agenda.start()
    await log.wait("retry exhausted:hopeless")
    await log.wait("complete:hopeless", 3)
    ((error, job),) = log.args("retry exhausted:hopeless")
    assert str(error) == "Always fails"
    assert job.fail_count == 3
    assert log.count("retry exhausted") == 1
    assert log.count("retry:hopeless") == 2
    await asyncio.sleep(0.3)
    assert attempts == [1, 2, 3]
    doc = await jobs_collection.find_one({"name": "hopeless"})
    assert doc["failCount"] == 3
    assert doc["nextRunAt"] is None


async def test_event_order_with_retry(agenda: Agenda) -> None:
    attempts: list[int] = []
    agenda.define("ordered", flaky(1, attempts), backoff=backoff.constant(delay=0.05))
    events = ("start", "success", "fail", "retry", "retry exhausted", "complete")
    log = EventLog(agenda, *(f"{e}:ordered" for e in events))
    await agenda.now("ordered")
    await agenda.start()
    await log.wait("success:ordered")
    await log.wait("complete:ordered", 2)
    assert log.names() == [
        "start:ordered", "fail:ordered", "retry:ordered", "complete:ordered",
        "start:ordered", "success:ordered", "complete:ordered",
    ]  # fmt: skip


async def test_no_backoff_means_no_retry(agenda: Agenda) -> None:
    attempts: list[int] = []
    agenda.define("no backoff", flaky(1, attempts))
    log = EventLog(agenda, "retry", "retry exhausted", "complete:no backoff")
    await agenda.now("no backoff")
    await agenda.start()
    await log.wait("complete:no backoff")
    await asyncio.sleep(0.3)
    assert attempts == [1]
    assert log.count("retry") == 0
    assert log.count("retry exhausted") == 0


async def test_retry_overrides_the_interval_of_a_recurring_job(agenda: Agenda, jobs_collection: Any) -> None:
    attempts: list[int] = []
    agenda.define("recurring", flaky(1, attempts), backoff=backoff.constant(delay=0.1))
    log = EventLog(agenda, "retry:recurring", "success:recurring")
    await agenda.every("1 hour", "recurring")
    await agenda.start()
    await log.wait("success:recurring")
    assert attempts == [1, 2]
    assert log.count("retry:recurring") == 1
    doc = await jobs_collection.find_one({"name": "recurring"})
    assert abs(doc["nextRunAt"] - (doc["lastRunAt"] + timedelta(hours=1))) < timedelta(seconds=1)


async def test_custom_backoff_function(agenda: Agenda) -> None:
    attempts: list[int] = []
    planned = [0.1, 0.1, 0.2]
    calls: list[tuple[int, str, str]] = []

    def custom(attempt: int, error: BaseException, job: Job) -> float | None:
        calls.append((attempt, str(error), job.name))
        return planned[attempt - 1] if attempt <= len(planned) else None

    agenda.define("custom", flaky(99, attempts, "nope"), backoff=custom)
    log = EventLog(agenda, "retry:custom", "retry exhausted:custom")
    await agenda.now("custom")
    await agenda.start()
    await log.wait("retry exhausted:custom")
    assert attempts == [1, 2, 3, 4]
    assert [d.delay for _, d in log.args("retry:custom")] == planned
    assert calls == [(i, "nope", "custom") for i in range(1, 5)]


async def test_backoff_must_be_callable(agenda: Agenda) -> None:
    with pytest.raises(ValueError, match="backoff"):
        agenda.define("bad backoff", lambda job: None, backoff=5)


# -- remove_on_complete ----------------------------------------------------------------------------


async def run_one(
    agenda: Agenda, name: str, handler: Any = None, *, every: bool = False, **define: Any
) -> None:
    agenda.define(name, handler or (lambda job: None), **define)
    log = EventLog(agenda, f"complete:{name}")
    if every:
        await agenda.every("1 hour", name)
    else:
        await agenda.now(name)
    await agenda.start()
    await log.wait(f"complete:{name}")


async def test_remove_on_complete_deletes_a_one_off_job(make_agenda: Any, jobs_collection: Any) -> None:
    agenda = await make_agenda(remove_on_complete=True)
    await run_one(agenda, "removed")
    await wait_until(lambda: _empty(jobs_collection))


async def _empty(jobs_collection: Any) -> bool:
    return await jobs_collection.count_documents({}) == 0


async def test_default_keeps_completed_jobs(agenda: Agenda, jobs_collection: Any) -> None:
    await run_one(agenda, "kept")
    await asyncio.sleep(0.2)
    assert await jobs_collection.count_documents({"name": "kept"}) == 1


async def test_remove_on_complete_never_removes_recurring_jobs(
    make_agenda: Any, jobs_collection: Any
) -> None:
    agenda = await make_agenda(remove_on_complete=True)
    await run_one(agenda, "recurring kept", every=True)
    await asyncio.sleep(0.2)
    assert await jobs_collection.count_documents({"name": "recurring kept"}) == 1


async def test_definition_remove_on_complete_overrides_the_default(
    make_agenda: Any, jobs_collection: Any
) -> None:
    agenda = await make_agenda()
    await run_one(agenda, "override true", remove_on_complete=True)
    await wait_until(lambda: _empty(jobs_collection))


async def test_definition_can_keep_when_the_default_removes(make_agenda: Any, jobs_collection: Any) -> None:
    agenda = await make_agenda(remove_on_complete=True)
    await run_one(agenda, "override false", remove_on_complete=False)
    await asyncio.sleep(0.2)
    assert await jobs_collection.count_documents({"name": "override false"}) == 1


async def test_complete_fires_before_removal(make_agenda: Any, jobs_collection: Any) -> None:
    agenda = await make_agenda(remove_on_complete=True)
    present: list[int] = []

    async def on_complete(job: Job) -> None:
        present.append(await jobs_collection.count_documents({"name": "observed"}))

    agenda.on("complete:observed", on_complete)
    await run_one(agenda, "observed")
    await wait_until(lambda: _empty(jobs_collection))
    assert present == [1]


async def test_failed_job_is_not_removed(make_agenda: Any, jobs_collection: Any) -> None:
    agenda = await make_agenda(remove_on_complete=True)

    def boom(job: Job) -> None:
        raise RuntimeError("boom")

    await run_one(agenda, "failed kept", boom)
    await asyncio.sleep(0.2)
    doc = await jobs_collection.find_one({"name": "failed kept"})
    assert doc is not None
    assert doc["failReason"] == "boom"

"""Agenda 6 ``packages/agenda/test/shared/removeoncomplete-test-suite.ts`` ("removeOnComplete"), test for
test: each test makes its own Agenda with ``processEvery: 100``, starts it, then schedules the job."""

from __future__ import annotations

from typing import Any

from agendapy import Agenda, Job

from support import EventLog, wait_until


async def run_once(
    agenda: Agenda, name: str, handler: Any = None, *, every: bool = False, **define: Any
) -> None:
    agenda.define(name, handler or (lambda job: None), **define)
    log = EventLog(agenda, f"complete:{name}")
    await agenda.start()
    if every:
        await agenda.every("1 hour", name)
    else:
        await agenda.now(name)
    await log.wait(f"complete:{name}")


async def count(agenda: Agenda, name: str) -> int:
    return len((await agenda.query_jobs(name=name)).jobs)


async def kept_after_settling(agenda: Agenda, name: str) -> None:
    """Agenda waits 200 ms for an (unwanted) removal; a stop() lets every pending write finish instead."""
    await agenda.stop()
    assert await count(agenda, name) == 1


async def test_should_remove_one_time_job_after_successful_completion_when_global_remove_on_complete_is_true(
    make_agenda: Any,
) -> None:
    """should remove one-time job after successful completion when global removeOnComplete is true"""
    agenda = await make_agenda(process_every=0.1, remove_on_complete=True)
    await run_once(agenda, "removable-job")
    await wait_until(lambda: _gone(agenda, "removable-job"))


async def _gone(agenda: Agenda, name: str) -> bool:
    return await count(agenda, name) == 0


async def test_should_not_remove_one_time_job_when_remove_on_complete_is_false_default(
    make_agenda: Any,
) -> None:
    """should NOT remove one-time job when removeOnComplete is false (default)"""
    agenda = await make_agenda(process_every=0.1)
    await run_once(agenda, "kept-job")
    await kept_after_settling(agenda, "kept-job")


async def test_should_not_remove_recurring_job_even_with_remove_on_complete_true(make_agenda: Any) -> None:
    """should NOT remove recurring job even with removeOnComplete true"""
    agenda = await make_agenda(process_every=0.1, remove_on_complete=True)
    await run_once(agenda, "recurring-job", every=True)
    await kept_after_settling(agenda, "recurring-job")


async def test_should_respect_per_job_remove_on_complete_override_true_overrides_global_false(
    make_agenda: Any,
) -> None:
    """should respect per-job removeOnComplete override (true overrides global false)"""
    agenda = await make_agenda(process_every=0.1, remove_on_complete=False)
    await run_once(agenda, "per-job-remove", remove_on_complete=True)
    await wait_until(lambda: _gone(agenda, "per-job-remove"))


async def test_should_respect_per_job_remove_on_complete_override_false_overrides_global_true(
    make_agenda: Any,
) -> None:
    """should respect per-job removeOnComplete override (false overrides global true)"""
    agenda = await make_agenda(process_every=0.1, remove_on_complete=True)
    await run_once(agenda, "per-job-keep", remove_on_complete=False)
    await kept_after_settling(agenda, "per-job-keep")


async def test_should_emit_complete_event_before_removal(make_agenda: Any, jobs_collection: Any) -> None:
    """should emit complete event before removal"""
    agenda = await make_agenda(process_every=0.1, remove_on_complete=True)
    present: list[int] = []

    async def on_complete(job: Job) -> None:
        present.append(await jobs_collection.count_documents({"name": "event-before-remove"}))

    agenda.on("complete:event-before-remove", on_complete)
    await run_once(agenda, "event-before-remove")
    await wait_until(lambda: _gone(agenda, "event-before-remove"))
    assert present == [1]


async def test_should_not_remove_failed_job_even_with_remove_on_complete_true(make_agenda: Any) -> None:
    """should NOT remove failed job even with removeOnComplete true"""
    agenda = await make_agenda(process_every=0.1, remove_on_complete=True)

    def failing(job: Job) -> None:
        raise RuntimeError("Job failed")

    await run_once(agenda, "failing-job", failing)
    await agenda.stop()
    (job,) = (await agenda.query_jobs(name="failing-job")).jobs
    assert job.fail_reason == "Job failed"

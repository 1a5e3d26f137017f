"""agendapy.testing's eager mode and run_until_idle, on both backends (they work with any store)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agendapy import Agenda, Job, JobState, UnknownJob, backoff
from agendapy.testing import EagerLoopError, MemoryJobStore, eager, run_until_idle
from agendapy.testing._eager import MAX_EAGER_DEPTH


async def state_of(agenda: Agenda, job: Job) -> JobState:
    stored = await agenda.get_job(job.id or "")
    assert stored is not None
    return stored.state


# -- eager -----------------------------------------------------------------------------------------


async def test_eager_now_runs_inline_before_returning(agenda: Agenda) -> None:
    sent: list[Any] = []

    @agenda.define("send")
    async def send(job: Job) -> None:
        await asyncio.sleep(0.01)
        sent.append(job.data["to"])

    with eager(agenda) as runs:
        job = await agenda.now("send", {"to": "ada"})
        assert sent == ["ada"]
    assert runs.names == ["send"] and runs.errors == []
    assert job.last_finished_at is not None
    assert await state_of(agenda, job) is JobState.COMPLETED


async def test_eager_runs_only_what_is_due_and_defined(agenda: Agenda) -> None:
    ran: list[str] = []
    agenda.define("known", lambda job: ran.append(job.data))
    with eager(agenda) as runs:
        await agenda.schedule("now", "known", "now")
        later = await agenda.schedule("in 1 hour", "known", "later")
        await agenda.now("unknown")
        off = agenda.create("known", "disabled").disable()
        await off.save()
    assert ran == ["now"] and runs.names == ["known"]
    assert await state_of(agenda, later) is JobState.SCHEDULED


async def test_eager_every_runs_the_first_run_once(agenda: Agenda) -> None:
    ran: list[int] = []
    agenda.define("hourly", lambda job: ran.append(1))
    with eager(agenda):
        job = await agenda.every("1 hour", "hourly")
        skipped = await agenda.every("1 day", "daily-later", skip_immediate=True)
    assert ran == [1]
    assert await state_of(agenda, job) is JobState.REPEATING
    assert skipped.last_run_at is None


async def test_eager_nested_jobs_run_inline_in_order(agenda: Agenda) -> None:
    order: list[str] = []

    @agenda.define("signup")
    async def signup(job: Job) -> None:
        order.append("signup:start")
        await agenda.now("welcome", {"user": job.data["user"]})
        order.append("signup:end")

    agenda.define("welcome", lambda job: order.append(f"welcome:{job.data['user']}"))
    with eager(agenda) as runs:
        await agenda.now("signup", {"user": "ada"})
    assert order == ["signup:start", "welcome:ada", "signup:end"]
    assert runs.names == ["welcome", "signup"]


async def test_eager_failures_are_recorded_or_propagated(agenda: Agenda) -> None:
    @agenda.define("broken", backoff=backoff.constant(delay=60, max_retries=1))
    async def broken(job: Job) -> None:
        raise LookupError("missing thing")

    with eager(agenda) as runs:
        job = await agenda.now("broken")
    assert [(j.name, str(e)) for j, e in runs.errors] == [("broken", "missing thing")]
    assert job.fail_count == 1 and job.fail_reason == "missing thing"
    with eager(agenda, propagate=True), pytest.raises(LookupError, match="missing thing"):
        await agenda.now("broken")


async def test_eager_now_many_and_saves(agenda: Agenda) -> None:
    seen: list[Any] = []
    agenda.define("bulk", lambda job: seen.append(job.data))
    with eager(agenda):
        await agenda.now_many("bulk", [1, 2, 3])
        job = agenda.create("bulk", 4)
        await job.save()
    assert seen == [1, 2, 3, 4]


async def test_eager_mode_ends_with_the_block(agenda: Agenda) -> None:
    seen: list[Any] = []
    agenda.define("x", lambda job: seen.append(job.data))
    with eager(agenda):
        await agenda.now("x", 1)
    await agenda.now("x", 2)
    assert seen == [1]
    async with eager(agenda):
        await agenda.now("x", 3)
    assert seen == [1, 3]


async def test_eager_stops_a_job_that_keeps_scheduling_itself_now(agenda: Agenda) -> None:
    @agenda.define("loop")
    async def loop(job: Job) -> None:
        await agenda.now("loop")

    with eager(agenda) as runs, pytest.raises(EagerLoopError, match="levels deep"):
        await agenda.now("loop")
    assert len(runs.errors) == MAX_EAGER_DEPTH  # every run in the chain failed with it
    assert (await agenda.query_jobs(name="loop", state="failed")).total == MAX_EAGER_DEPTH


async def test_eager_refuses_a_started_worker_and_nesting(agenda: Agenda) -> None:
    with eager(agenda), pytest.raises(RuntimeError, match="already on"):
        eager(agenda).__enter__()
    await agenda.start()
    with pytest.raises(RuntimeError, match="stop it first"):
        eager(agenda).__enter__()


# -- run_until_idle --------------------------------------------------------------------------------


async def test_run_until_idle_runs_chains_of_jobs(agenda: Agenda) -> None:
    order: list[str] = []

    @agenda.define("first")
    async def first(job: Job) -> None:
        order.append("first")
        await agenda.now("second")

    @agenda.define("second")
    async def second(job: Job) -> None:
        order.append("second")

    await agenda.now("first")
    later = await agenda.schedule("in 1 hour", "first")
    result = await run_until_idle(agenda, timeout=10)
    assert order == ["first", "second"]
    assert sorted(j.name for j in result.succeeded) == ["first", "second"] and result.ok
    assert await state_of(agenda, later) is JobState.SCHEDULED
    assert not agenda.is_running


async def test_run_until_idle_exhausts_immediate_retries(agenda: Agenda) -> None:
    attempts: list[int] = []

    @agenda.define("flaky", backoff=backoff.constant(delay=0, max_retries=2))
    async def flaky(job: Job) -> None:
        attempts.append(job.fail_count)
        raise RuntimeError("again")

    await agenda.now("flaky")
    result = await run_until_idle(agenda)
    assert attempts == [0, 1, 2]
    assert len(result.failed) == 1 and not result.ok  # one entry per job: its last run's outcome
    [(job, error)] = result.failed
    assert job.fail_count == 3 and str(error) == "again"


async def test_run_until_idle_times_out_on_endless_work(agenda: Agenda) -> None:
    @agenda.define("forever")
    async def forever(job: Job) -> None:
        await agenda.now("forever")

    await agenda.now("forever")
    with pytest.raises(TimeoutError, match="run_until_idle"):
        await run_until_idle(agenda, timeout=0.5)
    # Nothing is left locked: a later round (or a worker) can take the jobs.
    result = await agenda.query_jobs(name="forever", state="running")
    assert result.total == 0, [
        (j.locked_at, j.last_run_at, j.last_finished_at, j.next_run_at) for j in result.jobs
    ]


async def test_run_until_idle_of_some_names(agenda: Agenda) -> None:
    seen: list[str] = []
    agenda.define("a", lambda job: seen.append("a"))
    agenda.define("b", lambda job: seen.append("b"))
    await agenda.now("a")
    await agenda.now("b")
    await run_until_idle(agenda, names=["b"])
    assert seen == ["b"]
    with pytest.raises(UnknownJob):
        await run_until_idle(agenda, names=["c"])
    await agenda.start()
    with pytest.raises(RuntimeError, match="not started"):
        await run_until_idle(agenda)


async def test_memory_agenda_without_any_server() -> None:
    store = MemoryJobStore()
    agenda = Agenda(store, process_every=0.05)
    done = asyncio.Event()
    agenda.define("ping", lambda job: done.set())
    async with agenda:
        await agenda.now("ping", {"n": 1})
        await asyncio.wait_for(done.wait(), 5)
    assert [d["data"] for d in store.documents("ping")] == [{"n": 1}]
    # The data outlives close(): a new Agenda on the same store sees it.
    again = Agenda(store)
    assert (await again.query_jobs(name="ping")).total == 1
    await again.close()

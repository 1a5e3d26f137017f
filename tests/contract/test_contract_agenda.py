"""End to end on both backends: an Agenda with a real worker over the MongoDB store and the memory store."""

from __future__ import annotations

import asyncio
from datetime import datetime

from contract_helpers import MakeAgenda

from agendapy import Agenda, Job, JobState, backoff

from support import EventLog, wait_until


async def test_now_runs_the_handler_and_completes(agenda: Agenda) -> None:
    seen: list[object] = []

    @agenda.define("greet")
    async def greet(job: Job) -> None:
        seen.append(job.data)

    log = EventLog(agenda, "start", "success", "complete", "fail")
    await agenda.start()
    job = await agenda.now("greet", {"who": "ada"})
    await log.wait("complete")
    assert seen == [{"who": "ada"}]
    assert log.names() == ["start", "success", "complete"]
    [stored] = (await agenda.query_jobs(id=job.id)).jobs
    assert stored.state is JobState.COMPLETED
    assert stored.last_finished_at is not None and stored.locked_at is None


async def test_every_runs_repeatedly_from_one_document(agenda: Agenda) -> None:
    runs: list[datetime] = []

    @agenda.define("tick")
    async def tick(job: Job) -> None:
        assert job.last_run_at is not None
        runs.append(job.last_run_at)

    await agenda.every(0.2, "tick")
    await agenda.every(0.2, "tick")  # a restart re-declares it: still one document
    await agenda.start()
    await wait_until(lambda: len(runs) >= 3, timeout=10)
    await agenda.stop()
    result = await agenda.query_jobs(name="tick")
    assert result.total == 1
    assert result.jobs[0].repeat_interval == 200
    assert runs == sorted(runs)


async def test_retries_follow_the_backoff_until_exhausted(agenda: Agenda) -> None:
    attempts: list[int] = []

    @agenda.define("flaky", backoff=backoff.constant(delay=0.05, max_retries=2))
    async def flaky(job: Job) -> None:
        attempts.append(job.fail_count)
        raise RuntimeError("always")

    log = EventLog(agenda, "retry", "retry exhausted", "fail", "complete")
    await agenda.start()
    job = await agenda.now("flaky")
    await log.wait("retry exhausted", timeout=10)
    await log.wait("complete", 3)  # the last run's state is saved before "complete"
    assert attempts == [0, 1, 2]
    assert [details.attempt for _, details in log.args("retry")] == [1, 2]
    stored = await agenda.get_job(job.id or "")
    assert stored is not None
    assert stored.fail_count == 3 and stored.fail_reason == "always" and stored.state is JobState.FAILED


async def test_once_per_interval_across_two_workers(make_agenda: MakeAgenda) -> None:
    seen: list[tuple[str, datetime | None]] = []
    workers = [await make_agenda(name=f"w{i}") for i in range(2)]
    for worker in workers:

        async def tick(job: Job, worker: Agenda = worker) -> None:
            seen.append((worker.name or "", job.interval_ended_at))
            await asyncio.sleep(0.05)

        worker.define("tick", tick, once_per_interval=True)
    await workers[0].every("* * * * * *", "tick")
    for worker in workers:
        await worker.start()
    await wait_until(lambda: len(seen) >= 3, timeout=15)
    for worker in workers:
        await worker.stop(grace=2)
    ends = [end for _, end in seen]
    assert len(ends) == len(set(ends)), f"an interval ran twice: {seen}"
    records = await workers[0].runs("tick", limit=0)
    succeeded = {r.interval_ended_at for r in records if r.status == "succeeded"}
    assert succeeded == set(ends)


async def test_a_job_saved_elsewhere_wakes_an_idle_worker(make_agenda: MakeAgenda) -> None:
    worker = await make_agenda(process_every="1 minute")
    producer = await make_agenda()
    done = asyncio.Event()
    worker.define("wake", lambda job: done.set())
    await worker.start()  # returns after the first poll: the next is a minute away

    async def woken() -> bool:
        # The wake-up feed opens in the background, late on a loaded machine, and a save made before
        # is not in it: save until one is heard.
        await producer.now("wake")
        return done.is_set()

    await wait_until(woken, timeout=30, interval=0.5)


async def test_run_due_runs_what_is_due_and_reports(agenda: Agenda) -> None:
    @agenda.define("ok")
    async def ok(job: Job) -> None:
        pass

    @agenda.define("bad")
    async def bad(job: Job) -> None:
        raise ValueError("nope")

    await agenda.now("ok")
    await agenda.now("bad")
    await agenda.schedule("in 1 hour", "ok")
    result = await agenda.run_due()
    assert [j.name for j in result.succeeded] == ["ok"]
    assert [(j.name, str(e)) for j, e in result.failed] == [("bad", "nope")]


async def test_remove_on_complete(agenda: Agenda) -> None:
    agenda.define("gone", lambda job: None, remove_on_complete=True)
    log = EventLog(agenda, "complete")
    await agenda.start()
    await agenda.now("gone")
    await log.wait("complete")
    await wait_until(lambda: _count(agenda, "gone"), timeout=30)


async def _count(agenda: Agenda, name: str) -> bool:
    return (await agenda.query_jobs(name=name)).total == 0

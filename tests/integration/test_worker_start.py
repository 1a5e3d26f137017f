"""The ``worker start`` event: application hooks that only a process running jobs may run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from agendapy import Agenda, InvalidInterval, WorkerStartFailed

from support import wait_until

MakeAgenda = Callable[..., Awaitable[Agenda]]


async def test_worker_start_runs_on_start_and_run_due_only(make_agenda: MakeAgenda) -> None:
    agenda = await make_agenda()
    calls: list[str] = []

    @agenda.on("worker start")
    async def schedule() -> None:
        calls.append("worker start")
        await agenda.every("1 hour", "hourly")

    agenda.define("hourly", lambda job: None)
    # Looking: what the CLI's listings and the dashboard do.
    await agenda.connect()
    await agenda.query_jobs()
    await agenda.jobs_overview()
    assert calls == []
    assert (await agenda.query_jobs()).total == 0

    await agenda.start()
    await agenda.start()  # already started: not again
    assert calls == ["worker start"]
    assert [job.name for job in (await agenda.query_jobs()).jobs] == ["hourly"]
    await agenda.stop()

    await agenda.run_due()
    assert calls == ["worker start", "worker start"]


async def test_a_worker_start_listener_that_raises_fails_start_and_claims_nothing(
    make_agenda: MakeAgenda,
) -> None:
    agenda = await make_agenda()
    ran: list[str] = []
    errors: list[BaseException] = []
    agenda.define("due", lambda job: ran.append(job.name))
    await agenda.now("due")
    agenda.on("error", errors.append)

    @agenda.on("worker start")
    async def schedule() -> None:
        await agenda.every("5 bananas", "due")

    with pytest.raises(WorkerStartFailed) as raised:
        await agenda.start()
    message = str(raised.value)
    assert "'worker start'" in message and "InvalidInterval" in message and "5 bananas" in message
    assert isinstance(raised.value.error, InvalidInterval)
    assert raised.value.__cause__ is raised.value.error
    assert not agenda.is_running
    assert await agenda.workers() == []
    # The error surfaces once, to the caller, not also to 'error' listeners that log it again.
    assert errors == []
    (job,) = (await agenda.query_jobs()).jobs
    assert job.locked_at is None and job.last_run_at is None and ran == []

    with pytest.raises(WorkerStartFailed):
        await agenda.run_due()
    (job,) = (await agenda.query_jobs()).jobs
    assert job.locked_at is None and job.last_run_at is None and ran == []

    # Fixed, the same Agenda starts.
    agenda.off("worker start")
    await agenda.start()
    await wait_until(lambda: ran == ["due"])

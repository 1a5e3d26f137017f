"""The ``worker start`` event: application hooks that only a process running jobs may run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agendapy import Agenda

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

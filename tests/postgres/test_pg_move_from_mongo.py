"""docs/migrate/from-node-postgres.md, "From Node on MongoDB to agendapy on PostgreSQL": the pending
one-off jobs read from the old Agenda and saved into the new one, as the page shows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from agendapy import Agenda
from agendapy.errors import InvalidInput

MakeAgenda = Callable[..., Awaitable[Agenda]]


async def test_the_documented_move_copies_pending_jobs(make_agenda: MakeAgenda, pg_url: str) -> None:
    old = await make_agenda()
    report = await old.schedule("in 1 hour", "report", {"to": "ops"})
    await old.now("email", {"n": 1})
    await old.every("5 minutes", "cleanup")  # recurring: re-created by every() at the workers' start
    new = Agenda(pg_url)
    try:
        # The page's loop, as written there.
        for job in (await old.query_jobs()).jobs:
            if job.type == "single" or job.next_run_at is None:
                continue
            job.id = None  # a new row in the new database
            await new.save_job(job)

        moved = {job.name: job for job in (await new.query_jobs()).jobs}
        assert sorted(moved) == ["email", "report"]
        assert moved["report"].data == {"to": "ops"}
        assert moved["report"].next_run_at == report.next_run_at
    finally:
        await new.close()


async def test_saving_a_job_with_another_stores_id_is_refused(make_agenda: MakeAgenda, pg_url: str) -> None:
    # It used to do nothing at all: an update of a row that cannot exist (PostgreSQL ids are UUIDs),
    # so jobs "moved" that way were silently lost.
    old = await make_agenda()
    await old.now("email", {"n": 1})
    job = (await old.query_jobs()).jobs[0]
    new = Agenda(pg_url)
    try:
        with pytest.raises(InvalidInput) as raised:
            await new.save_job(job)
        assert raised.value.field == "id"
        assert "job.id = None" in str(raised.value)
    finally:
        await new.close()


async def test_saving_a_job_whose_row_was_deleted_stays_a_quiet_no_op(pg_url: str) -> None:
    # A UUID that matches no row is Agenda's usual "update what is there" (the job was removed).
    agenda = Agenda(pg_url)
    try:
        job = await agenda.now("email")
        await agenda.cancel(name="email")
        await agenda.save_job(job)
        assert (await agenda.query_jobs()).jobs == []
    finally:
        await agenda.close()

"""PostgreSQL as users meet it: rows written by plain SQL or by Node, the largest inputs the API takes,
names at the column limits. Each test here failed before the fix it covers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import pg_support
import psycopg
import pytest

from agendapy import Job
from agendapy.errors import DatabaseUnavailable, InvalidInput

from support import wait_until

MakeAgenda = pg_support.MakeAgenda
make_pg_agenda = pg_support.make_pg_agenda


async def _sql(pg_url: str, statement: str, params: Any = None) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(statement, params)


async def test_a_worker_name_longer_than_the_column_is_refused_at_start(make_pg_agenda: MakeAgenda) -> None:
    # last_modified_by is Node's VARCHAR(255): a longer name used to make every claim fail, forever.
    agenda = await make_pg_agenda(name="w" * 256)
    agenda.define("x", lambda job: None)
    with pytest.raises(InvalidInput) as raised:
        await agenda.start()
    assert raised.value.field == "name"
    assert "255" in str(raised.value)
    assert not agenda.is_running


async def test_a_producer_name_longer_than_the_column_is_refused_naming_name(
    make_pg_agenda: MakeAgenda,
) -> None:
    agenda = await make_pg_agenda(name="p" * 256)
    with pytest.raises(InvalidInput) as raised:
        await agenda.now("x")
    assert raised.value.field == "name"


async def test_a_worker_name_of_255_characters_claims_and_runs(make_pg_agenda: MakeAgenda) -> None:
    agenda = await make_pg_agenda(name="w" * 255)
    done = asyncio.Event()
    agenda.define("x", lambda job: done.set())
    await agenda.now("x")
    await agenda.start()
    await asyncio.wait_for(done.wait(), 20)


async def test_infinite_dates_written_by_sql_are_read_and_run(
    make_pg_agenda: MakeAgenda, pg_url: str
) -> None:
    # 'infinity' and '-infinity' are valid TIMESTAMPTZ values; psycopg refuses to load them by default,
    # which failed listings (and claims of '-infinity', due since forever).
    agenda = await make_pg_agenda()
    await agenda.connect()
    await _sql(
        pg_url,
        "INSERT INTO agenda_jobs (name, next_run_at, data) VALUES"
        " ('later', 'infinity', '{}'), ('overdue', '-infinity', '{}')",
    )
    listed = {job.name: job for job in (await agenda.query_jobs()).jobs}
    assert listed["later"].next_run_at == datetime.max.replace(tzinfo=UTC)
    assert listed["overdue"].next_run_at == datetime.min.replace(tzinfo=UTC)

    ran: list[str] = []

    async def record(job: Job) -> None:
        ran.append(job.name)

    agenda.define("later", record)
    agenda.define("overdue", record)
    await agenda.start()
    await wait_until(lambda: ran == ["overdue"], timeout=20)


async def test_a_start_write_the_database_is_away_for_is_retried_not_a_crash(
    make_pg_agenda: MakeAgenda, caplog: pytest.LogCaptureFixture
) -> None:
    # PostgreSQL answers "terminating connection" at once when it goes away (MongoDB's driver waits
    # and retries for a while): a run's first write used to fail the run with a traceback and an error
    # event while its job stayed locked until the lock expired.
    agenda = await make_pg_agenda()
    ran = asyncio.Event()
    errors: list[BaseException] = []
    agenda.on("error", errors.append)
    agenda.define("work", lambda job: ran.set())
    await agenda.connect()
    store = agenda.store
    real = store.save_state_batched
    failures = [DatabaseUnavailable("cannot reach PostgreSQL at test: terminating connection")]

    async def away_once(job: Job, **kwargs: Any) -> bool:
        if failures:
            raise failures.pop()
        return await real(job, **kwargs)

    store.save_state_batched = away_once  # type: ignore[method-assign]
    job = await agenda.now("work")
    await agenda.start()
    await asyncio.wait_for(ran.wait(), 20)
    done = await agenda.wait_for(job, timeout=20)
    assert done.last_finished_at is not None and done.fail_reason is None
    assert errors == []
    assert "crashed" not in caplog.text


async def test_the_deploy_step_creates_every_table_the_permissions_grant_names(
    make_pg_agenda: MakeAgenda, pg_url: str
) -> None:
    # docs/postgres.md: connect once as the owner, then GRANT on the five tables. The workers' and
    # activity tables used to wait for the first worker start, so the GRANT failed on them.
    agenda = await make_pg_agenda()
    await agenda.connect()
    await agenda.close()
    role = f"app_{uuid.uuid4().hex[:8]}"  # roles are the whole server's
    await _sql(pg_url, f"CREATE ROLE {role}")
    try:
        await _sql(
            pg_url,
            "GRANT SELECT, INSERT, UPDATE, DELETE ON agenda_jobs, agendapy_runs, agenda_logs,"
            f" agendapy_workers, agendapy_activity TO {role}",
        )
    finally:
        await _sql(pg_url, f"DROP OWNED BY {role}")
        await _sql(pg_url, f"DROP ROLE {role}")


async def test_a_connect_with_ensure_index_off_creates_nothing(
    make_pg_agenda: MakeAgenda, pg_url: str
) -> None:
    agenda = await make_pg_agenda(ensure_index=False)
    await agenda.connect()
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert await cur.fetchone() == (0,)


async def test_rows_node_or_sql_wrote_run_or_fail_with_a_reason(
    make_pg_agenda: MakeAgenda, pg_url: str
) -> None:
    # Only Node's columns, as its backend or a script writes them; the documented outcome of each.
    agenda = await make_pg_agenda()
    await agenda.connect()
    await _sql(
        pg_url,
        "INSERT INTO agenda_jobs (name, next_run_at, data, repeat_interval, type) VALUES"
        " ('nested', now(), '{\"a\": {\"b\": [1, {\"c\": 2}]}}', '5 minutes', 'single'),"
        " (%s, now(), '[1, 2]', NULL, 'normal'),"
        " ('bare', now(), '\"text\"', NULL, 'normal')",
        ["n" * 255],
    )
    await _sql(pg_url, "INSERT INTO agenda_jobs (name, next_run_at, progress) VALUES ('nan', now(), 'NaN')")
    await _sql(
        pg_url, "INSERT INTO agenda_jobs (name, next_run_at, disabled) VALUES ('null-disabled', now(), NULL)"
    )
    seen: dict[str, Any] = {}

    async def record(job: Job) -> None:
        seen[job.name] = job.data

    for name in ("nested", "n" * 255, "bare", "nan", "null-disabled"):
        agenda.define(name, record)
    await agenda.start()
    await wait_until(lambda: len(seen) == 3, timeout=20)
    assert seen == {"nested": {"a": {"b": [1, {"c": 2}]}}, "n" * 255: [1, 2], "bare": "text"}
    nan = (await agenda.query_jobs(name="nan")).jobs[0]

    async def nan_failed() -> bool:
        job = await agenda.get_job(str(nan.id))
        return job is not None and job.fail_reason is not None

    await wait_until(nan_failed, timeout=20)
    failed = await agenda.get_job(str(nan.id))
    assert failed is not None and "progress" in str(failed.fail_reason)
    # Documented: a NULL disabled is not claimed (as by Node's backend).
    await agenda.drain(timeout=5)
    assert "null-disabled" not in seen


async def test_an_interrupted_job_the_database_cannot_release_is_one_warning_line(
    make_pg_agenda: MakeAgenda, caplog: pytest.LogCaptureFixture
) -> None:
    # A SIGTERM while PostgreSQL is away: the unlock fails, as it must; that is a known state (the lock
    # expires), not a crash, so no traceback per job.
    agenda = await make_pg_agenda()
    started = asyncio.Event()

    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    agenda.define("slow", slow)
    await agenda.now("slow")
    await agenda.start()
    await asyncio.wait_for(started.wait(), 20)

    async def away(*args: Any, **kwargs: Any) -> None:
        raise DatabaseUnavailable("cannot reach PostgreSQL at test: connection refused")

    agenda.store.release = away  # type: ignore[method-assign]
    await agenda.stop(grace=0.1)
    lines = [r for r in caplog.records if "could not release interrupted job" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelname == "WARNING" and lines[0].exc_info is None
    assert "lock expires" in lines[0].getMessage()


async def test_an_unnamed_worker_signs_its_run_steps_with_a_name_of_its_own(
    make_pg_agenda: MakeAgenda, pg_url: str
) -> None:
    # Node re-emits only steps whose source differs from its own name ('' when unnamed): an unnamed
    # agendapy worker signs with host-pid, so neither side drops the other's steps.
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute('LISTEN "agenda:jobs:state"')
        agenda = await make_pg_agenda()
        agenda.define("work", lambda job: None)
        await agenda.now("work")
        await agenda.start()
        sources: set[Any] = set()

        async def until_complete() -> None:
            async for note in conn.notifies():
                payload = json.loads(note.payload)
                sources.add(payload.get("source"))
                if payload["type"] == "complete":
                    return

        await asyncio.wait_for(until_complete(), 20)
    assert sources == {f"{socket.gethostname()}-{os.getpid()}"}
    assert agenda.name == f"{socket.gethostname()}-{os.getpid()}"

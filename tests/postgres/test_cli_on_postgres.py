"""The ``agendapy`` command on PostgreSQL: a worker process, listings and scheduling by --database-url."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agendapy import Agenda

from support import wait_until

JOB_MODULE = textwrap.dedent(
    """
    import logging
    from agendapy import Agenda

    agenda = Agenda(process_every=0.05, heartbeat_every=0.1)
    log = logging.getLogger("jobmod")

    @agenda.define("send email")
    async def send_email(job):
        log.info("sent to %s", job.data["to"])
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "jobmod.py").write_text(JOB_MODULE)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENDAPY_")}
    env.update(extra)
    return env


def cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agendapy", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input="",
        env=_env(**env),
        timeout=60,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_a_worker_process_runs_a_job_and_exits_0_on_sigterm(pg_url: str, app_dir: Path) -> None:
    agenda = Agenda(pg_url)
    try:
        job = await agenda.now("send email", {"to": "ops@example.com"})
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "agendapy", "worker", "jobmod:agenda", "--database-url", pg_url],
            cwd=app_dir,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            async def finished() -> bool:
                current = await agenda.get_job(str(job.id))
                return current is not None and current.last_finished_at is not None

            await wait_until(finished, timeout=30, interval=0.1)
            listed = [w.state for w in await agenda.workers()]
            assert listed == ["live"]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0, stderr
        assert "sent to ops@example.com" in stderr
        done = await agenda.get_job(str(job.id))
        assert done is not None and done.fail_count == 0 and done.locked_at is None
        assert [w.state for w in await agenda.workers(include_stopped=True)] == ["stopped"]
    finally:
        await agenda.close()


async def test_schedule_list_and_stats_through_the_cli(pg_url: str) -> None:
    created = ok_json(
        await asyncio.to_thread(cli, "schedule", "report", "in 1 hour", "--json", "--database-url", pg_url)
    )
    ok_json(
        await asyncio.to_thread(
            cli, "schedule", "cleanup", "--every", "5 minutes", "--json", AGENDAPY_DATABASE_URL=pg_url
        )
    )
    listing = ok_json(await asyncio.to_thread(cli, "jobs", "ls", "--json", "--database-url", pg_url))
    assert sorted(j["name"] for j in listing["jobs"]) == ["cleanup", "report"]
    assert created["id"] in {j["id"] for j in listing["jobs"]}
    stats = ok_json(await asyncio.to_thread(cli, "stats", "--json", "--mongo-url", pg_url))
    assert sorted(row["name"] for row in stats["overview"]) == ["cleanup", "report"]
    assert ok_json(await asyncio.to_thread(cli, "workers", "--json", "--database-url", pg_url)) == []


async def test_a_bare_cli_agenda_on_another_table(pg_url: str) -> None:
    ok_json(
        await asyncio.to_thread(
            cli, "schedule", "ping", "now", "--json", "--database-url", pg_url, "--table", "app_jobs"
        )
    )
    listing = ok_json(
        await asyncio.to_thread(cli, "jobs", "ls", "--json", "--database-url", pg_url, "--table", "app_jobs")
    )
    assert [j["name"] for j in listing["jobs"]] == ["ping"]
    refused = await asyncio.to_thread(cli, "jobs", "ls", "--database-url", pg_url, "--collection", "x")
    assert refused.returncode == 2 and "collection" in refused.stderr


def test_listing_a_database_without_the_tables_says_what_creates_them(pg_url: str) -> None:
    result = cli("jobs", "ls", "--database-url", pg_url)
    assert result.returncode == 1
    assert "agenda_jobs" in result.stderr and "creates the tables" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_postgres_server_fails_with_status_1() -> None:
    result = cli("jobs", "ls", "--database-url", "postgresql://u:secret@127.0.0.1:1/x?connect_timeout=2")
    assert result.returncode == 1, result.stderr
    assert "cannot reach PostgreSQL" in result.stderr and "secret" not in result.stderr
    assert "Traceback" not in result.stderr


async def test_run_due_runs_what_is_due_and_exits_0(pg_url: str, app_dir: Path) -> None:
    agenda = Agenda(pg_url)
    try:
        job = await agenda.now("send email", {"to": "cron@example.com"})
        later = await agenda.schedule("in 1 hour", "send email", {"to": "later@example.com"})
        result = await asyncio.to_thread(
            cli, "run-due", "jobmod:agenda", "--json", "--database-url", pg_url, cwd=app_dir
        )
        report = ok_json(result)
        assert [(r["name"], r["status"]) for r in report["runs"]] == [("send email", "succeeded")]
        done = await agenda.get_job(str(job.id))
        assert done is not None and done.last_finished_at is not None
        untouched = await agenda.get_job(str(later.id))
        assert untouched is not None and untouched.last_run_at is None
    finally:
        await agenda.close()

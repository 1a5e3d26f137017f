"""A first deploy on PostgreSQL: three worker processes start at the same moment on an empty database,
each declaring the same recurring jobs (a parent that requires a child among them)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from support import wait_until

pytestmark = pytest.mark.slow

MODULE = textwrap.dedent(
    """
    from agendapy import Agenda

    agenda = Agenda(process_every=0.05)

    @agenda.define("child", once_per_interval=True)
    async def child(job):
        pass

    @agenda.define("parent", once_per_interval=True)
    async def parent(job):
        pass

    @agenda.define("report", once_per_interval=True)
    async def report(job):
        pass

    @agenda.on("ready")
    async def declare():
        await agenda.every("*/2 * * * * *", "parent", requires=["child"])
        await agenda.every("*/1 * * * * *", "child")
        await agenda.every("*/1 * * * * *", "report")
    """
)


def _spawn(command: list[str], cwd: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*command, "--name", name, "--log-level", "WARNING"],
        cwd=cwd,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _run_until(workers: list[subprocess.Popen[bytes]], done: Callable[[], Awaitable[bool]]) -> str:
    """Wait for ``done``, then SIGTERM the workers; their stderr (each must exit with status 0)."""
    try:
        await wait_until(done, timeout=90, interval=0.3)
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        stderr = ""
        for proc in workers:
            _, err = await asyncio.to_thread(proc.communicate, timeout=20)
            stderr += err.decode(errors="replace")
    assert all(proc.returncode == 0 for proc in workers), stderr[-3000:]
    return stderr


async def _rows(url: str, query: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        return await (await conn.execute(query)).fetchall()


async def test_three_workers_starting_at_once_on_an_empty_database(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "deploy.py").write_text(MODULE)
    command = [sys.executable, "-m", "agendapy", "worker", "deploy:agenda", "--database-url", pg_url]
    workers = [_spawn(command, tmp_path, f"w{i}") for i in range(3)]

    async def parent_ran(n: int) -> bool:
        try:
            done = await _rows(
                pg_url, "SELECT 1 FROM agendapy_runs WHERE name = 'parent' AND status = 'succeeded'"
            )
        except psycopg.errors.UndefinedTable:
            return False
        return len(done) >= n

    stderr = await _run_until(workers, lambda: parent_ran(3))
    # A restart of the whole fleet (a second deploy): the same rows, and the schedule goes on.
    workers = [_spawn(command, tmp_path, f"w{i}b") for i in range(3)]
    stderr += await _run_until(workers, lambda: parent_ran(5))
    # Schema made once without errors: nothing at WARNING or above about it, or anything else.
    assert "Traceback" not in stderr and "error" not in stderr.lower(), stderr[-3000:]

    jobs = await _rows(pg_url, "SELECT name, type FROM agenda_jobs ORDER BY name")
    assert [(j["name"], j["type"]) for j in jobs] == [
        ("child", "single"),
        ("parent", "single"),
        ("report", "single"),
    ]
    runs = await _rows(pg_url, "SELECT name, interval_ended_at, status FROM agendapy_runs")
    per_interval = Counter((r["name"], r["interval_ended_at"]) for r in runs if r["status"] == "succeeded")
    assert per_interval, runs
    assert all(count == 1 for count in per_interval.values()), per_interval
    assert sum(1 for name, _ in per_interval if name == "report") >= 5

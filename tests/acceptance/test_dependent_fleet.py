"""The usual first deploy of dependent jobs, by real worker processes booting at once.

Each worker declares both jobs when it starts (one worker the parent first, the other the child
first), as a service's start-up code does; the parent's first interval began before the child existed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from support import wait_until

pytestmark = pytest.mark.slow

PIPELINE_MODULE = textwrap.dedent(
    """
    import os
    from agendapy import Agenda

    agenda = Agenda(process_every=0.05)

    @agenda.define("child", once_per_interval=True)
    async def child(job):
        pass

    @agenda.define("parent", once_per_interval=True)
    async def parent(job):
        pass

    @agenda.on("ready")
    async def declare():
        if os.environ["ORDER"] == "parent first":
            await agenda.every("*/2 * * * * *", "parent", requires=["child"])
            await agenda.every("*/1 * * * * *", "child")
        else:
            await agenda.every("*/1 * * * * *", "child")
            await agenda.every("*/2 * * * * *", "parent", requires=["child"])
    """
)


async def test_two_workers_deploying_dependent_jobs_together_run_them(
    tmp_path: Path, db_url: str, client: Any, db_name: str
) -> None:
    (tmp_path / "pipeline.py").write_text(PIPELINE_MODULE)
    workers = [
        _spawn(tmp_path, db_url, f"w{i}", order) for i, order in enumerate(("parent first", "child first"))
    ]
    runs = client[db_name]["agendaRuns"]
    try:
        await wait_until(lambda: _parent_runs_at_least(runs, 3), timeout=60, interval=0.2)
    finally:
        errors = await asyncio.to_thread(_stop_all, workers)
    records = [doc async for doc in runs.find({})]

    jobs = await client[db_name]["agendaJobs"].count_documents({})
    assert jobs == 2, "both workers' every() calls must share one document per name"
    parent = [r for r in records if r["name"] == "parent"]
    child = [r for r in records if r["name"] == "child" and r["status"] == "succeeded"]
    ends = Counter(r["intervalEndedAt"] for r in parent)
    assert all(count == 1 for count in ends.values()), f"a parent interval ran twice: {ends}"
    first_child = min(r["intervalStartedAt"] for r in child)
    covered = {r["intervalStartedAt"] for r in child}
    for run in parent:
        # Each second of the parent's interval since the child's first interval ran before the parent.
        halves = (run["intervalStartedAt"], run["intervalStartedAt"] + timedelta(seconds=1))
        needed = {start for start in halves if start >= first_child}
        if run["status"] != "succeeded":
            # Given up, as it must be, only for a second the child never ran: a child run more than
            # a second late (a loaded machine) goes on with the latest second.
            assert run["status"] == "skipped" and needed - covered, (run, errors)
            continue
        done = {r["intervalStartedAt"] for r in child if r["finishedAt"] <= run["startedAt"]}
        assert needed <= done, f"parent ran {run['intervalStartedAt']} before the child covered it"


async def _parent_runs_at_least(runs: Any, n: int) -> bool:
    return bool(await runs.count_documents({"name": "parent", "status": "succeeded"}) >= n)


def _spawn(cwd: Path, db_url: str, name: str, order: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "agendapy", "worker", "pipeline:agenda", "--mongo-url", db_url]
    command += ["--name", name, "--log-level", "WARNING"]
    env = {**os.environ, "ORDER": order}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop_all(workers: list[subprocess.Popen[bytes]]) -> str:
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    err = b""
    for proc in workers:
        _, stderr = proc.communicate(timeout=15)
        err += stderr
    return err.decode(errors="replace")[-3000:]

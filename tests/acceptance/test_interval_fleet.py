"""Four worker processes share a once-per-interval job: every interval runs exactly once.

``AGENDAPY_FLEET_INTERVALS`` sets how many one-second intervals to wait for (default 12; the issue's
acceptance run uses 60).
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

from agendapy import Agenda

from support import wait_until

pytestmark = pytest.mark.slow

FLEET_MODULE = textwrap.dedent(
    """
    import os
    from pymongo import AsyncMongoClient
    from agendapy import Agenda

    agenda = Agenda(process_every=0.05)
    _calls = None

    @agenda.define("tick", once_per_interval=True)
    async def tick(job):
        global _calls
        if _calls is None:
            _calls = AsyncMongoClient(os.environ["RESULTS_URL"])[os.environ["RESULTS_DB"]]["calls"]
        await _calls.insert_one(
            {"end": job.interval_ended_at, "start": job.interval_started_at, "pid": os.getpid()}
        )
    """
)


async def test_four_workers_run_each_interval_exactly_once(
    tmp_path: Path, db_url: str, mongo_url: str, client: Any, db_name: str
) -> None:
    wanted = int(os.environ.get("AGENDAPY_FLEET_INTERVALS", "12"))
    (tmp_path / "fleet.py").write_text(FLEET_MODULE)
    producer = Agenda(db_url)
    try:
        await producer.every("* * * * * *", "tick")
    finally:
        await producer.close()
    env = {**os.environ, "RESULTS_URL": mongo_url, "RESULTS_DB": db_name}
    workers = [_spawn(tmp_path, db_url, env, f"fleet-{i}") for i in range(4)]
    calls = client[db_name]["calls"]
    try:
        await wait_until(lambda: _at_least(calls, wanted), timeout=wanted * 3 + 30, interval=0.2)
    finally:
        await asyncio.to_thread(_stop_all, workers)
    handled = [doc async for doc in calls.find({})]
    runs = [doc async for doc in client[db_name]["agendaRuns"].find({"name": "tick"})]

    ends = Counter(doc["end"] for doc in handled)
    assert all(count == 1 for count in ends.values()), f"intervals run twice: {ends.most_common(3)}"
    assert all(doc["end"] - doc["start"] == timedelta(seconds=1) for doc in handled)
    succeeded = [r for r in runs if r["status"] == "succeeded"]
    assert len(succeeded) == len(handled)
    assert {r["intervalEndedAt"] for r in succeeded} == set(ends)
    assert len(handled) >= wanted
    print(
        f"\n{len(handled)} intervals, {len(runs)} run records, workers: {Counter(d['pid'] for d in handled)}"
    )


def _spawn(cwd: Path, db_url: str, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "agendapy", "worker", "fleet:agenda", "--mongo-url", db_url]
    command += ["--name", name, "--log-level", "WARNING"]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop_all(workers: list[subprocess.Popen[bytes]]) -> None:
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        proc.wait(15)


async def _at_least(collection: Any, n: int) -> bool:
    return bool(await collection.count_documents({}) >= n)

"""End to end through the CLI: worker processes on one collection, signals, exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agendapy import Agenda

from support import wait_until

pytestmark = pytest.mark.slow

WORKER_MODULE = textwrap.dedent(
    """
    import asyncio, os
    from pymongo import AsyncMongoClient
    from agendapy import Agenda

    agenda = Agenda(process_every=0.05, max_concurrency=10, default_concurrency=10)
    _results = None

    @agenda.define("record")
    async def record(job):
        global _results
        if _results is None:
            _results = AsyncMongoClient(os.environ["RESULTS_URL"])["results"]["runs"]
        await _results.insert_one({"jobId": job.id, "pid": os.getpid(), "n": job.data["n"]})
        await asyncio.sleep(job.data.get("sleep", 0))
    """
)


def _spawn_worker(module_dir: Path, db_url: str, results_url: str, name: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RESULTS_URL": results_url, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agendapy",
            "worker",
            "jobmod:agenda",
            "--mongo-url",
            db_url,
            "--name",
            name,
            "--grace",
            "3",
            "--log-level",
            "WARNING",
        ],
        cwd=module_dir,
        env=env,
        # Nobody reads them: a pipe would block a worker that logs more than its buffer holds.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"worker did not exit within {timeout} s of SIGTERM")
    return proc.returncode, time.monotonic() - started


async def test_two_worker_processes_run_every_job_exactly_once(
    tmp_path: Path, db_url: str, mongo_url: str, client: Any, db_name: str
) -> None:
    (tmp_path / "jobmod.py").write_text(WORKER_MODULE)
    results_url = mongo_url
    producer = Agenda(db_url)
    try:
        for n in range(150):
            await producer.now("record", {"n": n})
    finally:
        await producer.close()
    await client["results"]["runs"].delete_many({})

    workers = [_spawn_worker(tmp_path, db_url, results_url, f"w{i}") for i in range(2)]
    runs = client["results"]["runs"]
    try:
        await wait_until(lambda: _count_at_least(runs, 150), timeout=120, interval=0.2)
    finally:
        # Counted once both workers have exited: a duplicate run, had one started, has landed by then
        # (no fixed wait that a loaded machine could outlast).
        outcomes = [_stop(proc, timeout=30) for proc in workers]
    try:
        docs = [doc async for doc in runs.find({})]
    finally:
        await runs.delete_many({})

    per_job = Counter(doc["jobId"] for doc in docs)
    duplicates = {job_id: count for job_id, count in per_job.items() if count > 1}
    assert not duplicates, f"jobs run more than once: {duplicates}"
    assert sorted(doc["n"] for doc in docs) == list(range(150))
    for code, _elapsed in outcomes:
        assert code == 0
    remaining = await client[db_name]["agendaJobs"].count_documents({"lockedAt": {"$ne": None}})
    assert remaining == 0, "a worker left jobs locked after a graceful stop"


async def _count_at_least(collection: Any, n: int) -> bool:
    return bool(await collection.count_documents({}) >= n)


async def test_sigterm_stops_a_worker_within_the_grace_period_and_releases_its_job(
    tmp_path: Path, db_url: str, mongo_url: str, client: Any, db_name: str
) -> None:
    (tmp_path / "jobmod.py").write_text(WORKER_MODULE)
    producer = Agenda(db_url)
    try:
        job = await producer.now("record", {"n": 1, "sleep": 60})
    finally:
        await producer.close()
    proc = _spawn_worker(tmp_path, db_url, mongo_url, "long")
    try:
        runs = client["results"]["runs"]
        await wait_until(lambda: _has_run(runs, job.id), timeout=60, interval=0.1)
    finally:
        code, elapsed = _stop(proc, timeout=30)
        await client["results"]["runs"].delete_many({"jobId": job.id})
    assert code == 0
    # The handler sleeps 60 s: stopping well before shows the grace cut it short. The margin is for a
    # loaded machine (releasing the job and shutting down take their time), not for the grace.
    assert elapsed < 3 + 20, f"took {elapsed:.1f} s to stop with --grace 3"
    doc = await client[db_name]["agendaJobs"].find_one({"_id": __import__("bson").ObjectId(job.id)})
    assert doc["lockedAt"] is None, "the interrupted job is still locked"
    assert doc["nextRunAt"] is not None, "the interrupted job would never run again"


async def _has_run(collection: Any, job_id: str | None) -> bool:
    return await collection.find_one({"jobId": job_id}) is not None


def test_help_lists_the_worker_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agendapy", "--help"], capture_output=True, text=True, check=True
    )
    assert "worker" in out.stdout


def test_bad_module_path_is_a_clear_usage_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agendapy", "worker", "no_such_module_here:agenda"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "no_such_module_here" in out.stderr


def test_target_without_attribute_is_a_clear_usage_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agendapy", "worker", "just_a_module"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "MODULE:ATTRIBUTE" in out.stderr


def test_bad_url_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "jobmod.py").write_text("from agendapy import Agenda\nagenda = Agenda()\n")
    out = subprocess.run(
        [sys.executable, "-m", "agendapy", "worker", "jobmod:agenda", "--mongo-url", "localhost:27017"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode != 0
    assert "mongodb://" in out.stderr


RUN_DUE_MODULE = textwrap.dedent(
    """
    from agendapy import Agenda

    agenda = Agenda()

    @agenda.define("fine")
    def fine(job):
        print("fine ran")

    @agenda.define("broken")
    def broken(job):
        raise RuntimeError("disk full")
    """
)


def _run_due(module_dir: Path, db_url: str, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agendapy",
            "run-due",
            "jobmod:agenda",
            *names,
            "--mongo-url",
            db_url,
            "--json",
        ],
        cwd=module_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_run_due_exit_codes(tmp_path: Path, db_url: str) -> None:
    import json

    (tmp_path / "jobmod.py").write_text(RUN_DUE_MODULE)
    producer = Agenda(db_url)
    try:
        await producer.now("fine")
        await producer.now("fine")
        await producer.now("broken")
    finally:
        await producer.close()

    only_fine = await asyncio.to_thread(_run_due, tmp_path, db_url, "fine")
    assert only_fine.returncode == 0, only_fine.stderr
    report = json.loads(only_fine.stdout.strip().splitlines()[-1])
    assert report["ok"] is True
    assert [r["status"] for r in report["runs"]] == ["succeeded", "succeeded"]

    everything = await asyncio.to_thread(_run_due, tmp_path, db_url)
    assert everything.returncode == 1
    report = json.loads(everything.stdout.strip().splitlines()[-1])
    assert [(r["name"], r["status"], r["detail"]) for r in report["runs"]] == [
        ("broken", "failed", "disk full")
    ]

    nothing_due = await asyncio.to_thread(_run_due, tmp_path, db_url)
    assert nothing_due.returncode == 0

    unknown = await asyncio.to_thread(_run_due, tmp_path, db_url, "no such job")
    assert unknown.returncode == 2
    assert "no such job" in unknown.stderr

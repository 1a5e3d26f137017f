"""Outages end to end through the CLI: a database restart, kill -9 of a worker, SIGTERM of a long job.

Workers are real ``python -m agendapy worker`` processes. Every handler run writes a record (job id,
worker pid, start, finish, the checkpoint it resumed from) to a ``runs`` collection on the session's
server, so the records survive the restart of the jobs' own server in the first test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bson import CodecOptions, ObjectId
from pymongo import AsyncMongoClient

from agendapy import Agenda

from support import wait_until

pytestmark = pytest.mark.slow

WORKER_MODULE = textwrap.dedent(
    """
    import asyncio, os, time
    from bson import ObjectId
    from pymongo import AsyncMongoClient
    from agendapy import Agenda

    agenda = Agenda(
        process_every=float(os.environ.get("PROCESS_EVERY", "0.1")),
        default_lock_lifetime=float(os.environ["LOCK_LIFETIME"]),
        max_concurrency=5,
        default_concurrency=int(os.environ.get("CONCURRENCY", "5")),
        lock_limit=int(os.environ.get("LOCK_LIMIT", "0")),
    )
    _runs = None

    def runs():
        global _runs
        if _runs is None:
            _runs = AsyncMongoClient(os.environ["RESULTS_URL"])[os.environ["RESULTS_DB"]]["runs"]
        return _runs

    @agenda.define("work")
    async def work(job):
        rec = ObjectId()
        data = job.data or {}
        resumed = job.checkpoint_state
        await runs().insert_one(
            {"_id": rec, "jobId": job.id, "pid": os.getpid(), "start": time.time(), "resumedFrom": resumed}
        )
        chunks = data.get("chunks")
        if chunks:
            for i in range((resumed or {}).get("chunk", 0), chunks):
                if resumed is None and i == data.get("stall_at"):
                    # A first run holds here until its worker is killed or stopped: the test cannot
                    # be too slow to catch it running, however long the next worker takes to start.
                    await asyncio.Event().wait()
                await asyncio.sleep(data["chunk_s"])
                await job.checkpoint({"chunk": i + 1})
        else:
            await asyncio.sleep(data.get("sleep", 0))
        await runs().update_one({"_id": rec}, {"$set": {"finish": time.time()}})
    """
)


class WorkerProcess:
    """One ``agendapy worker`` subprocess whose log goes to a file."""

    def __init__(
        self,
        module_dir: Path,
        jobs_url: str,
        results_url: str,
        results_db: str,
        name: str,
        *,
        lock_lifetime: float,
        grace: float,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = module_dir / f"{name}.log"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "RESULTS_URL": results_url,
            "RESULTS_DB": results_db,
            "LOCK_LIFETIME": str(lock_lifetime),
            **(env or {}),
        }
        with self.log_path.open("wb") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agendapy", "worker", "outagejobs:agenda", "--mongo-url", jobs_url,
                 "--name", name, "--grace", str(grace), "--log-level", "INFO", "--json-logs"],
                cwd=module_dir, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def started(self, timeout: float = 60.0) -> None:
        await wait_until(
            lambda: f"worker {self.name} started" in self.log() or self.proc.poll() is not None,
            timeout=timeout,
            interval=0.05,
        )
        assert self.proc.poll() is None, f"worker {self.name} exited early:\n{self.log()}"

    async def terminate(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took to exit."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.proc.wait, timeout)
        return code, time.monotonic() - began

    def kill(self) -> float:
        """SIGKILL; returns the wall-clock time at which the process was certainly dead."""
        self.proc.kill()
        self.proc.wait()
        return time.time()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def module_dir(tmp_path: Path) -> Path:
    (tmp_path / "outagejobs.py").write_text(WORKER_MODULE)
    return tmp_path


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    made: list[WorkerProcess] = []
    yield made
    for worker in made:
        worker.cleanup()


@pytest.fixture
def runs(client: AsyncMongoClient[Any], db_name: str) -> Any:
    """The run records, in this test's database on the session server."""
    return client[db_name]["runs"]


async def _records(runs: Any, job_id: str | None = None) -> list[dict[str, Any]]:
    query = {} if job_id is None else {"jobId": job_id}
    return [doc async for doc in runs.find(query).sort("start", 1)]


async def _schedule(url: str, count: int, data: dict[str, Any]) -> list[str]:
    producer = Agenda(url, name="producer")
    try:
        return [str((await producer.now("work", data)).id) for _ in range(count)]
    finally:
        await producer.close()


def _codec() -> CodecOptions[dict[str, Any]]:
    return CodecOptions(tz_aware=True, tzinfo=UTC)


# -- (a) a database restart ------------------------------------------------------------------------


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[Any]:
    """A SecantusDB of this test's own, to restart on the same port (the session server is shared)."""
    pytest.importorskip("secantus")
    from agendapy.embedded import EmbeddedServer

    server = EmbeddedServer(tmp_path / "db")
    await server.astart()
    try:
        yield server
    finally:
        await server.astop()


async def test_a_worker_survives_a_database_restart_and_runs_every_job_exactly_once(
    module_dir: Path,
    own_server: Any,
    mongo_url: str,
    db_name: str,
    runs: Any,
    workers: list[WorkerProcess],
) -> None:
    jobs_url = own_server.url.replace("/?", "/outage?")
    before = await _schedule(jobs_url, 12, {"sleep": 0.3})
    before += await _schedule(jobs_url, 2, {"chunks": 8, "chunk_s": 0.5})  # 4 s, checkpointing across it
    worker = WorkerProcess(module_dir, jobs_url, mongo_url, db_name, "survivor", lock_lifetime=6, grace=2)
    workers.append(worker)
    await worker.started()
    await wait_until(lambda: _count(runs, 5), timeout=60, interval=0.05)

    # Restart the jobs' server while runs are in flight; schedule more while it is down.
    restart = asyncio.create_task(asyncio.to_thread(own_server.restart))
    await asyncio.sleep(0.05)
    during = asyncio.create_task(_schedule(jobs_url, 6, {"sleep": 0.1}))
    await restart
    ids = before + await asyncio.wait_for(during, 60)

    jobs = AsyncMongoClient(own_server.url, tz_aware=True)["outage"].get_collection(
        "agendaJobs", codec_options=_codec()
    )
    try:
        await wait_until(lambda: _all_finished(jobs, ids), timeout=60, interval=0.1)
        assert worker.proc.poll() is None, f"the worker died with the database:\n{worker.log()}"
        # Records are read once the worker has exited: a duplicate run, had one started, has landed
        # by then (no fixed wait that a loaded machine could outlast).
        code, _ = await worker.terminate(timeout=30)
        assert code == 0, worker.log()
        docs = {str(d["_id"]): d async for d in jobs.find({})}
    finally:
        await jobs.database.client.close()

    failed = {i: docs[i].get("failReason") for i in ids if docs[i].get("failedAt") is not None}
    assert not failed, f"jobs failed because of the outage: {failed}"
    records = await _records(runs)
    per_job = Counter(r["jobId"] for r in records)
    assert sorted(per_job) == sorted(ids), "every job ran"
    assert all(r.get("finish") for r in records), "every run finished"
    duplicates = {i: n for i, n in per_job.items() if n > 1}
    assert not duplicates, f"jobs run more than once across the restart: {duplicates}"


async def test_a_worker_logs_a_clear_line_when_the_database_restarts(
    module_dir: Path, own_server: Any, mongo_url: str, db_name: str, workers: list[WorkerProcess]
) -> None:
    jobs_url = own_server.url.replace("/?", "/outage?")
    worker = WorkerProcess(module_dir, jobs_url, mongo_url, db_name, "watcher", lock_lifetime=6, grace=2)
    workers.append(worker)
    await worker.started()
    await asyncio.to_thread(own_server.restart)

    def about_db() -> list[str]:
        lines = [line.lower() for line in worker.log().splitlines()]
        return [
            line
            for line in lines
            if ('"warning"' in line or '"error"' in line) and ("database" in line or "mongodb" in line)
        ]

    # Waited for, not read after a fixed second: a loaded worker may notice the restart later.
    await wait_until(lambda: about_db() or worker.proc.poll() is not None, timeout=30)
    assert worker.proc.poll() is None, worker.log()
    assert about_db(), f"the worker logged nothing about the database restart:\n{worker.log()}"


async def _count(runs: Any, n: int) -> bool:
    return bool(await runs.count_documents({}) >= n)


async def _all_finished(jobs: Any, ids: list[str]) -> bool:
    query = {"_id": {"$in": [ObjectId(i) for i in ids]}, "lastFinishedAt": {"$ne": None}, "lockedAt": None}
    try:
        return bool(await jobs.count_documents(query) == len(ids))
    except Exception:
        return False


# -- (b) kill -9 mid-run ---------------------------------------------------------------------------


async def test_a_job_of_a_killed_worker_is_run_by_another_after_the_lock_lifetime(
    module_dir: Path,
    db_url: str,
    mongo_url: str,
    db_name: str,
    runs: Any,
    jobs_collection: Any,
    workers: list[WorkerProcess],
) -> None:
    # Two seconds: with one, a loaded machine once delayed the second worker's own heartbeat past the
    # lifetime, so the worker re-claimed the job it was running and ran it twice. This test is about
    # a dead worker's job; a live worker's late heartbeat is a different case.
    lifetime = 2.0
    (job_id,) = await _schedule(db_url, 1, {"chunks": 6, "chunk_s": 0.5, "stall_at": 2})
    first = WorkerProcess(module_dir, db_url, mongo_url, db_name, "first", lock_lifetime=lifetime, grace=2)
    workers.append(first)
    await wait_until(lambda: _has_checkpoint(jobs_collection, job_id, 2), timeout=60, interval=0.05)
    second = WorkerProcess(module_dir, db_url, mongo_url, db_name, "second", lock_lifetime=lifetime, grace=2)
    workers.append(second)
    await second.started()

    dead_at = first.kill()
    await wait_until(lambda: _finished(jobs_collection, job_id), timeout=60, interval=0.05)

    records = await _records(runs, job_id)
    assert [r["pid"] for r in records] == [first.pid, second.pid]
    killed, rerun = records
    assert "finish" not in killed
    delay = rerun["start"] - dead_at
    print(f"kill -9 -> rerun on another worker after {delay:.2f} s (lock lifetime {lifetime:g} s)")
    # Not before the kill (the heartbeat kept the lock), and soon after one lock lifetime (the lock
    # was renewed at most 2/3 of a lifetime before), plus a poll and the run's start save; the margin
    # is for a loaded machine, and still far below the 10 minutes of the default lock lifetime.
    assert 0 < delay < lifetime + 10, f"rerun {delay:.2f} s after the kill"
    assert rerun["resumedFrom"] == {"chunk": 2}, rerun  # where the killed run stalled
    assert rerun.get("finish"), "the rerun completed"
    doc = await jobs_collection.find_one({"_id": ObjectId(job_id)})
    assert doc["lockedAt"] is None and doc.get("failedAt") is None
    assert second.proc.poll() is None


async def _has_checkpoint(jobs: Any, job_id: str, chunk: int) -> bool:
    doc = await jobs.find_one({"_id": ObjectId(job_id)})
    return bool(doc and (doc.get("checkpoint") or {}).get("chunk", 0) >= chunk)


async def _finished(jobs: Any, job_id: str) -> bool:
    doc = await jobs.find_one({"_id": ObjectId(job_id)})
    return bool(doc and doc.get("lastFinishedAt") is not None and doc.get("lockedAt") is None)


# -- (c) SIGTERM with a long job ---------------------------------------------------------------------


async def test_sigterm_releases_a_long_job_and_another_worker_resumes_it_from_its_checkpoint_at_once(
    module_dir: Path,
    db_url: str,
    mongo_url: str,
    db_name: str,
    runs: Any,
    jobs_collection: Any,
    workers: list[WorkerProcess],
) -> None:
    lifetime, grace = 30.0, 1.5  # a lock expiry would take 30 s: resuming sooner proves the release
    (job_id,) = await _schedule(db_url, 1, {"chunks": 16, "chunk_s": 0.5, "stall_at": 2})
    first = WorkerProcess(
        module_dir, db_url, mongo_url, db_name, "first", lock_lifetime=lifetime, grace=grace
    )
    workers.append(first)
    await wait_until(lambda: _has_checkpoint(jobs_collection, job_id, 2), timeout=60, interval=0.05)
    second = WorkerProcess(
        module_dir, db_url, mongo_url, db_name, "second", lock_lifetime=lifetime, grace=grace
    )
    workers.append(second)
    await second.started()

    signalled = time.time()
    code, took = await first.terminate(timeout=30)
    assert code == 0, first.log()
    # The run never ends by itself: exiting shows the grace cut it short (the margin is for a loaded
    # machine's shutdown, not for the grace).
    assert took <= grace + 10, f"took {took:.2f} s to exit with --grace {grace:g}"
    doc = await jobs_collection.find_one({"_id": ObjectId(job_id)})
    if doc["lastModifiedBy"] != "second":  # not yet claimed again: must be unlocked and due now
        assert doc["lockedAt"] is None, "the interrupted job is still locked"
        assert doc["nextRunAt"] is not None and doc["nextRunAt"] <= datetime.now(UTC)

    await wait_until(lambda: _count(runs, 2), timeout=60, interval=0.05)
    records = await _records(runs, job_id)
    assert [r["pid"] for r in records] == [first.pid, second.pid]
    interrupted, resumed = records
    assert "finish" not in interrupted
    print(
        f"SIGTERM -> exit in {took:.2f} s (grace {grace:g} s); resumed on another worker "
        f"{resumed['start'] - signalled:.2f} s after the signal (lock lifetime {lifetime:g} s)"
    )
    # Released, not expired: well before the 30 s lock lifetime (the margin is for a loaded machine).
    assert resumed["start"] - signalled < grace + 12, "resumed long before the 30 s lock lifetime"
    # From the interrupted run's last checkpoint, chunk 2, where it stalled (not compared with the
    # document read above: "second" may have checkpointed further by then).
    assert resumed["resumedFrom"] == {"chunk": 2}
    await wait_until(lambda: _finished(jobs_collection, job_id), timeout=60, interval=0.05)
    final = await jobs_collection.find_one({"_id": ObjectId(job_id)})
    assert final.get("failedAt") is None
    assert "checkpoint" not in final or final["checkpoint"] is None


# -- a recovered job released by a stopping worker ----------------------------------------------------


async def test_a_job_recovered_from_a_killed_worker_survives_a_sigterm_of_the_worker_holding_it(
    module_dir: Path,
    db_url: str,
    mongo_url: str,
    db_name: str,
    runs: Any,
    jobs_collection: Any,
    workers: list[WorkerProcess],
) -> None:
    lifetime = 2.0
    (crashed,) = await _schedule(db_url, 1, {"chunks": 8, "chunk_s": 0.5, "stall_at": 1})
    # "first" holds only the job it runs (lock_limit 1), so it never claims the second job.
    first = WorkerProcess(
        module_dir, db_url, mongo_url, db_name, "first", lock_lifetime=lifetime, grace=1,
        env={"LOCK_LIMIT": "1", "CONCURRENCY": "1"},
    )  # fmt: skip
    workers.append(first)
    await wait_until(lambda: _has_checkpoint(jobs_collection, crashed, 1), timeout=60, interval=0.05)
    # "second" runs one job and keeps one more waiting in its look-ahead buffer.
    second = WorkerProcess(
        module_dir, db_url, mongo_url, db_name, "second", lock_lifetime=lifetime, grace=1,
        env={"LOCK_LIMIT": "2", "CONCURRENCY": "1"},
    )  # fmt: skip
    workers.append(second)
    await second.started()
    await _schedule(db_url, 1, {"chunks": 40, "chunk_s": 0.5})  # keeps "second" busy
    await wait_until(lambda: _count(runs, 2), timeout=60, interval=0.05)

    first.kill()  # mid-run: the job keeps lockedAt, and its nextRunAt is null
    await wait_until(lambda: _held_by(jobs_collection, crashed, "second"), timeout=60, interval=0.05)
    code, _ = await second.terminate()  # the recovered job is waiting in second's buffer
    assert code == 0, second.log()

    third = WorkerProcess(module_dir, db_url, mongo_url, db_name, "third", lock_lifetime=lifetime, grace=1)
    workers.append(third)
    await third.started()
    try:
        await wait_until(lambda: _finished(jobs_collection, crashed), timeout=60, interval=0.1)
    except AssertionError:
        doc = await jobs_collection.find_one({"_id": ObjectId(crashed)})
        raise AssertionError(
            f"the recovered job never ran again: lockedAt={doc['lockedAt']} nextRunAt={doc['nextRunAt']} "
            f"lastFinishedAt={doc.get('lastFinishedAt')}"
        ) from None


async def _held_by(jobs: Any, job_id: str, worker: str) -> bool:
    doc = await jobs.find_one({"_id": ObjectId(job_id)})
    return bool(doc and doc.get("lastModifiedBy") == worker and doc.get("lockedAt") is not None)

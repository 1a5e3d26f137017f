"""End to end without change streams: real worker processes (``agendapy worker``) with
``change_streams=False`` publish their runs to the capped events collection; this test process,
which defines nothing, hears them and awaits its jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agendapy import Agenda, JobFailed, RemoteFailure

from support import EventLog, wait_until

pytestmark = pytest.mark.slow

WORKER_MODULE = textwrap.dedent(
    """
    from agendapy import Agenda

    agenda = Agenda(process_every=0.05, change_streams=False, fleet_events=True, default_concurrency=4)

    @agenda.define("ok")
    async def ok(job):
        pass

    @agenda.define("broken")
    async def broken(job):
        raise RuntimeError(f"broken {job.data['n']}")
    """
)


@pytest.fixture
def start_worker(tmp_path: Path, db_url: str) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    module_dir = tmp_path / "module"
    module_dir.mkdir()
    (module_dir / "logmod.py").write_text(WORKER_MODULE)
    path = os.pathsep.join(p for p in (str(module_dir), os.environ.get("PYTHONPATH", "")) if p)
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "agendapy", "worker", "logmod:agenda", "--mongo-url", db_url]
        proc = subprocess.Popen(
            [*command, "--name", name, "--grace", "2", "--log-level", "ERROR"],
            cwd=module_dir,
            env={**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("a worker did not exit within 15 s of SIGTERM")


@pytest.fixture
async def web(db_url: str) -> Any:
    # process_every 5 s: wait_for reads the document that rarely, so its answers come from the events.
    agenda = Agenda(db_url, change_streams=False, fleet_events=True, process_every=5, name="web")
    await agenda.start()
    yield agenda
    await agenda.close()


async def test_runs_of_worker_processes_are_heard_in_order_per_job(
    start_worker: Callable[[str], subprocess.Popen[bytes]], web: Agenda
) -> None:
    events = EventLog(web, "start", "success", "fail", "complete")
    workers = [start_worker("log-worker-1"), start_worker("log-worker-2")]
    await _publishing(web, processes=3)
    first = await web.now("ok")
    finished = await web.wait_for(first, timeout=60)
    assert finished.remote is True
    jobs = await web.now_many("ok", [{"n": n} for n in range(20)])
    failing = await web.now_many("broken", [{"n": n} for n in range(5)])
    await events.wait("complete", count=26, timeout=120)
    per_job: dict[str, list[str]] = {}
    for name, args in events.calls:
        job = args[-1]
        assert job.remote is True
        assert job.worker in ("log-worker-1", "log-worker-2")
        per_job.setdefault(job.id, []).append(name)
    assert {job.id for job in [first, *jobs]} <= per_job.keys()
    for job in [first, *jobs]:
        assert per_job[job.id] == ["start", "success", "complete"]
    for job in failing:
        assert per_job[job.id] == ["start", "fail", "complete"]
    reasons = sorted(str(error) for error, _ in events.args("fail"))
    assert reasons == [f"broken {n}" for n in range(5)]
    assert all(isinstance(error, RemoteFailure) for error, _ in events.args("fail"))
    assert all(proc.poll() is None for proc in workers)


async def test_wait_for_a_remote_failure(
    start_worker: Callable[[str], subprocess.Popen[bytes]], web: Agenda
) -> None:
    start_worker("log-worker")
    await _publishing(web, processes=2)
    job = await web.now("broken", {"n": 7})
    with pytest.raises(JobFailed) as caught:
        await web.wait_for(job, timeout=60)
    assert caught.value.reason == "broken 7"
    assert (caught.value.job.remote, caught.value.job.worker) == (True, "log-worker")


async def _publishing(web: Agenda, processes: int) -> None:
    """Wait until that many processes (this one included) read and publish fleet events: each wrote
    its start marker. A worker publishes from the end of its ``start()``; runs it claimed before that,
    in its first pass, are not published."""
    events = web.store.collection.database["agendaJobs.events"]  # type: ignore[attr-defined]

    async def ready() -> bool:
        return bool(await events.count_documents({"event": "marker"}) >= processes)

    await wait_until(ready, timeout=60, interval=0.05)

"""End to end: a real worker process (``agendapy worker``) runs forked jobs; this test process, which
defines nothing, queues them, hears their events through ``fleet_events`` and awaits them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agendapy import Agenda, Job, JobFailed

from support import EventLog, wait_until

pytestmark = pytest.mark.slow

WORKER_MODULE = textwrap.dedent(
    """
    import asyncio, os, time
    from pathlib import Path
    from agendapy import Agenda

    agenda = Agenda(process_every=0.05, max_concurrency=4, default_concurrency=4)
    KEPT = []

    def _mark(job):
        # Written aside, then renamed: a test that sees the file also sees the pid in it.
        mark = Path(job.data["dir"], str(job.data.get("n", 0)))
        aside = mark.with_name(mark.name + ".writing")
        aside.write_text(str(os.getpid()))
        aside.replace(mark)

    @agenda.define("leak", fork=True)
    def leak(job):
        KEPT.append(b"x" * 20_000_000)  # 20 MB that this child never frees
        _mark(job)

    @agenda.define("report", fork=True)
    async def report(job):
        await job.touch(50)
        _mark(job)

    @agenda.define("exit", fork=True)
    def exit_three(job):
        os._exit(3)

    # The timeout runs from the child's start: 3 s leaves a loaded machine room to reach the sleep.
    @agenda.define("stuck", fork=True, timeout=3)
    def stuck(job):
        _mark(job)
        time.sleep(60)

    @agenda.define("hang", fork=True)
    def hang(job):
        _mark(job)
        time.sleep(600)
    """
)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def worker(tmp_path: Path, db_url: str) -> Any:
    module_dir = tmp_path / "module"
    module_dir.mkdir()
    (module_dir / "forkmod.py").write_text(WORKER_MODULE)
    path = os.pathsep.join(p for p in (str(module_dir), os.environ.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "agendapy", "worker", "forkmod:agenda", "--mongo-url", db_url]
    proc = subprocess.Popen(
        [*command, "--name", "forking-worker", "--grace", "2", "--log-level", "ERROR"],
        cwd=module_dir,
        env={**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the worker did not exit within 15 s of SIGTERM")


@pytest.fixture
async def web(db_url: str) -> Any:
    agenda = Agenda(db_url, fleet_events=True, process_every=0.1, name="web")
    await agenda.start()
    yield agenda
    await agenda.close()


async def test_forked_runs_in_a_worker_process_are_heard_and_awaited(
    worker: subprocess.Popen[bytes], web: Agenda, tmp_path: Path
) -> None:
    events = EventLog(web, "start", "progress", "success", "fail", "complete")
    job = await web.now("report", {"dir": str(tmp_path)})
    finished = await web.wait_for(job, timeout=60)
    assert finished.progress == 50
    child = int((tmp_path / "0").read_text())
    assert child != worker.pid
    await events.wait("complete", timeout=30)
    assert events.names() == ["start", "progress", "success", "complete"]
    seen: Job = events.args("success")[0][0]
    assert (seen.id, seen.remote, seen.worker) == (job.id, True, "forking-worker")

    dying = await web.now("exit")
    with pytest.raises(JobFailed) as died:
        await web.wait_for(dying, timeout=60)
    assert died.value.reason == "child process exited with code: 3"

    stuck = await web.now("stuck", {"dir": str(tmp_path), "n": "stuck"})
    with pytest.raises(JobFailed) as timed_out:
        await web.wait_for(stuck, timeout=60)
    assert timed_out.value.reason == "timed out after 3 s; child process killed by SIGTERM"
    stuck_pid = int((tmp_path / "stuck").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(stuck_pid, 0)
    # The worker goes on after both.
    after = await web.now("report", {"dir": str(tmp_path), "n": "after"})
    await web.wait_for(after, timeout=60)
    assert worker.poll() is None


async def test_a_leaking_forked_handler_leaves_the_worker_flat(
    worker: subprocess.Popen[bytes], web: Agenda, tmp_path: Path
) -> None:
    warm = await web.now("leak", {"dir": str(tmp_path), "n": "warm"})
    await web.wait_for(warm, timeout=60)  # the worker and its fork server are up
    before = _rss_kib(worker.pid)
    runs = 25
    jobs = await web.now_many("leak", [{"dir": str(tmp_path), "n": n} for n in range(runs)])
    for job in jobs:
        await web.wait_for(job, timeout=120)
    await wait_until(lambda: all((tmp_path / str(n)).exists() for n in range(runs)), timeout=30)
    pids = {int((tmp_path / str(n)).read_text()) for n in range(runs)}
    assert len(pids) == runs
    assert worker.pid not in pids
    growth_mib = (_rss_kib(worker.pid) - before) / 1024
    # The children kept 25 x 20 MB between them; the worker must not have kept any of it.
    assert growth_mib < 100, f"the worker grew by {growth_mib:.0f} MiB over {runs} leaking runs"


async def test_sigterm_past_the_grace_kills_a_forked_child_and_hands_the_job_back(
    worker: subprocess.Popen[bytes], web: Agenda, tmp_path: Path
) -> None:
    job = await web.now("hang", {"dir": str(tmp_path)})
    await wait_until(lambda: (tmp_path / "0").exists(), timeout=60)
    child = int((tmp_path / "0").read_text())
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 15) == 0  # --grace 2, then the child is killed
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    fresh = await web.get_job(job.id or "")
    assert fresh is not None
    assert fresh.locked_at is None
    assert fresh.next_run_at is not None  # due again, for another worker

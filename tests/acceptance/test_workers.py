"""Live workers with real worker processes: registered while they run, lost (with the jobs they still
hold) after SIGKILL, stopped after SIGTERM; ``agendapy workers --json``; job logs from a worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agendapy import Agenda, WorkerInfo

from support import wait_until

pytestmark = pytest.mark.slow

WORKER_MODULE = textwrap.dedent(
    """
    import asyncio
    from agendapy import Agenda, backoff

    agenda = Agenda(
        process_every=0.05,
        heartbeat_every=0.5,
        default_lock_lifetime="10 minutes",
        logging=True,
    )

    @agenda.define("hold")
    async def hold(job):
        await asyncio.sleep(600)

    @agenda.define("quick")
    async def quick(job):
        return None

    @agenda.define("flaky", backoff=backoff.constant(delay=0.05, max_retries=1))
    async def flaky(job):
        raise RuntimeError("flaky says no")
    """
)


def _spawn(module_dir: Path, db_url: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agendapy",
            "worker",
            "jobmod:agenda",
            "--mongo-url",
            db_url,
            "--grace",
            "1",
            *extra,
        ],
        cwd=module_dir,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


async def _cli(*args: str) -> str:
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agendapy", "workers", *args],
        env={**os.environ, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return str(out.stdout)


async def _worker(agenda: Agenda, pid: int, *, include_stopped: bool = False) -> WorkerInfo | None:
    for worker in await agenda.workers(include_stopped=include_stopped):
        if worker.pid == pid:
            return worker
    return None


async def test_a_killed_worker_is_lost_with_its_jobs_and_a_stopped_one_says_goodbye(
    tmp_path: Path, db_url: str
) -> None:
    (tmp_path / "jobmod.py").write_text(WORKER_MODULE)
    observer = Agenda(db_url)
    doomed = _spawn(tmp_path, db_url, "--name", "doomed")
    polite = _spawn(tmp_path, db_url)  # no --name: a host-pid name
    try:
        held = await observer.now("hold")

        async def both_live() -> bool:
            a, b = await _worker(observer, doomed.pid), await _worker(observer, polite.pid)
            return a is not None and b is not None and a.state == "live" and b.state == "live"

        await wait_until(both_live, timeout=60, interval=0.1)
        polite_info = await _worker(observer, polite.pid)
        assert polite_info is not None and polite_info.name.endswith(f"-{polite.pid}")
        assert polite_info.definitions == ["flaky", "hold", "quick"]

        holder: list[int] = []

        async def someone_holds_it() -> bool:
            for proc in (doomed, polite):
                info = await _worker(observer, proc.pid)
                if info is not None and info.running == 1:
                    holder[:] = [proc.pid]
                    return True
            return False

        await wait_until(someone_holds_it, timeout=60, interval=0.1)
        victim = doomed if holder[0] == doomed.pid else polite
        survivor = polite if victim is doomed else doomed

        victim.send_signal(signal.SIGKILL)
        victim.wait(30)

        async def victim_lost() -> bool:
            info = await _worker(observer, victim.pid)
            return info is not None and info.state == "lost"

        await wait_until(victim_lost, timeout=30, interval=0.1)
        lost = await _worker(observer, victim.pid)
        assert lost is not None
        assert [job["id"] for job in lost.held_jobs] == [held.id]
        assert lost.held_jobs[0]["name"] == "hold"

        async def survivor_live() -> bool:
            info = await _worker(observer, survivor.pid)
            return info is not None and info.state == "live"

        await wait_until(survivor_live, timeout=30, interval=0.1)

        listed = {entry["pid"]: entry for entry in json.loads(await _cli("--json", "--mongo-url", db_url))}
        assert listed[victim.pid]["state"] == "lost"
        assert listed[victim.pid]["held_jobs"][0]["id"] == held.id
        assert listed[survivor.pid]["state"] == "live"
        for entry in listed.values():
            assert {"name", "host", "pid", "state", "last_seen"} <= set(entry)

        text = await _cli("--mongo-url", db_url)
        assert "lost" in text and "holds" in text and "live" in text

        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(30) == 0
        assert await _worker(observer, survivor.pid) is None, "a stopped worker is not listed as live"
        gone = await _worker(observer, survivor.pid, include_stopped=True)
        assert gone is not None and gone.state == "stopped"
    finally:
        _end(doomed)
        _end(polite)
        await observer.close()


async def test_a_worker_logs_a_success_and_a_failure_with_retry(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "jobmod.py").write_text(WORKER_MODULE)
    producer = Agenda(db_url)
    proc = _spawn(tmp_path, db_url, "--name", "logger")
    try:
        quick = await producer.now("quick")
        flaky = await producer.now("flaky")

        async def logged() -> bool:
            done = await producer.get_logs(job_id=flaky.id, event="retry:exhausted")
            ok = await producer.get_logs(job_id=quick.id, event="complete")
            return done.total == 1 and ok.total == 1

        await wait_until(logged, timeout=60, interval=0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        quick_log = await producer.get_logs(job_id=quick.id, sort="asc")
        assert [e.event for e in quick_log.entries] == ["start", "success", "complete"]
        assert {e.agenda_name for e in quick_log.entries} == {"logger"}
        flaky_log = await producer.get_logs(job_id=flaky.id, sort="asc")
        assert [e.event for e in flaky_log.entries] == [
            "start",
            "fail",
            "retry",
            "complete",
            "start",
            "fail",
            "retry:exhausted",
            "complete",
        ]
        assert flaky_log.entries[1].error == "flaky says no"
        info = await _worker(producer, proc.pid, include_stopped=True)
        assert info is not None and info.done == 1 and info.failed == 2
        assert await producer.clear_logs(job_id=flaky.id) == 8
        assert (await producer.get_logs()).total == 3
    finally:
        _end(proc)
        await producer.close()

"""The embedded database as the getting-started guide uses it: several real processes on one data directory.

No ``--mongo-url`` anywhere: every process finds the shared server through ``AGENDAPY_DATA_DIR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agendapy import Agenda

from ports import free_port
from support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

GRACE = 3.0

JOB_MODULE = textwrap.dedent(
    """
    import os
    from pathlib import Path
    from agendapy import Agenda

    agenda = Agenda(process_every=0.1)

    @agenda.on("ready")
    def connected():
        Path(f"connected-{os.getpid()}").touch()

    @agenda.define("touch")
    def touch(job):
        with Path("runs.txt").open("a") as f:
            f.write(f"{job.data['n']} {os.getpid()}\\n")
    """
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "jobmod.py").write_text(JOB_MODULE)
    monkeypatch.delenv("AGENDAPY_MONGO_URL", raising=False)
    monkeypatch.delenv("AGENDAPY_DATABASE_URL", raising=False)
    monkeypatch.setenv("AGENDAPY_DATA_DIR", str(tmp_path / "db"))
    monkeypatch.setenv("AGENDAPY_EMBEDDED_LINGER", "1")
    yield tmp_path
    # Whatever the test did, leave no server behind.
    record = _record(tmp_path)
    if record and record["pid"]:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record["pid"], sig)


def _record(workdir: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads((workdir / "db" / "server.json").read_text())
    except (OSError, ValueError):
        return None
    return record


def _live_pid(workdir: Path) -> int:
    record = _record(workdir)
    if record is None or not record["pid"] or "user" not in record:
        return 0
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return 0
    return int(record["pid"])


def _worker(workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agendapy", "worker", "jobmod:agenda", "--grace", str(GRACE)],
        cwd=workdir,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _interrupt(proc: subprocess.Popen[str], within: float) -> str:
    """Ctrl-C ``proc``; fail unless it exits (status 0) within ``within`` seconds. Returns its stderr."""
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        stderr = stderr or ""
        pytest.fail(f"the worker did not exit within {within} s of SIGINT:\n{stderr[-3000:]}")
    stderr = stderr or ""  # None when it goes to a file
    assert proc.returncode == 0, stderr[-3000:]
    return stderr


def _runs(workdir: Path) -> list[tuple[int, int]]:
    try:
        lines = (workdir / "runs.txt").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(int(n), int(pid)) for n, pid in (line.split() for line in lines)]


def _ran(workdir: Path, n: int) -> list[int]:
    return [pid for m, pid in _runs(workdir) if m == n]


async def test_second_worker_keeps_its_database_when_the_first_stops(workdir: Path) -> None:
    first = _worker(workdir)
    second: subprocess.Popen[str] | None = None
    client: Agenda | None = None
    try:
        await wait_until(lambda: _live_pid(workdir), timeout=60)
        server_pid = _live_pid(workdir)
        second = _worker(workdir)
        await wait_until(lambda: (workdir / f"connected-{second.pid}").exists(), timeout=60)
        record = _record(workdir)
        assert record is not None
        client = Agenda(record["url"])
        await client.now("touch", {"n": 1})
        await wait_until(lambda: _ran(workdir, 1), timeout=60)

        # The first worker (whichever started the server) leaves: the server stays for the second.
        _interrupt(first, within=GRACE + 10)
        assert _live_pid(workdir) == server_pid
        await client.now("touch", {"n": 2})
        await wait_until(lambda: _ran(workdir, 2), timeout=60)
        assert _ran(workdir, 2) == [second.pid]

        # The server dies under the second worker: it starts it again on the same URL and carries on.
        os.kill(server_pid, signal.SIGKILL)
        await wait_until(lambda: _live_pid(workdir) not in (0, server_pid), timeout=60)
        await client.now("touch", {"n": 3})
        await wait_until(lambda: _ran(workdir, 3), timeout=60)
        assert _ran(workdir, 3) == [second.pid]
        await client.close()
        client = None

        # A stop while the database does not answer still ends within the grace period.
        hung = _live_pid(workdir)
        os.kill(hung, signal.SIGSTOP)
        await asyncio.sleep(0.5)  # let the worker's next poll hit the silent server
        try:
            # Stopped by the grace, not by a database timeout (10 s for server selection, or never
            # for a silent server): 6 s of slack for a loaded machine's shutdown stay below both.
            stderr = _interrupt(second, within=GRACE + 6)
        finally:
            os.kill(hung, signal.SIGCONT)
        second = None
        assert "Traceback" not in stderr
    finally:
        if client is not None:
            await client.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


def _worker_logging_to(workdir: Path, log_path: Path) -> subprocess.Popen[str]:
    with log_path.open("w") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "agendapy", "worker", "jobmod:agenda", "--grace", str(GRACE)],
            cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "500"},
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            text=True,
        )


async def test_a_stop_while_the_server_is_being_restarted_ends_within_the_grace(workdir: Path) -> None:
    log_path = workdir / "worker.log"
    worker = _worker_logging_to(workdir, log_path)
    lock_fd: int | None = None
    try:
        await wait_until(lambda: (workdir / f"connected-{worker.pid}").exists(), timeout=60)
        # Hold the start lock: the worker's restart of the server below cannot finish.
        lock_fd = os.open(workdir / "db" / ".lock", os.O_RDWR)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        os.kill(_live_pid(workdir), signal.SIGKILL)
        await wait_until(lambda: "starting it again" in log_path.read_text(), timeout=60)
        _interrupt(worker, within=GRACE + 6)  # as above: below the 10 s of a database timeout
        assert "Traceback" not in log_path.read_text()
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


async def test_server_stops_after_the_last_process_leaves(workdir: Path) -> None:
    listing = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agendapy", "jobs", "ls", "--json"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)["total"] == 0
    record = _record(workdir)
    assert record is not None and "user" in record
    # The listing has exited; the server lingers (1 s here), then stops and its record says so.
    await wait_until(lambda: (_record(workdir) or {}).get("pid") == 0, timeout=60)
    if record["pid"]:  # it may have stopped before we read the record
        with pytest.raises(ProcessLookupError):
            os.kill(record["pid"], 0)


@pytest.mark.parametrize("command", [["jobs", "ls"], ["stats"]])
async def test_cli_reports_an_unreachable_database_in_one_line(tmp_path: Path, command: list[str]) -> None:
    port = free_port()  # nothing listens there
    url = f"mongodb://127.0.0.1:{port}/app?serverSelectionTimeoutMS=300"
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agendapy", *command, "--mongo-url", url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: cannot reach MongoDB at mongodb://127.0.0.1:{port}/app")

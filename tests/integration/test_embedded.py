"""The embedded SecantusDB server: lifecycle, durability, sharing through server.json, errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from agendapy import embedded
from agendapy.embedded import EmbeddedServer, ensure_embedded_server, find_server_command
from agendapy.errors import AgendaError, DatabaseUnavailable

pytestmark = pytest.mark.timeout(60)


@contextmanager
def connect(url: str) -> Iterator[MongoClient[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        yield client
    finally:
        client.close()


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead: its parent may not have reaped it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def dead_pid() -> int:
    """A pid that belonged to a process which has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def connect_until(address: tuple[str, int], done: threading.Event) -> None:
    """Open and close connections to ``address`` until ``done`` is set."""
    while not done.is_set():
        with suppress(OSError):
            socket.create_connection(address, 0.2).close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(tmp_path / "db")
    yield srv
    srv.stop()


def test_start_and_stop_are_idempotent(server: EmbeddedServer) -> None:
    url = server.start()
    pid = server.pid
    assert pid is not None
    assert server.running
    assert url == server.url == f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
    assert server.start() == url
    assert server.pid == pid
    with connect(url) as client:
        hello = client.admin.command("hello")
        assert hello["isWritablePrimary"]

    server.stop()
    server.stop()
    assert not server.running
    assert server.pid is None
    assert not is_alive(pid)
    # The record stays, marked stopped, so the next server takes the same port.
    assert json.loads((server.data_dir / "server.json").read_text())["pid"] == 0
    assert (server.data_dir / "storage").is_dir()  # an explicit data dir is kept


def test_restart_keeps_port_and_data(server: EmbeddedServer) -> None:
    url = server.start()
    port, old_pid = server.port, server.pid
    with connect(url) as client:
        client.t.things.insert_one({"_id": 1, "name": "kept"})

    assert server.restart() == url
    assert server.port == port
    assert server.pid != old_pid
    with connect(url) as client:
        assert client.t.things.find_one({"_id": 1}) == {"_id": 1, "name": "kept"}


def test_kill_then_start_recovers_acknowledged_writes(server: EmbeddedServer) -> None:
    url = server.start()
    pid = server.pid
    assert pid is not None
    with connect(url) as client:
        for i in range(50):
            client.t.things.insert_one({"_id": i})

    server.kill()
    assert not server.running
    assert not is_alive(pid)
    record = json.loads((server.data_dir / "server.json").read_text())
    assert record["pid"] == pid  # a crash leaves the record behind

    server.start()
    with connect(server.url) as client:
        assert client.t.things.count_documents({}) == 50


def test_stop_is_graceful_while_clients_connect(
    server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    # SecantusDB sometimes misses a SIGTERM that arrives together with a new connection; stop() must
    # notice and signal again rather than wait for its SIGKILL deadline.
    for _ in range(3):
        server.start()
        done = threading.Event()
        thread = threading.Thread(target=connect_until, args=(("127.0.0.1", server.port), done))
        thread.start()
        started = time.monotonic()
        try:
            server.stop(timeout=8.0)
        finally:
            done.set()
            thread.join()
        assert time.monotonic() - started < 4.0
    assert "killing it" not in caplog.text


def test_temporary_data_dir_is_removed_on_stop() -> None:
    srv = EmbeddedServer(None)
    try:
        srv.start()
        data_dir = srv.data_dir
        assert (data_dir / "storage").is_dir()
        assert (data_dir / "server.log").is_file()
    finally:
        srv.stop()
    assert not data_dir.exists()


def test_two_servers_run_side_by_side() -> None:
    with EmbeddedServer(None) as first, EmbeddedServer(None) as second:
        assert first.port != second.port
        assert first.data_dir != second.data_dir
        with connect(first.url) as a, connect(second.url) as b:
            a.t.things.insert_one({"_id": "first"})
            b.t.things.insert_one({"_id": "second"})
            assert [d["_id"] for d in a.t.things.find()] == ["first"]
            assert [d["_id"] for d in b.t.things.find()] == ["second"]


async def test_async_context_manager(tmp_path: Path) -> None:
    async with EmbeddedServer(tmp_path / "db") as srv:
        pid = srv.pid
        assert pid is not None
        assert srv.running
    assert not srv.running
    assert not is_alive(pid)


def read_record(data_dir: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((data_dir / "server.json").read_text())
    return record


def test_ensure_shares_one_server_per_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    with ensure_embedded_server(data_dir, linger=0.5) as first:
        record = read_record(data_dir)
        assert first.url == record["url"]
        with ensure_embedded_server(data_dir, linger=0.5) as second:
            assert second.url == first.url
        assert read_record(data_dir)["pid"] == record["pid"]  # one lease left: still running
        assert first.ensure_live() == first.url
        assert is_alive(record["pid"])
    assert wait_dead(record["pid"], timeout=30)  # the last lease gone, it stops after the linger time
    deadline = time.monotonic() + 30
    while read_record(data_dir)["pid"] != 0:  # the keeper marks the record once the server has exited
        assert time.monotonic() < deadline, read_record(data_dir)
        time.sleep(0.05)


def test_ensure_replaces_a_stale_record(tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    data_dir.mkdir()
    stale = {
        "pid": dead_pid(),
        "host": "127.0.0.1",
        "port": 9,
        "url": "mongodb://127.0.0.1:9/",
        "started_at": "",
    }
    (data_dir / "server.json").write_text(json.dumps(stale))

    with ensure_embedded_server(data_dir, linger=0.5) as lease:
        with connect(lease.url) as client:
            client.t.things.insert_one({"_id": "survives"})
        pid = read_record(data_dir)["pid"]
        assert pid != stale["pid"]

        # A crashed server leaves its record; the lease starts a new one on the same port and data.
        os.kill(pid, signal.SIGKILL)
        assert wait_dead(pid)
        assert lease.ensure_live() == lease.url
        assert read_record(data_dir)["pid"] not in (0, pid)
        with connect(lease.url) as client:
            assert client.t.things.find_one() == {"_id": "survives"}


def test_ensure_starts_one_server_for_concurrent_callers(tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    leases: list[embedded.EmbeddedLease] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            leases.append(ensure_embedded_server(data_dir, linger=0.5))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert len({lease.url for lease in leases}) == 1
    finally:
        for lease in leases:
            lease.release()


def test_shared_server_is_private_to_its_owner(tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    with ensure_embedded_server(data_dir, linger=0.5) as lease:
        record = read_record(data_dir)
        assert record["user"] and len(record["password"]) >= 24
        assert f":{record['password']}@" in lease.url
        with connect(lease.url) as client:
            client.t.things.insert_one({"secret": 1})
        # Without the credentials the port answers the handshake and nothing else.
        anonymous = f"mongodb://127.0.0.1:{record['port']}/?directConnection=true"
        with connect(anonymous) as client, pytest.raises(OperationFailure, match="requires authentication"):
            client.t.things.find_one()
        assert "***" in repr(lease) and record["password"] not in repr(lease)
        modes = {path: path.stat().st_mode & 0o777 for path in [data_dir, *data_dir.rglob("*")]}
        assert {mode for path, mode in modes.items() if path.is_dir()} <= {0o700}, modes
        assert {mode for path, mode in modes.items() if not path.is_dir()} <= {0o600}, modes


def test_shared_server_closes_up_an_old_open_data_dir(tmp_path: Path) -> None:
    # A directory from an earlier version: world-readable, no credentials in its record.
    data_dir = tmp_path / "old"
    with EmbeddedServer(data_dir) as old, connect(old.url) as client:
        client.t.things.insert_one({"_id": "kept"})
    for path in [data_dir, *data_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    with ensure_embedded_server(data_dir, linger=0.5) as lease:
        assert "user" in read_record(data_dir)
        with connect(lease.url) as client:
            assert client.t.things.find_one() == {"_id": "kept"}
    bad = [p for p in [data_dir, *data_dir.rglob("*")] if p.stat().st_mode & 0o077]
    assert bad == []


def test_server_stops_when_its_owner_is_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "db"
    code = (
        "import sys, time\n"
        "from agendapy.embedded import EmbeddedServer\n"
        "srv = EmbeddedServer(sys.argv[1])\n"
        "srv.start()\n"
        "print(srv.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", code, str(data_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline())
        assert is_alive(server_pid)
    finally:
        owner.send_signal(signal.SIGKILL)  # no atexit, no finally: only the watchdog can stop the server
        owner.wait()
    assert wait_dead(server_pid)


def test_missing_secantusdb_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.command, "_SERVER_SCRIPT", "no-such-secantusd-script")
    monkeypatch.setattr(embedded.command, "_SERVER_MODULE", "no_such_secantus_module")
    with pytest.raises(AgendaError, match=r"pip install 'agendapy\[embedded\]'"):
        find_server_command()
    srv = EmbeddedServer(None)
    with pytest.raises(AgendaError, match="AGENDAPY_MONGO_URL"):
        srv.start()
    srv.stop()


def test_early_exit_reports_the_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    failing = [
        sys.executable,
        "-c",
        "import sys; print('boom: cannot open storage', file=sys.stderr); sys.exit(3)",
    ]
    monkeypatch.setattr(embedded.server, "find_server_command", lambda: failing)
    srv = EmbeddedServer(tmp_path / "db")
    with pytest.raises(
        DatabaseUnavailable, match=r"exited early with code 3(.|\n)*boom: cannot open storage"
    ):
        srv.start()
    assert not srv.running


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        srv = EmbeddedServer(tmp_path / "db", port=port)
        with pytest.raises(DatabaseUnavailable, match="in use"):
            srv.start()
        assert not srv.running


async def test_agendas_on_the_embedded_default_share_it_and_never_log_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agendapy import Agenda

    data_dir = tmp_path / "db"
    monkeypatch.delenv("AGENDAPY_MONGO_URL", raising=False)
    monkeypatch.setenv("AGENDAPY_DATA_DIR", str(data_dir))
    monkeypatch.setenv("AGENDAPY_EMBEDDED_LINGER", "0.5")
    caplog.set_level("DEBUG", logger="agendapy")
    first, second = Agenda(name="first"), Agenda(name="second")
    try:
        await first.now("from first")
        await second.connect()
        server_pid = read_record(data_dir)["pid"]
        await first.close()  # the first user leaves: the second keeps the same server
        await second.now("from second")
        names = sorted(job.name for job in (await second.query_jobs()).jobs)
        assert names == ["from first", "from second"]
        assert read_record(data_dir)["pid"] == server_pid
    finally:
        await first.close()
        await second.close()
    assert wait_dead(server_pid, timeout=30)
    password = read_record(data_dir)["password"]
    assert "mongodb://agendapy:***@127.0.0.1" in caplog.text
    assert password not in caplog.text


def test_a_server_that_cannot_start_is_a_one_line_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "db"
    data_dir.mkdir()
    (data_dir / "storage").write_text("not a directory")  # WiredTiger cannot open its home
    with pytest.raises(DatabaseUnavailable) as caught:
        ensure_embedded_server(data_dir, linger=0.5)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the embedded server could not start: its keeper exited with code 1 (")
    assert message.endswith(f"see {data_dir / 'server.log'}")

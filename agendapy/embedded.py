"""The zero-setup default database: SecantusDB run as a child process.

:class:`EmbeddedServer` starts ``secantusd-py`` on a loopback port over a data directory, waits until it
answers ``hello`` and stops it again. :func:`ensure_embedded_server` is what the CLI and ``Agenda``'s
default use: several processes on one machine share one server per data directory, recorded in
``server.json``, and the process that started it owns it. The owner stops its servers at exit; a small
watchdog process per server stops it too when the owner dies without running exit hooks.

Layout of a data directory::

    server.json      pid, port and URL of the live server (written by its owner, removed on stop)
    server.log       the server's stdout and stderr
    secantusd.toml   passed with --config so no user-wide SecantusDB config file changes our server
    storage/         the WiredTiger files
    .lock            serialises check-then-start in ensure_embedded_server
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TypedDict, cast

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from agendapy.errors import AgendaError, DatabaseUnavailable

if sys.platform != "win32":
    import fcntl

__all__ = ["EmbeddedServer", "ensure_embedded_server", "find_server_command"]

log = logging.getLogger(__name__)

_SERVER_SCRIPT = "secantusd-py"
_SERVER_MODULE = "secantus"
_INSTALL_HINT = (
    "the embedded database needs SecantusDB: pip install 'agendapy[embedded]' (or set AGENDAPY_MONGO_URL)"
)
_RECORD_NAME = "server.json"
_LOG_NAME = "server.log"
_CONFIG_NAME = "secantusd.toml"
_STORAGE_NAME = "storage"
_LOCK_NAME = ".lock"
_LOG_ROTATE_BYTES = 5 * 1024 * 1024
_LOG_TAIL_LINES = 20
_POLL_INTERVAL = 0.05
_RESIGNAL_AFTER = 0.5
_PORT_ATTEMPTS = 3

_CONFIG_TEXT = """\
# Written by agendapy. It is passed to secantusd-py with --config, which turns off SecantusDB's
# auto-discovery of ./secantusd.toml, ~/.secantus/secantusd.toml and /etc/secantus/secantusd.toml.
# Command-line flags (host, port, storage path, log level, sync-on-commit) override this file.
"""

# Runs in its own small process next to each server. Its stdin is the read end of a pipe whose write
# end only the owning process holds, so EOF means the owner is gone however it died (SIGKILL, os._exit,
# a default SIGTERM): then it stops the server. A plain atexit hook covers none of those cases, and
# PR_SET_PDEATHSIG is tied to the *thread* that forked (a server started from asyncio.to_thread would
# die with that worker thread) and needs a preexec_fn, which is unsafe in threaded programs.
_WATCHDOG = """\
# agendapy: embedded-server watchdog (stops the server when its owner dies)
import os, signal, socket, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
pid, grace, host, port = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
sys.stdin.buffer.read()
def alive():
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except OSError:
        return True
def serving():
    try:
        socket.create_connection((host, port), timeout=0.2).close()
    except OSError:
        return False
    return True
def send(sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
if alive():
    send(signal.SIGTERM)
    signalled = time.monotonic()
    deadline = signalled + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
        if serving() and time.monotonic() - signalled > 0.5:  # see EmbeddedServer._terminate
            send(signal.SIGTERM)
            signalled = time.monotonic()
    if alive():
        send(signal.SIGKILL)
"""


class _ServerRecord(TypedDict):
    """The contents of ``server.json``."""

    pid: int
    host: str
    port: int
    url: str
    started_at: str


def find_server_command() -> list[str]:
    """Return the command that runs the SecantusDB server.

    Looks for the ``secantusd-py`` script next to ``sys.executable`` (the active virtualenv), then on
    ``PATH``, then for a ``python -m secantus`` entry point.

    Raises:
        AgendaError: SecantusDB is not installed; the message says how to install it.
    """
    beside_python = shutil.which(_SERVER_SCRIPT, path=str(Path(sys.executable).parent))
    if beside_python:
        return [beside_python]
    on_path = shutil.which(_SERVER_SCRIPT)
    if on_path:
        return [on_path]
    # find_spec of the top-level package reads no module code; importing secantus costs ~100 ms.
    spec = importlib.util.find_spec(_SERVER_MODULE)
    if spec is not None and spec.submodule_search_locations is not None:
        for location in spec.submodule_search_locations:
            if (Path(location) / "__main__.py").is_file():
                return [sys.executable, "-m", _SERVER_MODULE]
    raise AgendaError(_INSTALL_HINT)


class EmbeddedServer:
    """A SecantusDB server run as a child process of this one.

    Args:
        data_dir: where the server keeps its files (created with its parents). ``None`` makes a
            temporary directory that :meth:`stop` removes.
        host: the address to listen on.
        port: the port to listen on; ``None`` picks a free one at the first start and keeps it.
        startup_timeout: seconds :meth:`start` waits for the server to answer ``hello``.
        log_level: the server's log level (its output goes to ``data_dir/server.log``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 20.0,
        log_level: str = "WARNING",
    ) -> None:
        self._temporary = data_dir is None
        self._data_dir = Path(data_dir).resolve() if data_dir is not None else self._make_temp_dir()
        self._host = host
        self._port = port
        self._port_chosen_by_us = port is None
        self._started_once = False
        self._startup_timeout = startup_timeout
        self._log_level = log_level
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None
        self._log_offset = 0
        self._owner_pid = os.getpid()
        self._lock = threading.RLock()
        _instances.add(self)

    def _make_temp_dir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="agendapy-db-"))
        # Removes the directory if this object is garbage-collected without stop(); a running server
        # is never collected because _running holds it.
        self._temp_cleanup = weakref.finalize(self, shutil.rmtree, path, ignore_errors=True)
        self._temp_cleanup.atexit = False
        return path

    # -- state ---------------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The directory holding the storage, the log and ``server.json``."""
        return self._data_dir

    @property
    def url(self) -> str:
        """The connection string, ``mongodb://HOST:PORT/?directConnection=true``."""
        if self._port is None:
            raise AgendaError("the embedded server has no port yet: call start() first")
        return _make_url(self._host, self._port)

    @property
    def port(self) -> int | None:
        """The port, once chosen."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        with self._lock:
            return self._proc.pid if self._alive() and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        with self._lock:
            return self._alive()

    @property
    def log_path(self) -> Path:
        """The file that receives the server's output."""
        return self._data_dir / _LOG_NAME

    def _alive(self) -> bool:
        if self._proc is None:
            return False
        if self._proc.poll() is None:
            return True
        # It died on its own: poll() has reaped it; drop the watchdog too so nothing lingers.
        log.warning("embedded server pid %d exited with code %s", self._proc.pid, self._proc.returncode)
        self._proc = None
        self._disarm_watchdog()
        _running.discard(self)
        return False

    # -- start ---------------------------------------------------------------------------------------

    def start(self) -> str:
        """Start the server (if it is not running) and wait until it answers; return its URL.

        Raises:
            AgendaError: SecantusDB is not installed.
            DatabaseUnavailable: the server exited or did not answer within ``startup_timeout``;
                the message ends with the last lines of its log.
        """
        with self._lock:
            if self._alive():
                return self.url
            command = find_server_command()
            if self._temporary and not self._data_dir.exists():
                # stop() removed the previous temporary directory; a new start is a new database.
                self._data_dir = self._make_temp_dir()
            self._prepare_data_dir()
            for attempt in range(_PORT_ATTEMPTS):
                if self._port is None:
                    self._port = _free_port(self._host)
                try:
                    self._launch(command)
                    break
                except _PortTaken:
                    # Another process took the free port between our probe and the server's bind.
                    if not self._may_repick_port() or attempt == _PORT_ATTEMPTS - 1:
                        raise DatabaseUnavailable(
                            f"embedded server could not listen on {self._host}:{self._port}: "
                            f"the port is in use\n{self._log_tail()}"
                        ) from None
                    self._port = None
            self._started_once = True
            _running.add(self)
            self._write_record()
            return self.url

    async def astart(self) -> str:
        """Like :meth:`start`, without blocking the event loop."""
        return await asyncio.to_thread(self.start)

    def _may_repick_port(self) -> bool:
        # Once a URL has been handed out, the port must stay the same (restart keeps clients working).
        return self._port_chosen_by_us and not self._started_once

    def _prepare_data_dir(self) -> None:
        (self._data_dir / _STORAGE_NAME).mkdir(parents=True, exist_ok=True)
        config = self._data_dir / _CONFIG_NAME
        if not config.exists():
            config.write_text(_CONFIG_TEXT, encoding="utf-8")
        log_path = self.log_path
        with contextlib.suppress(FileNotFoundError):
            if log_path.stat().st_size > _LOG_ROTATE_BYTES:
                os.replace(log_path, log_path.with_name(_LOG_NAME + ".1"))

    def _launch(self, command: list[str]) -> None:
        assert self._port is not None
        args = [
            *command,
            "--config", str(self._data_dir / _CONFIG_NAME),
            "--host", self._host,
            "--port", str(self._port),
            "--storage-path", str(self._data_dir / _STORAGE_NAME),
            "--log-level", self._log_level,
            # Without it a kill -9 of the server loses acknowledged writes.
            "--sync-on-commit",
        ]  # fmt: skip
        with self.log_path.open("ab") as log_file:
            self._log_offset = log_file.tell()
            log_file.write(f"--- agendapy: starting {' '.join(args)}\n".encode())
            log_file.flush()
            try:
                # A new session keeps Ctrl-C in a terminal away from the server, so the owner decides
                # when it stops (after its workers), and lets stop() signal it alone.
                self._proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self._data_dir,
                    start_new_session=True,
                )
            except OSError as exc:
                raise DatabaseUnavailable(f"could not run the embedded server {args[0]!r}: {exc}") from exc
            self._arm_watchdog(log_file)
        log.debug("embedded server pid %d starting on port %d", self._proc.pid, self._port)
        try:
            self._wait_until_ready(self._proc)
        except BaseException:
            self._disarm_watchdog()
            self._terminate(self._proc, timeout=2.0, graceful=False)
            self._proc = None
            raise

    def _wait_until_ready(self, proc: subprocess.Popen[bytes]) -> None:
        assert self._port is not None
        started = time.monotonic()
        deadline = started + self._startup_timeout
        problem = "no answer yet"
        while True:
            code = proc.poll()
            if code is not None:
                tail = self._log_tail()
                if f"[Errno {errno.EADDRINUSE}]" in tail or "Address already in use" in tail:
                    raise _PortTaken
                raise DatabaseUnavailable(
                    f"embedded server exited early with code {code} (data dir {self._data_dir}); "
                    f"last lines of {self.log_path}:\n{tail}"
                )
            if _port_open(self._host, self._port):
                answer = _probe(self.url, timeout=1.0)
                if isinstance(answer, str):
                    problem = answer
                elif answer is None or answer == proc.pid:
                    log.debug("embedded server ready in %.2f s", time.monotonic() - started)
                    return
                else:
                    # Someone else's server answers on this port; ours will fail to bind and exit.
                    problem = f"port {self._port} is answered by another server (pid {answer})"
            if time.monotonic() > deadline:
                raise DatabaseUnavailable(
                    f"embedded server did not answer within {self._startup_timeout:g} s on "
                    f"{self._host}:{self._port} ({problem}); last lines of {self.log_path}:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _arm_watchdog(self, log_file: IO[bytes]) -> None:
        assert self._proc is not None
        assert self._port is not None
        read_end, write_end = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(self._proc.pid), "10", self._host, str(self._port)],
                stdin=read_end,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            # Only a safety net for abnormal exits; the server works without it.
            log.warning("could not start the embedded server's watchdog: %s", exc)
            os.close(write_end)
        else:
            self._lifeline = write_end
        finally:
            os.close(read_end)

    def _disarm_watchdog(self) -> None:
        # Kill the watchdog before closing the lifeline: EOF would make it SIGTERM the server.
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    # -- stop ----------------------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.

        Removes ``server.json`` and, for a temporary data directory, the directory. Does nothing more
        when the server is not running.
        """
        with self._lock:
            if os.getpid() != self._owner_pid:
                return  # a forked child must not stop its parent's server
            self._shutdown(timeout)
            if self._temporary:
                self._temp_cleanup()

    # The timeout is the server's grace period before SIGKILL, not a limit on this call.
    async def astop(self, timeout: float = 10.0) -> None:
        """Like :meth:`stop`, without blocking the event loop."""
        await asyncio.to_thread(self.stop, timeout)

    def kill(self) -> None:
        """SIGKILL the server and leave its data (and ``server.json``) as a crash would."""
        with self._lock:
            self._disarm_watchdog()
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
                self._proc = None
            _running.discard(self)

    def restart(self) -> str:
        """Stop the server and start it again on the same port and data directory; return its URL."""
        with self._lock:
            self._shutdown(10.0)
            return self.start()

    def _shutdown(self, timeout: float) -> None:
        self._disarm_watchdog()
        if self._proc is not None:
            self._terminate(self._proc, timeout, graceful=True)
            self._remove_record(self._proc.pid)
            self._proc = None
        _running.discard(self)

    def _terminate(self, proc: subprocess.Popen[bytes], timeout: float, *, graceful: bool) -> None:
        if proc.poll() is None and graceful:
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            deadline = signalled + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(_POLL_INTERVAL)
                # SecantusDB's shutdown joins its accept thread, which close() does not wake on Linux;
                # a connection does, turning a 2 s stop into ~0.1 s. Once its handler has run, the
                # port stops accepting within one poll.
                still_serving = (
                    proc.poll() is None and self._port is not None and _port_open(self._host, self._port)
                )
                if still_serving and time.monotonic() - signalled > _RESIGNAL_AFTER:
                    # Its main thread waits in Event.wait(), which only a signal handled by that very
                    # thread interrupts. A connection arriving together with SIGTERM makes the handler
                    # never run (9 stops in 100 when we connected at once, none when 50 ms later), and
                    # clients may connect at any moment: signal again until it does.
                    log.debug("embedded server pid %d still serving; sending SIGTERM again", proc.pid)
                    proc.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
        if proc.poll() is None:
            if graceful:
                log.warning("embedded server pid %d ignored SIGTERM for %g s; killing it", proc.pid, timeout)
            proc.kill()
        proc.wait()

    # -- server.json ---------------------------------------------------------------------------------

    def _write_record(self) -> None:
        assert self._proc is not None
        assert self._port is not None
        record: _ServerRecord = {
            "pid": self._proc.pid,
            "host": self._host,
            "port": self._port,
            "url": self.url,
            "started_at": datetime.now(UTC).isoformat(),
        }
        path = self._data_dir / _RECORD_NAME
        temp = path.with_name(f"{_RECORD_NAME}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(temp, path)  # readers see the old record or the new one, never half of one

    def _remove_record(self, pid: int) -> None:
        path = self._data_dir / _RECORD_NAME
        record = _read_record(path)
        # A record naming another pid belongs to a server someone else started since.
        if record is not None and record["pid"] != pid:
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def _log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError as exc:
            return f"(could not read the log: {exc})"
        tail = lines[-_LOG_TAIL_LINES:]
        return "\n".join(tail) if tail else "(the log is empty)"

    # -- context managers ----------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedServer:
        await self.astart()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<EmbeddedServer {self._host}:{self._port} {self._data_dir} {state}>"


class _PortTaken(Exception):
    """The server could not bind its port."""


# Running servers are held strongly so they are stopped at exit; all instances weakly so stop() at
# exit also removes temporary directories of servers that were killed and never stopped.
_running: set[EmbeddedServer] = set()
_instances: weakref.WeakSet[EmbeddedServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_instances):
        try:
            server.stop()
        except Exception:
            log.exception("could not stop %r at exit", server)


def ensure_embedded_server(
    data_dir: str | os.PathLike[str] = ".agendapy/db",
) -> tuple[str, EmbeddedServer | None]:
    """Return the URL of the embedded server for ``data_dir``, starting one if none is live.

    A server recorded in ``data_dir/server.json`` whose process is alive and answers ``hello`` is
    reused: the result is ``(url, None)`` and the process that started it stays its owner. Otherwise
    a new server is started and ``(url, server)`` returned; the caller owns it and should stop it.
    A lock file makes concurrent callers (processes or threads) start at most one server.

    Raises:
        AgendaError: SecantusDB is not installed.
        DatabaseUnavailable: the server could not be started.
    """
    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    with _exclusive(path / _LOCK_NAME, timeout=60.0):
        record = _read_record(path / _RECORD_NAME)
        if record is not None and _record_is_live(record):
            return record["url"], None
        port = None
        if record is not None and _port_is_free(record["host"], record["port"]):
            port = record["port"]  # keep the URL that clients may have saved
        server = EmbeddedServer(path, port=port)
        try:
            url = server.start()
        except DatabaseUnavailable as exc:
            if record is not None and _pid_alive(record["pid"]):
                raise DatabaseUnavailable(
                    f"{exc}\n(pid {record['pid']} from {path / _RECORD_NAME} is alive but does not answer "
                    f"on {record['url']}; stop it and try again)"
                ) from exc
            raise
        return url, server


def _record_is_live(record: _ServerRecord) -> bool:
    # The pid check alone could hit a recycled pid, the port check alone someone else's server.
    return _pid_alive(record["pid"]) and _probe(record["url"], timeout=2.0) == record["pid"]


def _read_record(path: Path) -> _ServerRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    fields = {"pid": int, "host": str, "port": int, "url": str, "started_at": str}
    if not all(isinstance(data.get(name), kind) for name, kind in fields.items()):
        return None
    return cast(_ServerRecord, data)


@contextlib.contextmanager
def _exclusive(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (released when the descriptor closes)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if sys.platform != "win32":
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DatabaseUnavailable(
                            f"another process has held {path} for {timeout:g} s while starting the "
                            "embedded server"
                        ) from None
                    time.sleep(_POLL_INTERVAL)
        yield
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        # A zombie still accepts signal 0 but is dead for our purposes.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _probe(url: str, timeout: float) -> int | str | None:
    """Ask ``url`` for ``hello`` and its pid: the pid, ``None`` if it gives none, or why it failed."""
    ms = int(timeout * 1000)
    client: MongoClient[dict[str, object]] = MongoClient(
        url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms, appname="agendapy-probe"
    )
    try:
        client.admin.command("hello")
        pid = client.admin.command("serverStatus").get("pid")
    except PyMongoError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return pid if isinstance(pid, int) else None


def _port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option the server sets, so a port in TIME_WAIT after a crash counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _make_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"mongodb://{shown}:{port}/?directConnection=true"

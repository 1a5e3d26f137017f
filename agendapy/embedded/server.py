"""The zero-setup default database: SecantusDB run as a child process.

:class:`EmbeddedServer` starts ``secantusd-py`` on a loopback port over a data directory, waits until it
answers ``hello`` and stops it again; the process that starts it owns it (tests, benchmarks). A small
watchdog process per server stops it when the owner dies without running exit hooks.

:func:`ensure_embedded_server` is what the CLI and ``Agenda``'s default use: every process on the machine
that uses one data directory shares one server, which belongs to none of them. A detached keeper process
(``python -m agendapy.embedded``) starts it and stops it a little after the last user has left. Each user
holds a *lease*, a shared ``flock`` on ``users.lock`` that the kernel releases however the user exits;
the keeper stops the server only while it holds that lock exclusively, so no user can be handed a server
that is stopping. The server keeps its port for the life of the data directory, so a user whose server
went away (killed, crashed) starts a new one on the same URL and its driver reconnects by itself.

The server requires SCRAM-SHA-256 authentication: the keeper creates a user with a random password at
the first start and keeps it in ``server.json``, which, like everything in the directory, only the
owner can read (files 0600, directories 0700).

Layout of a data directory::

    server.json      port, URL and credentials; pid of the live server (0 when stopped)
    server.log       the keeper's and the server's output
    secantusd.toml   passed with --config so no user-wide SecantusDB config file changes our server
    storage/         the WiredTiger files
    .lock            serialises check-then-start in ensure_embedded_server
    users.lock       leases of the processes using the server
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
import secrets
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
from typing import IO, NotRequired, TypedDict, cast
from urllib.parse import quote

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from agendapy.errors import AgendaError, DatabaseUnavailable

if sys.platform != "win32":
    import fcntl

__all__ = ["EmbeddedLease", "EmbeddedServer", "ensure_embedded_server", "find_server_command"]

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
_USERS_NAME = "users.lock"
_USER = "agendapy"
#: Seconds the shared server stays up after its last user has left (env AGENDAPY_EMBEDDED_LINGER).
DEFAULT_LINGER = 10.0
#: Only the owner may read or enter anything in a data directory.
_FILE_MODE = 0o600
_DIR_MODE = 0o700
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

    pid: int  # the server's, 0 once it has stopped (the record keeps the port and the credentials)
    host: str
    port: int
    url: str  # with the password, when there is one: the file is 0600
    started_at: str
    user: NotRequired[str]
    password: NotRequired[str]


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
        credentials: ``(user, password)`` of a user that exists in the storage (see
            :meth:`create_user`): the server then runs with ``--auth`` and :attr:`url` carries them.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 20.0,
        log_level: str = "WARNING",
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self._temporary = data_dir is None
        self._data_dir = Path(data_dir).resolve() if data_dir is not None else self._make_temp_dir()
        self._host = host
        self._port = port
        self._port_chosen_by_us = port is None
        self._started_once = False
        self._startup_timeout = startup_timeout
        self._log_level = log_level
        self._credentials = credentials
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None
        self._log_offset = 0
        self._owner_pid = os.getpid()
        self._lock = threading.RLock()
        _instances.add(self)

    def _make_temp_dir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix="agendapy-db-"))  # mkdtemp makes it 0700
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
        """The connection string, ``mongodb://[USER:PASSWORD@]HOST:PORT/?directConnection=true``."""
        if self._port is None:
            raise AgendaError("the embedded server has no port yet: call start() first")
        return _make_url(self._host, self._port, self._credentials)

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
        _make_private_dir(self._data_dir)
        (self._data_dir / _STORAGE_NAME).mkdir(mode=_DIR_MODE, exist_ok=True)
        # Directories made by earlier versions were 0755 with 0644 files: close them up.
        _restrict_tree(self._data_dir)
        config = self._data_dir / _CONFIG_NAME
        if not config.exists():
            _write_private(config, _CONFIG_TEXT)
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
            *(["--auth"] if self._credentials else []),
        ]  # fmt: skip
        with _open_private_log(self.log_path) as log_file:
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
                    umask=0o077,  # its storage files: 0600, like everything in the directory
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

        Marks ``server.json`` stopped and, for a temporary data directory, removes the directory. Does
        nothing more when the server is not running.
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

    def create_user(self, user: str, password: str) -> None:
        """Create (or reset the password of) a ``root`` user in the running server, then remove every
        other user, so no one who connected before ``--auth`` was on keeps a way in.

        Call it on a server started without credentials, then start one with them.
        """
        client: MongoClient[dict[str, object]] = MongoClient(
            self.url, serverSelectionTimeoutMS=10_000, appname="agendapy-setup"
        )
        try:
            admin = client.admin
            try:
                admin.command("createUser", user, pwd=password, roles=["root"])
            except OperationFailure as exc:
                if "already exists" not in str(exc):
                    raise
                admin.command("updateUser", user, pwd=password, roles=["root"])
            listed = admin.command({"usersInfo": 1, "forAllDBs": True}).get("users", [])
            for other in listed if isinstance(listed, list) else []:
                if (other.get("user"), other.get("db")) != (user, "admin"):
                    client[str(other.get("db"))].command("dropUser", other.get("user"))
        finally:
            client.close()

    def restart(self) -> str:
        """Stop the server and start it again on the same port and data directory; return its URL."""
        with self._lock:
            self._shutdown(10.0)
            return self.start()

    def _shutdown(self, timeout: float) -> None:
        self._disarm_watchdog()
        if self._proc is not None:
            self._terminate(self._proc, timeout, graceful=True)
            self._mark_record_stopped(self._proc.pid)
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
        if self._credentials is not None:
            record["user"], record["password"] = self._credentials
        _write_record(self._data_dir / _RECORD_NAME, record)

    def _mark_record_stopped(self, pid: int) -> None:
        path = self._data_dir / _RECORD_NAME
        record = _read_record(path)
        # A record naming another pid belongs to a server someone else started since. The stopped
        # record keeps the port (the next server takes the same URL) and the credentials.
        if record is not None and record["pid"] == pid:
            record["pid"] = 0
            _write_record(path, record)

    def _log_tail(self) -> str:
        return _tail(self.log_path, self._log_offset)

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


class EmbeddedLease:
    """This process's use of the shared embedded server of one data directory.

    While a lease is held the server keeps running; :meth:`release` (or the process's exit, however it
    happens) gives it up. Returned by :func:`ensure_embedded_server`.
    """

    def __init__(self, data_dir: Path, fd: int, url: str, linger: float) -> None:
        self._data_dir = data_dir
        self._fd: int | None = fd
        self._url = url
        self._linger = linger

    @property
    def url(self) -> str:
        """The server's connection string (with its credentials: do not log it unredacted)."""
        return self._url

    @property
    def data_dir(self) -> Path:
        """The data directory."""
        return self._data_dir

    @property
    def held(self) -> bool:
        """Whether :meth:`release` has not been called yet."""
        return self._fd is not None

    def ensure_live(self) -> str:
        """Check that the server still runs (cheaply: its pid), start it again if not; return the URL.

        The new server takes the same port whenever it is free, so clients reconnect by themselves.
        """
        if self._fd is None:
            raise AgendaError("this embedded-server lease has been released")
        record = _read_record(self._data_dir / _RECORD_NAME)
        if record is not None and record["pid"] > 0 and _pid_alive(record["pid"]):
            return self._url
        log.warning("the embedded database in %s has stopped; starting it again", self._data_dir)
        url = _find_or_start(self._data_dir, self._linger)
        if url != self._url:
            log.error(
                "the embedded database in %s came back on another port (%s): restart this process",
                self._data_dir,
                _redact(url),
            )
            self._url = url
        return url

    async def aensure_live(self) -> str:
        """Like :meth:`ensure_live`, without blocking the event loop.

        It runs in a daemon thread rather than the loop's executor: starting a server may take seconds,
        and a process that is stopping must not wait for it (``asyncio.run`` and the interpreter wait
        for executor threads at exit; a cancelled caller simply leaves this one behind).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()

        def settle(result: str | None, error: BaseException | None) -> None:
            if future.done():
                return  # the caller was cancelled
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(cast(str, result))

        def check() -> None:
            try:
                result, error = self.ensure_live(), None
            except BaseException as exc:
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=check, name="agendapy-embedded-check", daemon=True).start()
        return await future

    def release(self) -> None:
        """Stop using the server; it stops once no process has used it for the linger time."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> EmbeddedLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<EmbeddedLease {_redact(self._url)} {self._data_dir} {'held' if self.held else 'released'}>"


def ensure_embedded_server(
    data_dir: str | os.PathLike[str] = ".agendapy/db", *, linger: float | None = None
) -> EmbeddedLease:
    """Join the shared embedded server of ``data_dir``, starting it if none is live.

    The server belongs to no caller: a detached keeper process runs it while any process holds a lease
    on the directory and stops it ``linger`` seconds (default ``$AGENDAPY_EMBEDDED_LINGER``, else 10)
    after the last lease is released. A lock file makes concurrent callers (processes or threads) start
    at most one server.

    Raises:
        AgendaError: SecantusDB is not installed.
        DatabaseUnavailable: the server could not be started; the message ends with its log.
    """
    find_server_command()  # fail fast, with the install hint, before spawning anything
    if linger is None:
        linger = _linger_from_env()
    path = Path(data_dir).resolve()
    _make_private_dir(path)
    fd = os.open(path / _USERS_NAME, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    try:
        # The lease first: a keeper stops its server only while it holds this lock exclusively, so
        # once we hold it shared, a server we find live stays live.
        _flock(fd, shared=True, timeout=60.0, what=path / _USERS_NAME)
        url = _find_or_start(path, linger)
    except BaseException:
        os.close(fd)
        raise
    return EmbeddedLease(path, fd, url, linger)


def _linger_from_env() -> float:
    text = os.environ.get("AGENDAPY_EMBEDDED_LINGER")
    if not text:
        return DEFAULT_LINGER
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise AgendaError(f"AGENDAPY_EMBEDDED_LINGER={text!r}: expected seconds, 0 or more")
    return value


def _find_or_start(path: Path, linger: float) -> str:
    """The URL of the live server of ``path``, after starting a keeper for it if there is none."""
    with _exclusive(path / _LOCK_NAME, timeout=60.0):
        record = _read_record(path / _RECORD_NAME)
        if record is not None and _record_is_live(record):
            return record["url"]
        if record is not None and record["pid"] > 0 and _pid_alive(record["pid"]):
            raise DatabaseUnavailable(
                f"pid {record['pid']} from {path / _RECORD_NAME} is alive but does not answer on "
                f"{_redact(record['url'])}; stop it and try again"
            )
        port = None
        if record is not None and _port_is_free(record["host"], record["port"]):
            port = record["port"]  # the same URL as before: clients reconnect by themselves
        return _spawn_keeper(path, port, linger, previous=record)


def _spawn_keeper(path: Path, port: int | None, linger: float, previous: _ServerRecord | None) -> str:
    log_path = path / _LOG_NAME
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    # The keeper must run this very agendapy, even one found through sys.path tweaks.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    args = [sys.executable, "-m", "agendapy.embedded", str(path), "--linger", str(linger)]
    if port is not None:
        args += ["--port", str(port)]
    with _open_private_log(log_path) as log_file:
        offset = log_file.tell()
        try:
            # Its own session: Ctrl-C in the terminal that started it does not reach it.
            keeper = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=path,
                env=env,
                start_new_session=True,
                umask=0o077,
            )
        except OSError as exc:
            raise DatabaseUnavailable(f"could not start the embedded server's keeper: {exc}") from exc
    started = time.monotonic()
    deadline = started + 90.0  # the first start creates the user: two server starts
    old_start = previous["started_at"] if previous is not None else None
    while True:
        record = _read_record(path / _RECORD_NAME)
        if (
            record is not None
            and record["pid"] > 0
            and record["started_at"] != old_start
            and "user" in record  # not the record of the setup server that creates the user
            and _pid_alive(record["pid"])
            and _record_is_live(record)
        ):
            log.debug("embedded server ready in %.2f s", time.monotonic() - started)
            return record["url"]
        code = keeper.poll()
        if code is not None or time.monotonic() > deadline:
            if code is None:
                keeper.terminate()
            reason = f"exited with code {code}" if code is not None else "did not answer within 90 s"
            # One line (the CLI prints it as its error): the log's last line, and where the rest is.
            last = _tail(log_path, offset).splitlines()[-1].strip()
            raise DatabaseUnavailable(
                f"the embedded server could not start: its keeper {reason} ({last}); see {log_path}"
            )
        time.sleep(0.1)


def _keep(path: Path, port: int | None, linger: float) -> int:
    """The keeper process: run the server of ``path`` until it has had no user for ``linger`` s."""

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(0)  # runs the finally blocks below: the server stops gracefully

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    record = _read_record(path / _RECORD_NAME)
    if record is not None and "user" in record and "password" in record:
        credentials = (record["user"], record["password"])
    else:
        # First start (or a directory from a version without auth): create the user on a server
        # without --auth, bound to loopback and stopped again at once, then restart with --auth.
        credentials = (_USER, secrets.token_urlsafe(24))
        with EmbeddedServer(path, port=port) as setup:
            setup.create_user(*credentials)
            port = setup.port
        log.info("created the embedded server's user; its password is in %s", path / _RECORD_NAME)
    server = EmbeddedServer(path, port=port, credentials=credentials)
    users = os.open(path / _USERS_NAME, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    try:
        server.start()
        log.info("embedded server pid %s serving %s on port %s", server.pid, path, server.port)
        idle_since: float | None = None
        while server.running:
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                idle_since = None  # someone holds a lease
            else:
                now = time.monotonic()
                idle_since = now if idle_since is None else idle_since
                if now - idle_since >= linger:
                    # Stopped while holding the lock: a process that wants the server waits for the
                    # lock, then finds no live server and starts a new one.
                    log.info("no process has used the server for %g s; stopping it", linger)
                    server.stop()
                    return 0
                fcntl.flock(users, fcntl.LOCK_UN)
            time.sleep(0.2)
        log.warning("the embedded server exited on its own; the next process to need it starts it")
        return 1
    finally:
        server.stop()
        os.close(users)


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m agendapy.embedded",
        description="Run the shared embedded server of DATA_DIR until no process uses it.",
    )
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--linger", type=float, default=DEFAULT_LINGER)
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s agendapy keeper[%(process)d] %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )
    return _keep(options.data_dir.resolve(), options.port, options.linger)


def _record_is_live(record: _ServerRecord) -> bool:
    # The pid check alone could hit a recycled pid, the port check alone someone else's server.
    pid = record["pid"]
    return pid > 0 and _pid_alive(pid) and _probe(record["url"], timeout=2.0) == pid


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
    if not all(isinstance(data.get(name, ""), str) for name in ("user", "password")):
        return None
    return cast(_ServerRecord, data)


def _write_record(path: Path, record: _ServerRecord) -> None:
    temp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    _write_private(temp, json.dumps(record, indent=2) + "\n")
    os.replace(temp, path)  # readers see the old record or the new one, never half of one


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file that only the owner can read (0600 from its creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), _FILE_MODE)  # an existing file keeps its mode through O_CREAT
        f.write(text)


def _open_private_log(path: Path) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _FILE_MODE)
    os.fchmod(fd, _FILE_MODE)
    return os.fdopen(fd, "ab")


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)  # parents get the umask's mode
    os.chmod(path, _DIR_MODE)


def _restrict_tree(path: Path) -> None:
    """Make every directory under ``path`` 0700 and every file 0600 (data dirs of earlier versions)."""
    for root, dirs, files in os.walk(path):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), _DIR_MODE)
        for name in files:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), _FILE_MODE)


def _tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as exc:
        return f"(could not read the log: {exc})"
    tail = lines[-_LOG_TAIL_LINES:]
    return "\n".join(tail) if tail else "(the log is empty)"


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"


@contextlib.contextmanager
def _exclusive(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (released when the descriptor closes)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    try:
        _flock(fd, shared=False, timeout=timeout, what=path)
        yield
    finally:
        os.close(fd)


def _flock(fd: int, *, shared: bool, timeout: float, what: Path) -> None:
    if sys.platform == "win32":
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise DatabaseUnavailable(
                    f"another process has held {what} for {timeout:g} s while starting or stopping the "
                    "embedded server"
                ) from None
            time.sleep(_POLL_INTERVAL)


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


def _make_url(host: str, port: int, credentials: tuple[str, str] | None = None) -> str:
    shown = f"[{host}]" if ":" in host else host
    if credentials is None:
        return f"mongodb://{shown}:{port}/?directConnection=true"
    user, password = (quote(part, safe="") for part in credentials)
    return f"mongodb://{user}:{password}@{shown}:{port}/?directConnection=true&authSource=admin"


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

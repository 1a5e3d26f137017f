"""The SecantusDB child process: :class:`EmbeddedServer` starts it, waits until it answers and stops it."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from pymongo import MongoClient
from pymongo.errors import OperationFailure

from ..errors import AgendaError, DatabaseUnavailable
from .command import find_server_command
from .probe import _free_port, _port_open, _probe
from .state import (
    _CONFIG_NAME,
    _DIR_MODE,
    _LOG_NAME,
    _POLL_INTERVAL,
    _RECORD_NAME,
    _STORAGE_NAME,
    _make_private_dir,
    _make_url,
    _open_private_log,
    _read_record,
    _restrict_tree,
    _ServerRecord,
    _tail,
    _write_private,
    _write_record,
)
from .watchdog import _WATCHDOG

log = logging.getLogger("agendapy.embedded")

_LOG_ROTATE_BYTES = 5 * 1024 * 1024
_RESIGNAL_AFTER = 0.5
_PORT_ATTEMPTS = 3

_CONFIG_TEXT = """\
# Written by agendapy. It is passed to secantusd-py with --config, which turns off SecantusDB's
# auto-discovery of ./secantusd.toml, ~/.secantus/secantusd.toml and /etc/secantus/secantusd.toml.
# Command-line flags (host, port, storage path, log level, sync-on-commit) override this file.
"""


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

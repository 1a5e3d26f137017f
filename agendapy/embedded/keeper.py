"""The keeper: the detached process (``python -m agendapy.embedded``) that runs the shared server of one data
directory while any process holds a lease on it, and how a user finds its server or spawns a keeper.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import DatabaseUnavailable
from .locks import _exclusive
from .probe import _pid_alive, _port_is_free, _record_is_live
from .server import EmbeddedServer
from .state import (
    _FILE_MODE,
    _LOCK_NAME,
    _LOG_NAME,
    _RECORD_NAME,
    _USER,
    _USERS_NAME,
    DEFAULT_LINGER,
    _open_private_log,
    _read_record,
    _redact,
    _ServerRecord,
    _tail,
)

if sys.platform != "win32":
    import fcntl

log = logging.getLogger("agendapy.embedded")


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

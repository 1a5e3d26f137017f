"""Is a server alive, and whose is it: pids, ports and the ``hello`` probe."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from .state import _ServerRecord


def _record_is_live(record: _ServerRecord) -> bool:
    # The pid check alone could hit a recycled pid, the port check alone someone else's server.
    pid = record["pid"]
    return pid > 0 and _pid_alive(pid) and _probe(record["url"], timeout=2.0) == pid


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

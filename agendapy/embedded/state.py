"""The data directory of the embedded server: its layout, ``server.json``, the credentials' URL and the
owner-only permissions of everything in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import IO, NotRequired, TypedDict, cast
from urllib.parse import quote

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
_LOG_TAIL_LINES = 20
_POLL_INTERVAL = 0.05


class _ServerRecord(TypedDict):
    """The contents of ``server.json``."""

    pid: int  # the server's, 0 once it has stopped (the record keeps the port and the credentials)
    host: str
    port: int
    url: str  # with the password, when there is one: the file is 0600
    started_at: str
    user: NotRequired[str]
    password: NotRequired[str]


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


def _make_url(host: str, port: int, credentials: tuple[str, str] | None = None) -> str:
    shown = f"[{host}]" if ":" in host else host
    if credentials is None:
        return f"mongodb://{shown}:{port}/?directConnection=true"
    user, password = (quote(part, safe="") for part in credentials)
    return f"mongodb://{user}:{password}@{shown}:{port}/?directConnection=true&authSource=admin"

"""The ``flock`` helpers behind the leases (``users.lock``) and the start lock (``.lock``)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import DatabaseUnavailable
from .state import _FILE_MODE, _POLL_INTERVAL

if sys.platform != "win32":
    import fcntl


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

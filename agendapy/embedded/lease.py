"""Leases on the shared embedded server: :func:`ensure_embedded_server` and :class:`EmbeddedLease`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import cast

from ..errors import AgendaError
from .command import find_server_command
from .keeper import _find_or_start
from .locks import _flock
from .probe import _pid_alive
from .state import (
    _FILE_MODE,
    _RECORD_NAME,
    _USERS_NAME,
    DEFAULT_LINGER,
    _make_private_dir,
    _read_record,
    _redact,
)

log = logging.getLogger("agendapy.embedded")


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

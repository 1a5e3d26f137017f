"""Reaching PostgreSQL: what ``db=`` may be, and the connection pool made from it.

Every connection the pool hands out is in autocommit mode, so one statement is one transaction unless
a caller opens ``conn.transaction()``. Rows come as psycopg's default tuples; :func:`execute` runs a
statement on a cursor returning dicts (column name -> value). Statements
run often (claims, state writes) become server-side prepared statements after a few executions.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import weakref
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.abc import Buffer, Params
from psycopg.rows import DictRow, dict_row
from psycopg.types.datetime import TimestamptzLoader
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from ...errors import DatabaseUnavailable, InvalidInput

__all__ = [
    "PREPARE_THRESHOLD",
    "PgPool",
    "PostgresConnection",
    "execute",
    "is_connection_error",
    "redact_conninfo",
    "translate_unreachable",
    "unreachable",
]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("agendapy.store")
_pool_log = logging.getLogger("psycopg.pool")
#: The pools made here, by name: the pool logger's filter tells an outage of one of them from others'.
_OWN_POOLS: weakref.WeakValueDictionary[str, PostgresConnection] = weakref.WeakValueDictionary()
_POOL_NUMBERS = itertools.count(1)

#: Executions of one statement after which psycopg prepares it on the server.
PREPARE_THRESHOLD = 2
#: Seconds ``connect()`` waits for the first connection, and a request waits for a free one.
_CONNECT_TIMEOUT = 10.0
#: libpq's ``connect_timeout`` of the connections made here unless the URL sets one: a server that
#: accepts and never answers (hung, or a network path dropping packets) would otherwise hold each
#: attempt of the pool and of the listening connection for psycopg's default of 130 s.
_ATTEMPT_TIMEOUT = 5
_SCHEMES = ("postgresql://", "postgres://")

#: The pool type every module of this package uses.
PgPool = AsyncConnectionPool[Any]


async def execute(
    conn: AsyncConnection[Any], statement: str | sql.SQL | sql.Composed, params: Params | None = None
) -> AsyncCursor[DictRow]:
    """Run ``statement`` on a cursor of ``conn`` whose rows are dicts (whatever the pool's row factory)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(statement, params)
    return cur


def redact_conninfo(conninfo: str) -> str:
    """A URL or ``key=value`` connection string without its password, for messages."""
    text = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", conninfo)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means "cannot reach the server" (as opposed to a refused statement)."""
    return isinstance(exc, psycopg.OperationalError | PoolTimeout) and not isinstance(
        exc, psycopg.errors.QueryCanceled
    )


def unreachable(exc: BaseException, where: str | None = None) -> DatabaseUnavailable:
    """The error for "cannot reach the server" (``where``: the server, named without its password)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    at = f" at {where}" if where else ""
    return DatabaseUnavailable(f"cannot reach PostgreSQL{at}: {first}")


def translate_unreachable(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn psycopg's connection-class errors raised by ``fn`` into :class:`DatabaseUnavailable`, the
    error agendapy's callers know (the run path retries it, stops give up on it at once)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except psycopg.Error as exc:
            if is_connection_error(exc):
                raise unreachable(exc) from exc
            raise

    return wrapper


def _checked_url(url: str) -> str:
    if not url.startswith(_SCHEMES):
        raise InvalidInput("url", redact_conninfo(url), "must start with postgresql:// or postgres://")
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise InvalidInput("url", redact_conninfo(url), str(exc).strip()) from None
    return url


_MAX_DATE = datetime.max.replace(tzinfo=UTC)
_MIN_DATE = datetime.min.replace(tzinfo=UTC)


class _InfiniteDateLoader(TimestamptzLoader):
    """Loads ``'infinity'``/``'-infinity'`` (valid TIMESTAMPTZ values a row written by hand may hold,
    which psycopg refuses by default) as the latest and earliest dates Python has, so such a row reads
    as "never due" / "due since forever" instead of failing the whole listing or claim."""

    def load(self, data: Buffer) -> datetime:
        if data == b"infinity":
            return _MAX_DATE
        if data == b"-infinity":
            return _MIN_DATE
        return super().load(data)


async def _configure(conn: AsyncConnection[Any]) -> None:
    # Timestamps come back in UTC whatever the server's or role's default time zone.
    await conn.execute("SET TIME ZONE 'UTC'")
    conn.adapters.register_loader("timestamptz", _InfiniteDateLoader)


class _OneLinePerOutage(logging.Filter):
    """psycopg_pool logs a warning per failed connection attempt of a pool ("error connecting in
    'agendapy-1': ..."), several a second while the server is down. For the pools made here, the first
    one of an outage becomes one line of agendapy's and the rest are dropped; a connection made again
    ends the outage (see ``PostgresConnection._configure``). Other pools' records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "error connecting in %r: %s" or not isinstance(record.args, tuple):
            return True
        owner = _OWN_POOLS.get(str(record.args[0]))
        if owner is None:
            return True
        owner.outage_began(record.args[1])
        return False


_pool_log.addFilter(_OneLinePerOutage())


#: Seconds between the pool's reconnection attempts at most (psycopg_pool doubles its wait from 1 s
#: without bound, so after a 10 s outage the next attempt could come 8 s after the server was back).
_MAX_RECONNECT_DELAY = 1.0


class _PromptReconnection(AttemptWithBackoff):
    """Reconnection attempts 0.2 s, 0.4 s, 0.8 s, then every second while the server is away: a
    worker resumes within about a second of the server's return (its locks' renewal with it, so a
    short outage does not outlast a lock lifetime). The attempts are cheap (a refused connection) and
    their warnings are folded into one line per outage (``_OneLinePerOutage``)."""

    INITIAL_DELAY = 0.2

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, _MAX_RECONNECT_DELAY)


class _Pool(AsyncConnectionPool[Any]):
    """psycopg's pool with :class:`_PromptReconnection` (the only change)."""

    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        await super()._add_connection(
            attempt or _PromptReconnection(timeout=self.reconnect_timeout), growing=growing
        )


class PostgresConnection:
    """Where a store's database comes from: a pool, made on :meth:`open` or given.

    Args:
        source: a ``postgresql://`` or ``postgres://`` URL; an ``AsyncConnectionPool`` (used as given:
            it must make autocommit connections, and it is not closed here); or an
            ``AsyncConnection`` (its connection parameters, password included,
            are used to open a pool of this store's own).
        min_size, max_size: the size of a pool made here.

    A bad URL raises :class:`InvalidInput` naming ``url`` at once, before anything connects.
    """

    def __init__(self, source: Any, *, min_size: int = 1, max_size: int = 10) -> None:
        if not isinstance(min_size, int) or not isinstance(max_size, int) or not 0 <= min_size <= max_size:
            raise InvalidInput("max_size", max_size, f"must be a whole number >= min_size ({min_size})")
        if max_size < 1:
            raise InvalidInput("max_size", max_size, "must be at least 1")
        self._min_size, self._max_size = min_size, max_size
        self._unreachable = False
        self._pool: PgPool | None = None
        self._owns_pool = False
        self._conninfo: str | None = None
        if isinstance(source, str):
            self._conninfo = _checked_url(source)
        elif isinstance(source, AsyncConnectionPool):
            self._pool = source
        elif isinstance(source, AsyncConnection):
            # The connection's own parameters, password included (``info.dsn`` leaves it out).
            params = {
                opt.keyword.decode(): opt.val.decode()
                for opt in source.pgconn.info
                if opt.val is not None and opt.keyword is not None
            }
            self._conninfo = psycopg.conninfo.make_conninfo(**params)
        else:
            raise InvalidInput(
                "db", source, "must be a postgresql:// URL, an AsyncConnectionPool or an AsyncConnection"
            )

    @property
    def pool(self) -> PgPool:
        """The pool (after :meth:`open`)."""
        if self._pool is None:
            raise RuntimeError("the PostgreSQL connection is not open")
        return self._pool

    @property
    def owns_pool(self) -> bool:
        """Whether :meth:`close` closes the pool (it was made here)."""
        return self._owns_pool

    def describe(self) -> str:
        """Where this connection points, for messages (no password)."""
        if self._conninfo is not None:
            return redact_conninfo(self._conninfo)
        if self._pool is not None:
            conninfo = self._pool.conninfo
            return redact_conninfo(conninfo) if isinstance(conninfo, str) else "<PostgreSQL pool>"
        return "<PostgreSQL>"

    def unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        """The error for "cannot reach the server", naming it."""
        return unreachable(exc, self.describe())

    @staticmethod
    def _connection_kwargs(conninfo: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": PREPARE_THRESHOLD}
        if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(conninfo):
            kwargs["connect_timeout"] = _ATTEMPT_TIMEOUT
        return kwargs

    def outage_began(self, error: object) -> None:
        """The pool failed to connect: said once per outage (its retries are not)."""
        if not self._unreachable:
            self._unreachable = True
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            log.warning(
                "PostgreSQL at %s is unreachable (%s); reconnecting in the background", self.describe(), first
            )

    async def _configure(self, conn: AsyncConnection[Any]) -> None:
        await _configure(conn)
        if self._unreachable:
            self._unreachable = False
            log.info("PostgreSQL at %s is reachable again", self.describe())

    async def open(self) -> PgPool:
        """Make (or open) the pool and wait for a first connection; DatabaseUnavailable if none comes."""
        if self._pool is None:
            assert self._conninfo is not None
            self._pool = _Pool(
                self._conninfo,
                min_size=self._min_size,
                max_size=self._max_size,
                kwargs=self._connection_kwargs(self._conninfo),
                configure=self._configure,
                timeout=_CONNECT_TIMEOUT,
                open=False,
                name=f"agendapy-{next(_POOL_NUMBERS)}",
            )
            _OWN_POOLS[self._pool.name] = self
            self._owns_pool = True
        try:
            if self._owns_pool:
                await self._pool.open(wait=True, timeout=_CONNECT_TIMEOUT)
            else:
                await self._pool.open()  # a no-op when the caller opened it
            async with self._pool.connection() as conn:
                await conn.execute("SELECT 1")
                usable = conn.autocommit
        except (psycopg.OperationalError, PoolTimeout) as exc:
            await self.close()
            raise self.unavailable(exc) from exc
        if not usable:
            # Outside autocommit a pool rolls back what a connection returns inside a transaction:
            # writes would be lost. Refused rather than adapted, so the caller's pool stays as built.
            raise InvalidInput(
                "db",
                self.describe(),
                "the pool must make connections with autocommit=True "
                "(AsyncConnectionPool(url, kwargs={'autocommit': True}))",
            )
        return self._pool

    async def close(self) -> None:
        """Close the pool if it was made here (a given one stays open)."""
        pool, self._pool = self._pool, None
        if pool is not None and self._owns_pool:
            await pool.close()
            self._owns_pool = False
        elif pool is not None:
            self._pool = pool  # the caller's: keep it for a later open()

"""Reaching PostgreSQL: what ``db=`` may be, and the connection pool made from it.

Every connection the pool hands out is in autocommit mode, so one statement is one transaction unless
a caller opens ``conn.transaction()``. Rows come as psycopg's default tuples; :func:`execute` runs a
statement on a cursor returning dicts (column name -> value). Statements
run often (claims, state writes) become server-side prepared statements after a few executions.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.abc import Params
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ...errors import DatabaseUnavailable, InvalidInput

__all__ = [
    "PREPARE_THRESHOLD",
    "PgPool",
    "PostgresConnection",
    "execute",
    "is_connection_error",
    "redact_conninfo",
]

#: Executions of one statement after which psycopg prepares it on the server.
PREPARE_THRESHOLD = 2
#: Seconds ``connect()`` waits for the first connection, and a request waits for a free one.
_CONNECT_TIMEOUT = 10.0
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


def _checked_url(url: str) -> str:
    if not url.startswith(_SCHEMES):
        raise InvalidInput("url", redact_conninfo(url), "must start with postgresql:// or postgres://")
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise InvalidInput("url", redact_conninfo(url), str(exc).strip()) from None
    return url


async def _configure(conn: AsyncConnection[Any]) -> None:
    # Timestamps come back in UTC whatever the server's or role's default time zone.
    await conn.execute("SET TIME ZONE 'UTC'")


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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return DatabaseUnavailable(f"cannot reach PostgreSQL at {self.describe()}: {first}")

    async def open(self) -> PgPool:
        """Make (or open) the pool and wait for a first connection; DatabaseUnavailable if none comes."""
        if self._pool is None:
            assert self._conninfo is not None
            self._pool = AsyncConnectionPool(
                self._conninfo,
                min_size=self._min_size,
                max_size=self._max_size,
                kwargs={"autocommit": True, "prepare_threshold": PREPARE_THRESHOLD},
                configure=_configure,
                timeout=_CONNECT_TIMEOUT,
                open=False,
                name="agendapy",
            )
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

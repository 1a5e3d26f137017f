"""The job-log side of an ``Agenda``: whether a name is logged, the writer, and reading/clearing.

``Agenda``'s ``logging``, ``logs_job``, ``get_logs`` and ``clear_logs`` delegate here; the entries
themselves, their store and the buffered writer live in ``agendapy.joblogs``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from pymongo.errors import OperationFailure

from . import schedule as sched
from .definition import JobDefinition
from .events import EventEmitter
from .joblogs import JobLogsResult, JobLogWriter, LogQuery, LogStore, MongoLogStore
from .store.mongo import MongoJobStore

if TYPE_CHECKING:
    from .agenda import Agenda

__all__ = ["JobLogs", "log_query"]

log = logging.getLogger("agendapy")


def log_query(
    *,
    job_id: Any = None,
    job_name: str | None = None,
    level: str | Sequence[str] | None = None,
    event: str | Sequence[str] | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    limit: int = 50,
    offset: int = 0,
    sort: Literal["asc", "desc"] = "desc",
) -> LogQuery:
    """``get_logs``/``clear_logs``' keywords as a checked ``LogQuery`` (times as ``schedule.parse_when``)."""
    return LogQuery.build(
        job_id=job_id,
        job_name=job_name,
        level=level,
        event=event,
        since=None if since is None else sched.parse_when(since, field="since"),
        until=None if until is None else sched.parse_when(until, field="until"),
        limit=limit,
        offset=offset,
        sort=sort,
    )


class JobLogs:
    """Owns the job-log writer of one Agenda (created the first time any name is logged).

    Args:
        agenda: whose runs are logged (the writer reads its ``name`` and ``logs_job``; the store and
            the connection come from its public ``store`` and ``connect``).
        events: the Agenda's emitter, tapped by the writer.
        definitions: the Agenda's live definitions (read only: a name's ``logging`` override).
        enabled: the Agenda-wide ``logging`` setting.
        collection: the log collection's name (MongoDB stores).
        ttl: how long entries are kept (None: for ever).
        ensure_index: create the log's indexes before the first write.
    """

    def __init__(
        self,
        agenda: Agenda,
        events: EventEmitter,
        definitions: Mapping[str, JobDefinition],
        *,
        enabled: bool,
        collection: str,
        ttl: timedelta | None,
        ensure_index: bool,
    ) -> None:
        self._agenda = agenda
        self._events = events
        self._definitions = definitions
        self._collection = collection
        self._ttl = ttl
        self._ensure_index = ensure_index
        self._writer: JobLogWriter | None = None
        self._configured: tuple[Any, Any] | None = None
        self._enabled = False
        self.enabled = enabled

    @property
    def enabled(self) -> bool:
        """The Agenda-wide setting; turning it on starts the writer."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)
        if self._enabled:
            self.enable_writer()

    def enable_writer(self) -> None:
        """Start writing (once): some name is logged from now on."""
        if self._writer is None:
            lazy = _LazyLogStore(self._agenda.connect, self.store, ensure_index=self._ensure_index)
            self._writer = JobLogWriter(self._agenda, lazy)
            self._events.tap(self._writer.observe)

    def logs_job(self, name: str) -> bool:
        """Whether runs of ``name`` are logged: its definition says so, else the Agenda-wide setting."""
        definition = self._definitions.get(name)
        if definition is not None and definition.logging is not None:
            return definition.logging
        return self._enabled

    def store(self) -> LogStore:
        """The log store of the job store the Agenda uses now (its ``logs``, or a collection beside
        the jobs in MongoDB); a ``logs`` with ``configured(table=, ttl=)`` gets the Agenda's
        ``logs_collection`` and ``logs_ttl``."""
        store: Any = self._agenda.store
        if isinstance(store, MongoJobStore):
            return MongoLogStore(store.database[self._collection], ttl=self._ttl)
        logs = getattr(store, "logs", None)
        if logs is None:
            raise NotImplementedError(f"the job store {type(store).__name__} keeps no job logs")
        configured = getattr(logs, "configured", None)
        if configured is None:
            return cast(LogStore, logs)
        # A log store that takes the Agenda's table and TTL (PostgreSQL's). One per store's log
        # store, since it keeps state (when it last deleted expired entries).
        if self._configured is None or self._configured[0] is not logs:
            self._configured = (logs, configured(table=self._collection, ttl=self._ttl))
        return cast(LogStore, self._configured[1])

    async def flush(self, timeout: float | None = None) -> None:
        """Write what this process still buffers (nothing to do when nothing is logged)."""
        if self._writer is not None:
            await self._writer.flush(timeout=timeout)

    async def close(self, timeout: float) -> None:
        """Write what is buffered, for ``timeout`` seconds at most, and stop writing."""
        if self._writer is not None:
            await self._writer.close(timeout=timeout)

    async def query(self, query: LogQuery) -> JobLogsResult:
        """The matching entries, after this process's buffered ones are written."""
        await self._agenda.connect()
        await self.flush()
        return await self.store().query(query)

    async def clear(self, query: LogQuery) -> int:
        """Delete the matching entries (an empty query: all of them), buffered ones included."""
        await self._agenda.connect()
        await self.flush()
        unfiltered = query == LogQuery()
        return await self.store().clear(None if unfiltered else query)


class _LazyLogStore:
    """The log store of whatever database the Agenda ends up connected to (known only after connect)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[None]],
        resolve: Callable[[], LogStore],
        *,
        ensure_index: bool,
    ) -> None:
        self._connect = connect
        self._resolve = resolve
        self._ensure_index = ensure_index
        self._indexed = False

    async def _target(self) -> LogStore:
        await self._connect()
        target = self._resolve()
        if not self._indexed and self._ensure_index:
            try:
                await target.create_indexes()
            except OperationFailure as exc:
                # The server refused an index (say, a TTL it cannot change): log, and write anyway.
                log.warning("job log indexes not created: %s", exc)
            # A connection error propagates: the writer retries the batch, and the indexes with it.
            self._indexed = True
        return target

    async def create_indexes(self) -> None:
        await (await self._target()).create_indexes()

    async def write(self, docs: Sequence[dict[str, Any]]) -> None:
        await (await self._target()).write(docs)

    async def query(self, query: LogQuery) -> JobLogsResult:
        return await (await self._target()).query(query)

    async def clear(self, query: LogQuery | None) -> int:
        return await (await self._target()).clear(query)

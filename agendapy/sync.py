"""A blocking façade for synchronous code (Django, Flask, scripts): schedule and query jobs.

``SyncAgenda`` runs an ``Agenda`` on an event loop in a background daemon thread and exposes its
scheduling and querying methods as plain blocking calls, safe to call from any number of threads. It
does not process jobs: run workers with ``agendapy worker module:agenda`` (or ``run_due``).

    from agendapy.sync import SyncAgenda

    agenda = SyncAgenda("mongodb://localhost:27017/app")
    agenda.now("send email", {"to": "ada@example.com"})
    agenda.every("0 9 * * mon-fri", "daily report")
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar, Unpack, overload

from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database

from .agenda import Agenda, JobsResult, RunDueResult
from .errors import AgendaError, InvalidInput
from .filters import JobFilter
from .job import Job, JobState
from .joblogs import JobLogsResult
from .store.runs import RunRecord
from .workers import WorkerInfo

__all__ = ["SyncAgenda", "SyncAgendaClosed"]

log = logging.getLogger("agendapy")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class SyncAgendaClosed(AgendaError, RuntimeError):
    """The SyncAgenda was closed (or its process was forked after it was created)."""


def _async_source(db: Any) -> tuple[Any, AsyncMongoClient[Any] | None]:
    """What Agenda accepts: a synchronous PyMongo client or database becomes an async client with the
    same settings (owned, so closed with the SyncAgenda)."""
    if isinstance(db, MongoClient | Database):
        client = db if isinstance(db, MongoClient) else db.client
        settings = getattr(client, "_init_kwargs", None)
        if not isinstance(settings, dict):
            raise InvalidInput("db", db, "this MongoClient's settings cannot be read; pass a mongodb:// URL")
        native: AsyncMongoClient[Any] = AsyncMongoClient(**settings)
        return (native[db.name] if isinstance(db, Database) else native), native
    return db, None


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            if pending:
                # Let writes already under way land (a run's final state save), then cancel the rest.
                loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _shutdown(
    loop: asyncio.AbstractEventLoop,
    thread: threading.Thread,
    agenda: Agenda | None,
    client: AsyncMongoClient[Any] | None,
    timeout: float,
) -> None:
    """Close the Agenda (and an owned client) on the loop, then stop the loop and its thread."""
    if loop.is_closed() or not thread.is_alive():
        return
    if threading.current_thread() is thread:
        # Collected on its own loop (the last reference dropped in a handler): waiting would deadlock.
        loop.call_soon(loop.stop)
        return

    async def close() -> None:
        try:
            if agenda is not None:
                await agenda.close()
        finally:
            if client is not None:
                await client.close()

    try:
        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout)
    except Exception as exc:
        log.warning("closing the SyncAgenda's connection failed: %s", exc)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)


class SyncAgenda:
    """Blocking scheduling and querying on top of an :class:`~agendapy.Agenda`, for synchronous code.

    Every method blocks until the database has answered and returns what the async method returns; its
    exceptions (``ValueError`` for bad input, ``DatabaseUnavailable`` ...) are raised in the calling
    thread. Calls from several threads at once are safe. The connection opens on first use.

    Jobs are not processed here: run workers with the CLI (``agendapy worker module:agenda``) or call
    :meth:`run_due`. Jobs returned by these methods belong to the background loop: change one and pass
    it to :meth:`save`, rather than awaiting its own methods.

    Args:
        db: a ``mongodb://`` or ``postgresql://`` URL, a (sync) ``MongoClient`` or ``Database``, an
            ``AsyncMongoClient``, or any JobStore (e.g. ``agendapy.testing.MemoryJobStore``); None means
            ``$AGENDAPY_DATABASE_URL``, else ``$AGENDAPY_MONGO_URL``, else the embedded database.
        call_timeout: seconds a call may take before ``TimeoutError`` (None: no limit).
        **agenda_options: passed to :class:`~agendapy.Agenda` (``collection``, ``name`` ...).
    """

    def __init__(self, db: Any = None, *, call_timeout: float | None = None, **agenda_options: Any) -> None:
        if call_timeout is not None and not call_timeout > 0:
            raise InvalidInput("call_timeout", call_timeout, "must be a positive number of seconds or None")
        self._timeout = call_timeout
        self._pid = os.getpid()
        self._state_lock = threading.Lock()
        self._closed = False
        source, self._owned_client = _async_source(db)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=_run_loop, args=(self._loop,), name="agendapy-sync", daemon=True
        )
        self._thread.start()
        self._agenda: Agenda | None = None
        try:
            self._agenda = self._call(lambda: self._build(source, agenda_options))
        except BaseException:
            _shutdown(self._loop, self._thread, None, self._owned_client, 5.0)
            raise
        self._finalizer = weakref.finalize(
            self, _shutdown, self._loop, self._thread, self._agenda, self._owned_client, 10.0
        )

    @staticmethod
    async def _build(source: Any, options: Mapping[str, Any]) -> Agenda:
        # Built on the loop that will use it (its locks and the client bind to that loop).
        return Agenda(source, **options)

    @property
    def agenda(self) -> Agenda:
        """The underlying async Agenda (use it only from coroutines run on this SyncAgenda's loop)."""
        assert self._agenda is not None
        return self._agenda

    def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        if self._closed:
            raise SyncAgendaClosed("this SyncAgenda is closed")
        if os.getpid() != self._pid:
            raise SyncAgendaClosed(
                "this SyncAgenda was created before the process forked; its event loop thread does not "
                "survive a fork: create it in each worker process (lazily on first use, or in a "
                "post-fork hook)"
            )
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "SyncAgenda methods block, so they cannot run on its own event loop (e.g. inside an "
                "async job handler): use `await sync_agenda.agenda.<method>(...)` there"
            )

        async def run() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the agendapy call did not finish within {self._timeout} s") from None

    # -- lifecycle -------------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect now (otherwise the first call does); raises if the database cannot be reached."""
        self._call(self.agenda.connect)

    def close(self) -> None:
        """Close the connection and stop the background thread (safe to call twice)."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        if threading.current_thread() is self._thread:
            raise RuntimeError("SyncAgenda.close() cannot run on its own event loop")
        self._finalizer()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> SyncAgenda:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- definitions (for run_due and purge) -------------------------------------------------------

    @overload
    def define(self, name: str, fn: F, **options: Any) -> F: ...

    @overload
    def define(self, name: str, fn: None = None, **options: Any) -> Callable[[F], F]: ...

    def define(self, name: str, fn: Any = None, **options: Any) -> Any:
        """Register a handler, as :meth:`Agenda.define` (only :meth:`run_due` and :meth:`purge` use them)."""
        return self.agenda.define(name, fn, **options)

    # -- scheduling --------------------------------------------------------------------------------

    def create(self, name: str, data: Any = None) -> Job:
        """A new, unsaved job (due now); change it, then :meth:`save` it."""
        return self.agenda.create(name, data)

    def save(self, job: Job) -> Job:
        """Insert or update ``job`` (upsert for ``unique``/recurring jobs); returns it with its id."""
        return self._call(lambda: self.agenda.save_job(job))

    def now(self, name: str, data: Any = None) -> Job:
        """Run ``name`` as soon as a worker is free."""
        return self._call(lambda: self.agenda.now(name, data))

    def schedule(
        self,
        when: datetime | str,
        names: str | Sequence[str],
        data: Any = None,
        *,
        start_date: datetime | str | None = None,
        end_date: datetime | str | None = None,
        skip_days: Sequence[int] | None = None,
    ) -> Any:
        """Run ``names`` once at ``when`` (a datetime, or "in 20 minutes", "tomorrow at noon")."""
        return self._call(
            lambda: self.agenda.schedule(
                when, names, data, start_date=start_date, end_date=end_date, skip_days=skip_days
            )
        )

    def every(
        self,
        interval: Any,
        names: str | Sequence[str],
        data: Any = None,
        *,
        timezone: str | None = None,
        skip_immediate: bool = False,
        start_date: datetime | str | None = None,
        end_date: datetime | str | None = None,
        skip_days: Sequence[int] | None = None,
        fixed_delay: bool = False,
        misfire: Literal["once", "skip", "all"] | None = None,
        requires: Sequence[str] | None = None,
    ) -> Any:
        """Run ``names`` on a schedule (one recurring document per name; safe to call at every start)."""
        return self._call(
            lambda: self.agenda.every(
                interval,
                names,
                data,
                timezone=timezone,
                skip_immediate=skip_immediate,
                start_date=start_date,
                end_date=end_date,
                skip_days=skip_days,
                fixed_delay=fixed_delay,
                misfire=misfire,
                requires=requires,
            )
        )

    def now_debounced(
        self,
        name: str,
        data: Any,
        unique_key: Mapping[str, Any],
        delay: Any,
        *,
        max_wait: Any = None,
        strategy: Literal["trailing", "leading"] = "trailing",
    ) -> Job:
        """Save a job unique on ``unique_key`` whose rapid repeats merge into one run."""
        return self._call(
            lambda: self.agenda.now_debounced(
                name, data, unique_key, delay, max_wait=max_wait, strategy=strategy
            )
        )

    # -- querying and bulk changes ---------------------------------------------------------------

    def query_jobs(
        self,
        *,
        state: JobState | str | None = None,
        search: str | None = None,
        include_disabled: bool = True,
        sort: Mapping[str, Literal["asc", "desc"]] | None = None,
        skip: int = 0,
        limit: int = 0,
        **filters: Unpack[JobFilter],
    ) -> JobsResult:
        """Find jobs matching ``filters`` (``JobsResult(jobs, total)``); each job has its computed
        ``state``."""
        return self._call(
            lambda: self.agenda.query_jobs(
                state=state,
                search=search,
                include_disabled=include_disabled,
                sort=sort,
                skip=skip,
                limit=limit,
                **filters,
            )
        )

    def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        return self._call(lambda: self.agenda.get_job(job_id))

    def wait_for(self, job: Job | str, *, timeout: float | None = None) -> Job:
        """Block until ``job`` (or the job with this id) finishes its next run, in any process, and
        return it; raises ``JobFailed`` if that run failed (see :meth:`Agenda.wait_for`)."""
        return self._call(lambda: self.agenda.wait_for(job, timeout=timeout))

    def jobs_overview(self) -> list[dict[str, Any]]:
        """Per job name: ``total``, counts per state and ``paused``."""
        return self._call(self.agenda.jobs_overview)

    def cancel(
        self,
        **filters: Unpack[JobFilter],
    ) -> int:
        """Delete matching jobs; returns how many (no criteria: none)."""
        return self._call(lambda: self.agenda.cancel(**filters))

    def cancel_all(self) -> int:
        """Delete every job."""
        return self._call(self.agenda.cancel_all)

    def disable(
        self,
        **filters: Unpack[JobFilter],
    ) -> int:
        """Disable matching jobs; returns how many changed."""
        return self._call(lambda: self.agenda.disable(**filters))

    def enable(
        self,
        **filters: Unpack[JobFilter],
    ) -> int:
        """Enable matching jobs; returns how many changed."""
        return self._call(lambda: self.agenda.enable(**filters))

    def purge(self) -> int:
        """Delete the jobs whose names are not defined here (nothing if none is defined)."""
        return self._call(self.agenda.purge)

    # -- runs ---------------------------------------------------------------------------------------

    def runs(
        self,
        name: str | None = None,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        status: Literal["running", "succeeded", "failed", "skipped"] | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Run records, newest first."""
        return self._call(
            lambda: self.agenda.runs(name, since=since, until=until, status=status, limit=limit)
        )

    # -- job logs and workers ----------------------------------------------------------------------

    def get_logs(self, **query: Any) -> JobLogsResult:
        """Job log entries (``Agenda.get_logs``, the same keyword filters)."""
        return self._call(lambda: self.agenda.get_logs(**query))

    def clear_logs(self, **query: Any) -> int:
        """Delete job log entries (``Agenda.clear_logs``, the same keyword filters)."""
        return self._call(lambda: self.agenda.clear_logs(**query))

    def workers(self, *, include_stopped: bool = False) -> list[WorkerInfo]:
        """The registered worker processes (``Agenda.workers``)."""
        return self._call(lambda: self.agenda.workers(include_stopped=include_stopped))

    def run_due(self, names: Sequence[str] | None = None) -> RunDueResult:
        """Run the jobs due now (of ``names`` or every defined name) and wait for them: for cron scripts."""
        return self._call(lambda: self.agenda.run_due(names))

"""The public façade: ``Agenda`` defines handlers, schedules jobs, queries them and runs a worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, TypeVar, Unpack, cast, overload

from . import schedule as sched
from .bulk import check_new_jobs, one_per_name
from .connections import DefaultDatabase
from .definition import Handler, JobDefinition
from .errors import InvalidInput, JobNotFound, NotRunning, WorkerStartFailed
from .events import EventEmitter
from .filters import JobFilter, job_criteria
from .fleet_events import FleetEvents
from .fork import ForkMethod
from .history import check_runs_query
from .job import Job, JobState
from .job_checks import apply_constraints, check_every_options, check_savable, insertable_due
from .job_logs_service import JobLogs, log_query
from .job_queries import checked_query, find_jobs
from .joblogs import DEFAULT_LOGS_COLLECTION, JobLogsResult, LogStore
from .local_stats import local_status, running_stats
from .options import AgendaOptions, DefineOptions, Duration, job_definition
from .results import JobsResult, RunDueResult, RunningStats
from .run import keep_trying, run_job
from .run_due import RunDue, due_names, run_due_result
from .store.base import JobStore
from .store.runs import RunRecord
from .store_source import PendingStore, StoreSettings
from .validate import check_bson, check_id, check_job_name, check_name_list
from .wait import check_run_succeeded, wait_for_run
from .worker import DrainResult, Worker
from .worker_context import WorkerContext
from .worker_registry import WorkerRegistry, package_version
from .workers import DEFAULT_ACTIVITY_COLLECTION, DEFAULT_WORKERS_COLLECTION, WorkerInfo, default_worker_name

__all__ = ["Agenda", "DrainResult", "JobsResult", "RunDueResult", "RunningStats"]

log = logging.getLogger("agendapy")
#: Seconds the goodbye in the workers list and the last job log write get once processing stopped.
_AFTER_STOP_TIMEOUT = 1.0

F = TypeVar("F", bound=Callable[..., Any])
IntervalInput = str | int | float | timedelta | Mapping[str, float]


class Agenda:
    """Schedules jobs in MongoDB or PostgreSQL and runs the ones this process defines.

    Args:
        db: where the jobs live. MongoDB: a ``mongodb://``/``mongodb+srv://`` URL (the database comes
            from its path), an ``AsyncMongoClient``, an ``AsyncDatabase`` or a Motor client.
            PostgreSQL (needs the ``postgres`` extra): a ``postgresql://``/``postgres://`` URL, a
            psycopg ``AsyncConnectionPool`` or ``AsyncConnection`` (not closed by ``close()``). Or any
            ``JobStore`` implementation, used as it is (the naming and history settings then belong
            to that store, e.g. ``agendapy.testing.MemoryJobStore``). None means
            ``$AGENDAPY_DATABASE_URL``, else ``$AGENDAPY_MONGO_URL``, else the embedded database
            (needs the ``embedded`` extra) with its files in ``.agendapy/db``.
        collection: the jobs collection (Agenda's ``agendaJobs``; MongoDB only).
        table: the jobs table (PostgreSQL only; default ``agenda_jobs``, Node Agenda's postgres
            backend's). ``collection`` and ``database`` raise ``InvalidInput`` when changed on
            PostgreSQL, and ``table`` does on MongoDB; ``runs_collection``, ``logs_collection``,
            ``workers_collection`` and ``activity_collection`` name tables there once changed (their
            defaults stand for ``agendapy_runs``, ``agenda_logs``, ``agendapy_workers`` and
            ``agendapy_activity``).
        name: this worker's name, written to ``lastModifiedBy`` and to the workers list; when not
            given, ``start()`` names it ``<host>-<pid>`` (each process needs its own: a lost worker's
            jobs are found by its name).
        process_every: how often to look for due jobs ("5 seconds", seconds, or a timedelta).
        max_concurrency: runs at once in this process, over all names.
        default_concurrency: runs at once per name, unless ``define`` says otherwise.
        lock_limit: jobs this process may hold locked at once (0 = no fixed limit).
        default_lock_limit: per name, unless ``define`` says otherwise (0 = no fixed limit).
        default_lock_lifetime: how long a lock lasts without renewal before another worker may take the
            job over; running jobs renew theirs automatically.
        remove_on_complete: delete one-off jobs after they succeed.
        database: the database name when ``db`` does not name one (MongoDB only).
        ensure_index: create the indexes on connect (PostgreSQL: create and migrate the tables).
        history: which runs ``agenda.runs()`` records: "all", "recurring" (default) or "none"
            (once-per-interval runs are always recorded: the record is their guard).
        history_ttl: how long run records are kept (a TTL index).
        history_keep: at most this many records per job name.
        runs_collection: the run records' collection.
        dependency_check_every: how often a job waiting for its ``requires`` checks again
            (default: ``process_every``).
        change_streams: wake up at once when a job becomes due, through a change stream (MongoDB:
            needs a replica set) or ``LISTEN/NOTIFY`` (PostgreSQL); without one, or when it fails,
            polling carries on alone.
        state_write_window: how long the start and final writes of runs gather before they go to
            the database together (default 5 ms; 0: only those issued in the same event-loop turn).
            Longer windows mean fewer writes per job when many jobs run, and add up to the window
            to each run's start.
        fleet_events: also emit the ``start``, ``progress``, ``success``, ``fail``, ``complete`` and
            ``retry`` events of runs in other processes (read from a change stream once started, or,
            where there is none, from a capped collection every worker with this option writes to;
            the job passed has ``job.remote`` True and ``job.worker``). See ``agendapy.fleet_events``.
        fork_method: how forked jobs (``define(..., fork=True)``) start their child process:
            "forkserver" (default where available: cheap) or "spawn" (a fresh interpreter).
        logging: write Agenda 6.2's job lifecycle log (``agenda_logs``) for every job name
            (``define(..., logging=...)`` overrides it per name); read it with ``get_logs``.
        logs_collection: the job log's collection.
        logs_ttl: how long log entries are kept (a TTL index; None keeps them, as Agenda does).
        workers_collection: where started workers register themselves (``agenda.workers()``).
        activity_collection: per-minute counters of the fleet (runs done and failed, queue depth),
            added to by every worker's heartbeat (``agenda.activity()``, the dashboard's charts).
        heartbeat_every: how often a started worker refreshes its entry there; it reads as lost
            after three missed refreshes.
    """

    def __init__(
        self,
        db: Any = None,
        *,
        collection: str = "agendaJobs",
        table: str | None = None,
        name: str | None = None,
        process_every: Duration = "5 seconds",
        max_concurrency: int = 20,
        default_concurrency: int = 5,
        lock_limit: int = 0,
        default_lock_limit: int = 0,
        default_lock_lifetime: Duration = "10 minutes",
        remove_on_complete: bool = False,
        database: str | None = None,
        ensure_index: bool = True,
        history: Literal["all", "recurring", "none"] = "recurring",
        history_ttl: Duration = "30 days",
        history_keep: int = 1000,
        runs_collection: str = "agendaRuns",
        dependency_check_every: Duration | None = None,
        change_streams: bool = True,
        state_write_window: Duration = 0.005,
        fleet_events: bool = False,
        fork_method: ForkMethod | None = None,
        logging: bool = False,
        logs_collection: str = DEFAULT_LOGS_COLLECTION,
        logs_ttl: Duration | None = "14 days",
        workers_collection: str = DEFAULT_WORKERS_COLLECTION,
        activity_collection: str = DEFAULT_ACTIVITY_COLLECTION,
        heartbeat_every: Duration = "5 seconds",
    ) -> None:
        self.name = name
        self.options = options = AgendaOptions.convert(
            process_every=process_every,
            max_concurrency=max_concurrency,
            default_concurrency=default_concurrency,
            lock_limit=lock_limit,
            default_lock_limit=default_lock_limit,
            default_lock_lifetime=default_lock_lifetime,
            remove_on_complete=remove_on_complete,
            history=history,
            history_ttl=history_ttl,
            history_keep=history_keep,
            dependency_check_every=dependency_check_every,
            change_streams=change_streams,
            state_write_window=state_write_window,
            fork_method=fork_method,
            fleet_events=fleet_events,
            logging=logging,
            logs_collection=logs_collection,
            logs_ttl=logs_ttl,
            workers_collection=workers_collection,
            activity_collection=activity_collection,
            heartbeat_every=heartbeat_every,
        )
        # The settings the worker reads, as attributes (``agenda.process_every`` ...).
        self.process_every = options.process_every
        self.max_concurrency = options.max_concurrency
        self.default_concurrency = options.default_concurrency
        self.lock_limit = options.lock_limit
        self.default_lock_limit = options.default_lock_limit
        self.default_lock_lifetime = options.default_lock_lifetime
        self.remove_on_complete = options.remove_on_complete
        self.history = options.history
        self.dependency_check_every = options.dependency_check_every
        self.change_streams = options.change_streams
        self.state_write_window = options.state_write_window
        self.fork_method = options.fork_method
        self.fleet_events = options.fleet_events
        self._finished_runs = 0
        self._fleet: FleetEvents | None = None
        self._stores = StoreSettings(
            collection=collection,
            database=database,
            ensure_indexes=ensure_index,
            runs_collection=runs_collection,
            history_ttl=options.history_ttl,
            history_keep=options.history_keep,
            table=table,
            logs_collection=options.logs_collection,
            workers_collection=options.workers_collection,
            activity_collection=options.activity_collection,
        )
        self._db_source = db
        self._store: JobStore = self._store_for(db) if db is not None else cast(JobStore, PendingStore())
        self._definitions: dict[str, JobDefinition] = {}
        self._events = EventEmitter()
        self._processor: Worker | None = None
        self._stopping: Worker | None = None
        self._connected = False
        self._connect_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._default_database = DefaultDatabase()
        self.heartbeat_every = options.heartbeat_every
        self._job_logs = JobLogs(
            self,
            self._events,
            self._definitions,
            enabled=options.logging,
            collection=options.logs_collection,
            ttl=options.logs_ttl,
            ensure_index=ensure_index,
        )
        self._registry = WorkerRegistry(
            self,
            self._events,
            workers_collection=options.workers_collection,
            activity_collection=options.activity_collection,
        )

    def _store_for(self, db: Any) -> JobStore:
        return self._stores.store_for(db, state_write_window=self.state_write_window)

    # -- connection ------------------------------------------------------------------------------

    def set_database(self, db: Any) -> None:
        """Point this Agenda at another database before it connects (the CLI's ``--database-url``);
        ``db`` is anything the constructor's ``db`` accepts."""
        if self._connected:
            raise RuntimeError("set_database must be called before the Agenda connects")
        self._db_source = db
        self._store = self._store_for(db)

    @property
    def store(self) -> JobStore:
        """The job store (MongoDB, PostgreSQL, or the ``JobStore`` given as ``db``)."""
        return self._store

    async def connect(self) -> None:
        """Connect and create indexes (done by any method that needs the database); emits ``ready``."""
        async with self._connect_lock:
            if self._connected:
                return
            if self._db_source is None:
                url = await self._default_database.url()
                self._store = self._store_for(url)
            # A name given to the constructor goes into every write: refused before connecting.
            self._check_worker_name()
            await self._store.connect()
            await self._registry.create_tables()
            self._connected = True
        await self._events.emit("ready")

    async def close(self) -> None:
        """Stop processing (if started), close the connection and leave the embedded server (it stops
        shortly after the last process using it has left)."""
        await self.stop()
        await self._job_logs.close(timeout=2.0)
        await self._default_database.stop_watching()
        try:
            if self._connected:
                # Marked closed first: a caller that gives up on a silent server (the CLI's worker,
                # bounded by its grace period) must not wait for it again in a second close().
                self._connected = False
                await self._store.close()
        finally:
            self._default_database.release()

    async def __aenter__(self) -> Agenda:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- definitions ------------------------------------------------------------------------------

    @overload
    def define(self, name: str, fn: F, **options: Unpack[DefineOptions]) -> F: ...

    @overload
    def define(self, name: str, fn: None = None, **options: Unpack[DefineOptions]) -> Callable[[F], F]: ...

    def define(self, name: str, fn: Any = None, **options: Unpack[DefineOptions]) -> Any:
        """Register the handler of a job name; as ``@agenda.define("name", ...)`` it decorates it.

        Options (see ``DefineOptions``): ``concurrency``, ``lock_limit``, ``lock_lifetime``,
        ``priority``, ``backoff``, ``remove_on_complete``, ``timeout`` (a run longer than this
        fails), ``once_per_interval`` (each interval of a recurring schedule runs at most once across
        all workers), ``history`` (record every run in ``agenda.runs()``; default: the Agenda's
        ``history`` setting), ``fork`` (run each job in a child process that imports ``fn`` by its
        module path: ``fn`` must be a module-level function outside ``__main__``), ``logging``
        (write this name's job log; default: the Agenda's ``logging`` setting).
        """
        if fn is None:

            def decorate(handler: F) -> F:
                self._define(name, handler, options)
                return handler

            return decorate
        self._define(name, fn, options)
        return fn

    def _define(self, name: str, fn: Handler, options: DefineOptions) -> None:
        definition = job_definition(
            name,
            fn,
            options,
            concurrency=self.default_concurrency,
            lock_limit=self.default_lock_limit,
            lock_lifetime=self.default_lock_lifetime,
            remove_on_complete=self.remove_on_complete,
        )
        if name in self._definitions:
            log.debug("redefining job %r", name)
        self._definitions[name] = definition
        if definition.logging:
            self._job_logs.enable_writer()

    @property
    def definitions(self) -> Mapping[str, JobDefinition]:
        """The job names this process can run, with their options."""
        return dict(self._definitions)

    # -- events ------------------------------------------------------------------------------------

    def on(self, event: str, listener: Callable[..., Any] | None = None) -> Any:
        """Listen to an event (``start``, ``fail:send email`` ...); without a listener, a decorator."""
        return self._events.on(event, listener)

    def once(self, event: str, listener: F) -> F:
        """Listen to the next emission of an event only."""
        return self._events.once(event, listener)

    def off(self, event: str, listener: Callable[..., Any] | None = None) -> None:
        """Remove a listener (or all listeners of the event)."""
        self._events.off(event, listener)

    async def _emit_error(self, error: BaseException) -> None:
        if self._events.listener_count("error") == 0:
            log.error(
                "agendapy error: %s", error, exc_info=error if log.isEnabledFor(logging.DEBUG) else None
            )
            return
        await self._events.emit("error", error)

    # -- creating and scheduling -----------------------------------------------------------------

    def create(self, name: str, data: Any = None) -> Job:
        """A new, unsaved job of ``name`` (due now), with the definition's priority."""
        check_job_name(name)
        check_bson(data)
        definition = self._definitions.get(name)
        return Job(
            name=name,
            data=data,
            priority=definition.priority if definition else 0,
            next_run_at=sched.utcnow(),
            agenda=self,
        )

    async def every(
        self,
        interval: IntervalInput,
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
        """Run ``names`` on a schedule: one recurring document per name, kept across restarts.

        ``interval``: a human string ("3 minutes"), seconds, a timedelta, an ISO-8601 duration ("PT15M"),
        a mapping ({"minutes": 15}) or a cron expression (5 fields, or 6 with seconds first).
        ``fixed_delay``: the next run starts ``interval`` after the previous one finished (runs never
        overlap; a duration, not cron). ``misfire``: what to do about ticks missed while no worker ran
        ("once": one catch-up run, the default; "skip"; "all"). ``requires``: job names whose runs must
        have succeeded for this run's whole interval first (the job waits, visibly, until they have).

        Returns the Job, or a list of Jobs when ``names`` is a list.
        """
        name_list = check_name_list(names)
        required = check_every_options(interval, fixed_delay=fixed_delay, misfire=misfire, requires=requires)
        jobs = []
        for name in name_list:
            job = self.create(name, data)
            job.type = "single"
            job.fixed_delay = bool(fixed_delay)
            job.misfire = misfire
            job.requires = required
            apply_constraints(job, start_date, end_date, skip_days)
            job.repeat_every(interval, timezone=timezone, skip_immediate=skip_immediate)
            jobs.append(job)
        for job in jobs:
            await self.save_job(job)
        return jobs if not isinstance(names, str) else jobs[0]

    async def schedule(
        self,
        when: datetime | str,
        names: str | Sequence[str],
        data: Any = None,
        *,
        start_date: datetime | str | None = None,
        end_date: datetime | str | None = None,
        skip_days: Sequence[int] | None = None,
    ) -> Any:
        """Run ``names`` once at ``when``: a datetime (naive = UTC) or "in 20 minutes", "tomorrow at noon"."""
        name_list = check_name_list(names)
        jobs = []
        for name in name_list:
            job = self.create(name, data)
            apply_constraints(job, start_date, end_date, skip_days)
            job.schedule(when)
            jobs.append(job)
        for job in jobs:
            await self.save_job(job)
        return jobs if not isinstance(names, str) else jobs[0]

    async def now(self, name: str, data: Any = None) -> Job:
        """Run ``name`` as soon as a worker is free (this one, if started with a free slot for it: the
        job is then locked and started before this returns)."""
        job = self.create(name, data)
        await self.save_job(job)
        return job

    async def now_debounced(
        self,
        name: str,
        data: Any,
        unique_key: Mapping[str, Any],
        delay: Duration,
        *,
        max_wait: Duration | None = None,
        strategy: Literal["trailing", "leading"] = "trailing",
    ) -> Job:
        """Save a job unique on ``unique_key`` whose rapid repeats merge into one run (nowDebounced)."""
        job = self.create(name, data)
        try:
            job.unique(unique_key)
        except InvalidInput as exc:
            raise type(exc)("unique_key", unique_key, exc.reason) from None
        job.debounce(delay, max_wait=max_wait, strategy=strategy)
        await self.save_job(job)
        return job

    async def insert_many(self, jobs: Sequence[Job]) -> list[Job]:
        """Save many new jobs in one round trip (plain one-off or recurring jobs made by ``create``;
        not ``unique``/``every`` jobs, which need an upsert each)."""
        checked = check_new_jobs(jobs)
        for job in checked:
            job.agenda = self
        await self.connect()
        await self._store.insert_many(checked, last_modified_by=self.name)
        for job in one_per_name(checked):
            self._wake_for(job)
        return checked

    async def now_many(self, name: str, datas: Sequence[Any]) -> list[Job]:
        """``now(name, data)`` for each data, in one round trip."""
        return await self.insert_many([self.create(name, data) for data in datas])

    async def schedule_many(self, when: datetime | str, name: str, datas: Sequence[Any]) -> list[Job]:
        """``schedule(when, name, data)`` for each data, in one round trip."""
        at = sched.parse_when(when, field="when")
        return await self.insert_many([self.create(name, data).schedule(at) for data in datas])

    async def save_job(self, job: Job) -> Job:
        """Validate and write ``job`` (what ``job.save()`` calls); wakes this worker if it is due soon."""
        check_savable(job)
        job.agenda = self
        await self.connect()
        now = sched.utcnow()
        processor = self._processor
        if processor is not None and insertable_due(job, now):
            # A new job due now may be inserted already locked by this worker and started at once.
            store, by = self._store, self.name

            async def write(token: str | None) -> Job | None:
                return await store.save_job(job, now=now, last_modified_by=by, lock_token=token)

            if await processor.save_on_the_fly(job.name, write):
                return job
        else:
            await self._store.save_job(job, now=now, last_modified_by=self.name)
        self._wake_for(job)
        return job

    def _wake_for(self, job: Job) -> None:
        if self._processor is None or job.name not in self._definitions or job.next_run_at is None:
            return
        if job.next_run_at <= sched.utcnow() + self.process_every:
            self._processor.wake()

    # -- querying and bulk changes -----------------------------------------------------------------

    async def query_jobs(
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
        """Find jobs matching the filter keywords (``id``, ``ids``, ``name``, ``names``,
        ``not_names``, ``data``: see ``JobFilter``) and, with ``state``, in that state; ``search``
        matches part of the name. Each returned job has its computed ``job.state``."""
        query, wanted = checked_query(
            filters,
            state=state,
            search=search,
            include_disabled=include_disabled,
            sort=sort,
            skip=skip,
            limit=limit,
        )
        await self.connect()
        jobs, total = await find_jobs(self._store, query, wanted)
        for job in jobs:
            job.agenda = self
        return JobsResult(jobs=jobs, total=total)

    async def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        job_id = str(check_id(job_id))
        await self.connect()
        job = await self._store.get_job(job_id)
        if job is not None:
            job.agenda = self
        return job

    async def jobs_overview(self) -> list[dict[str, Any]]:
        """Per job name: ``total`` and counts per state (running, scheduled, queued, completed, failed,
        repeating) and ``paused`` (disabled)."""
        await self.connect()
        return await self._store.overview(sched.utcnow())

    async def cancel(
        self,
        **filters: Unpack[JobFilter],
    ) -> int:
        """Delete the jobs matching the filter keywords (``id``, ``ids``, ``name``, ``names``,
        ``not_names``, ``data``: see ``JobFilter``); returns how many. With no filter nothing is
        deleted (use cancel_all)."""
        criteria = job_criteria(filters, method="cancel")
        await self.connect()
        return await self._store.remove(criteria)

    async def cancel_all(self) -> int:
        """Delete every job in the collection."""
        await self.connect()
        return await self._store.remove_all()

    async def purge(self) -> int:
        """Delete the jobs whose names this process does not define (nothing if it defines none)."""
        if not self._definitions:
            return 0
        return await self.cancel(not_names=list(self._definitions))

    async def disable(
        self,
        **filters: Unpack[JobFilter],
    ) -> int:
        """Disable the jobs matching the filter keywords (``id``, ``ids``, ``name``, ``names``,
        ``not_names``, ``data``: see ``JobFilter``); they are never locked while disabled. Returns
        how many changed."""
        criteria = job_criteria(filters, method="disable")
        await self.connect()
        return await self._store.set_disabled(criteria, True)

    async def enable(
        self,
        **filters: Unpack[JobFilter],
    ) -> int:
        """Enable the jobs matching the filter keywords (``id``, ``ids``, ``name``, ``names``,
        ``not_names``, ``data``: see ``JobFilter``); returns how many changed."""
        criteria = job_criteria(filters, method="enable")
        await self.connect()
        changed = await self._store.set_disabled(criteria, False)
        if changed and self._processor is not None:
            self._processor.wake()
        return changed

    # -- processing ------------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether ``connect()`` has run (and ``close()`` has not since)."""
        return self._connected

    @property
    def is_running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._processor is not None

    async def start(self) -> None:
        """Connect, emit ``worker start``, and start claiming and running the defined jobs (safe to call
        twice).

        Returns once the first claim pass is over: every job due by then is locked by this worker and
        running, up to ``max_concurrency``, each name's ``concurrency`` and the lock limits (due jobs
        beyond them stay queued or are left for the next pass and for other workers). A database that
        does not answer holds it up 3 seconds at most; the pass then goes on in the background.
        """
        async with self._start_lock:
            if self._processor is not None:
                return
            await self.connect()
            if self.name is None:
                # Locks name their holder, so a worker that dies can be told apart from its peers.
                self.name = default_worker_name()
            self._check_worker_name()
            # Before the first claim, so what the listeners schedule is due in the first pass. Only a
            # process that runs jobs gets here: listings and the dashboard connect, never start.
            # Nothing is claimed or registered yet, so a listener that raises leaves nothing to undo.
            await self._emit_worker_start()
            # Fleet events before the first claim and (in stop) after the last run: the runs of the
            # first pass and of the stop's grace are heard and, without change streams, published.
            if self.fleet_events and self._fleet is None:
                self._fleet = FleetEvents(self.worker_context(), self._running_jobs, self._claiming_tokens)
                await self._fleet.start()
            self._processor = processor = Worker(self.worker_context())
            self._registry.count_runs(every=self.heartbeat_every)
            await processor.start()
            await self._registry.register(every=self.heartbeat_every)

    def _check_worker_name(self) -> None:
        """Refuse a worker name the store cannot record (PostgreSQL: Node's VARCHAR(255) column), before
        anything is claimed: otherwise every claim would fail and the worker would retry forever."""
        check = getattr(self._store, "check_worker_name", None)
        if check is not None:
            check(self.name)

    async def _emit_worker_start(self) -> None:
        """Emit ``worker start``; a listener that raises fails the start (it is the set-up of the jobs
        this process runs: a worker without it would idle forever with nothing scheduled)."""
        try:
            await self._events.emit("worker start", propagate=True)
        except Exception as exc:
            raise WorkerStartFailed(exc) from exc

    async def stop(self, grace: float = 8.0) -> None:
        """Stop claiming, unlock what is held but not running, let running jobs finish for ``grace``
        seconds, then cancel them and unlock them for another worker. The connection stays open."""
        processor, self._processor = self._processor, None
        if processor is None:
            processor = self._stopping
            if processor is not None and grace <= 0:
                processor.hurry()
            if processor is None:
                await self._stop_fleet()
            return
        self._stopping = processor
        try:
            if grace <= 0:
                processor.hurry()
            await processor.stop(grace)
        finally:
            self._stopping = None
            await self._stop_fleet()
            # A short grace is a tight budget (the CLI's SIGTERM): the goodbye gets its share of it.
            await self._after_processing(timeout=min(_AFTER_STOP_TIMEOUT, max(grace / 2, 0.25)))

    async def _stop_fleet(self) -> None:
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            await fleet.stop()

    def hurry_stop(self) -> None:
        """Make a graceful stop in progress cancel its running jobs now (the CLI's second signal)."""
        if self._stopping is not None:
            self._stopping.hurry()

    async def drain(self, timeout: float | None = None) -> DrainResult:
        """Stop claiming and wait (up to ``timeout`` seconds) for the running jobs to finish.

        Exactly what it waits for: the runs that had started when ``drain()`` was called, including
        every job that ``start()``'s first claim pass could start (due, within ``max_concurrency`` and
        each name's ``concurrency``) and every job this worker saved due now while it had a free slot
        for it (locked on the fly: started before ``now()`` returned). It starts nothing new: jobs this
        worker had locked but not started (waiting for a slot or for their time) are unlocked for other
        workers, and a claim pass under way is abandoned (what it locked is unlocked). Retries that a
        failed run schedules are left for later workers too.

        Returns:
            ``DrainResult(completed, running, timed_out)``: runs that finished during the drain, runs
            still going at the timeout, and whether it timed out (then the agenda keeps running and
            ``stop()`` ends it; otherwise it is stopped and ``start()`` may be called again).
        """
        processor = self._processor
        if processor is None:
            return DrainResult(completed=0, running=0, timed_out=False)
        result = await processor.drain(timeout)
        if not result.timed_out:
            self._processor = None
            await self._after_processing()
        return result

    async def run_due(self, names: Sequence[str] | None = None) -> RunDueResult:
        """Run every job due now (of ``names``, or of every defined name) under the same locks as a
        worker, wait for them, and report: for crontab, Kubernetes CronJobs and serverless functions."""
        wanted = due_names(self._definitions, names)
        await self.connect()
        await self._emit_worker_start()
        return run_due_result(await RunDue(self.worker_context(), wanted).run(sched.utcnow()))

    async def running_stats(self, full: bool = False) -> RunningStats:
        """What this worker holds and runs (Agenda's getRunningStats); raises NotRunning before start."""
        processor = self._processor
        if processor is None:
            raise NotRunning("agenda not running!")
        return running_stats(
            processor,
            self._definitions,
            full=full,
            version=package_version(),
            queue_name=self.name,
            total_queue_size=await self._store.queue_size(sched.utcnow()),
            lock_limit=self.lock_limit,
            max_concurrency=self.max_concurrency,
            process_every=self.process_every,
        )

    async def wait_for(self, job: Job | str, *, timeout: float | None = None) -> Job:
        """Wait until ``job`` (a Job or its id) finishes its next run, here or in any other process.

        Returns the finished job; raises :class:`JobFailed` (with the ``reason``) if that run failed,
        ``TimeoutError`` after ``timeout`` seconds. A one-off job that already finished answers at once;
        a recurring one (or one waiting for a retry) waits for its next run to end. Completions arrive
        as events (this process's runs, and other processes' with ``fleet_events=True``); the
        document is also read every ``process_every`` (at least 0.1 s, at most 5 s), so a missed event
        only delays the answer.
        """
        job_id = str(check_id(job.id if isinstance(job, Job) else job, field="job"))
        await self.connect()
        poll = min(max(self.process_every.total_seconds(), 0.1), 5.0)
        result = await wait_for_run(self._store, self._events, job_id, poll=poll, timeout=timeout)
        result.agenda = self
        return check_run_succeeded(result)

    # -- run history -----------------------------------------------------------------------------------

    async def runs(
        self,
        name: str | None = None,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        status: Literal["running", "succeeded", "failed", "skipped"] | None = None,
        limit: int = 100,
        job_id: str | None = None,
    ) -> list[RunRecord]:
        """Run records, newest first: interval, started, finished, status, error, worker
        (of one job name, or one job document with ``job_id``)."""
        query = check_runs_query(name, since=since, until=until, status=status, limit=limit, job_id=job_id)
        await self.connect()
        return await self._store.runs.query(**vars(query))

    def _records_history(self, job: Job, definition: JobDefinition | None) -> bool:
        if definition is not None and definition.history is not None:
            return definition.history
        if self.history == "all":
            return True
        return self.history == "recurring" and bool(job.repeat_interval)

    async def _trim_history(self, name: str) -> None:
        # Trimming costs a query; the TTL bounds the collection anyway, so trim now and then.
        self._finished_runs += 1
        if self._finished_runs % 50 == 1:
            await self._store.runs.trim(name)

    def local_status(self) -> dict[str, dict[str, int]]:
        """Per defined name, the jobs this process runs and holds locked now (no database query);
        zeros when the worker is not started."""
        return local_status(self._processor, self._definitions)

    # -- job logs and workers ---------------------------------------------------------------------------

    @property
    def logging(self) -> bool:
        """Whether runs are logged to the job log (``define(..., logging=...)`` overrides it per name)."""
        return self._job_logs.enabled

    @logging.setter
    def logging(self, value: bool) -> None:
        self._job_logs.enabled = value

    def logs_job(self, name: str) -> bool:
        """Whether runs of ``name`` are logged: its definition says so, else the Agenda's ``logging``."""
        return self._job_logs.logs_job(name)

    def _log_store(self) -> LogStore:
        # The log store of the current job store (tests read it directly).
        return self._job_logs.store()

    async def get_logs(
        self,
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
    ) -> JobLogsResult:
        """Job log entries (Agenda's ``getLogs``): filtered by job id or name, level(s), event(s) and
        time (``since``/``until``, Agenda's ``from``/``to``), newest first unless ``sort="asc"``;
        returns ``JobLogsResult(entries, total)``. Entries still buffered by this process are written
        first, so a run's own log is readable right after it completes."""
        query = log_query(
            job_id=job_id,
            job_name=job_name,
            level=level,
            event=event,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
            sort=sort,
        )
        return await self._job_logs.query(query)

    async def clear_logs(
        self,
        *,
        job_id: Any = None,
        job_name: str | None = None,
        level: str | Sequence[str] | None = None,
        event: str | Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> int:
        """Delete the matching log entries (Agenda's ``clearLogs``; no filter deletes them all);
        returns how many were deleted."""
        query = log_query(
            job_id=job_id, job_name=job_name, level=level, event=event, since=since, until=until
        )
        return await self._job_logs.clear(query)

    async def workers(self, *, include_stopped: bool = False) -> list[WorkerInfo]:
        """The workers registered in this database: live ones, then lost ones (no heartbeat for three
        periods) with the jobs they still hold; stopped ones too with ``include_stopped``."""
        return await self._registry.workers(include_stopped=include_stopped)

    async def activity(self, minutes: int = 60) -> list[dict[str, Any]]:
        """The fleet's last ``minutes`` minute by minute (oldest first): ``minute``, runs ``done`` and
        ``failed`` over every worker, and ``queued`` (due jobs, sampled; None when unsampled)."""
        return await self._registry.activity(minutes)

    async def _after_processing(self, timeout: float = _AFTER_STOP_TIMEOUT) -> None:
        """Once processing stopped: say goodbye in the workers list and write the pending job log, side
        by side within ``timeout`` seconds (a database that went away must not hold the stop up)."""
        await asyncio.gather(
            self._registry.unregister(timeout=timeout), self._job_logs.flush(timeout=timeout)
        )

    # -- what Job methods call (the JobOwner protocol) ------------------------------------------------

    async def remove_job(self, job: Job) -> int:
        """Delete ``job``'s document (``job.remove()``); returns how many were removed (0 or 1)."""
        if job.id is None:
            return 0
        return await self.cancel(id=job.id)

    async def touch_job(self, job: Job) -> None:
        """Renew the lock of a running job and save its progress (``job.touch()``)."""
        await self._write_during_run(job, ["locked_at", "progress"])

    async def checkpoint_job(self, job: Job) -> None:
        """Save a running job's checkpoint state and progress, renewing its lock (``job.checkpoint()``)."""
        check_bson(job.checkpoint_state, field="checkpoint_state")
        await self._write_during_run(job, ["locked_at", "checkpoint_state", "progress"])

    async def _write_during_run(self, job: Job, fields: list[str]) -> None:
        """A fenced write from inside a run (touch, checkpoint); it renews the lock too. While the
        database is unreachable it waits for it (nobody can take the lock over meanwhile)."""
        job.raise_if_lost()
        await self.connect()
        job.locked_at = sched.utcnow()
        if not await keep_trying(lambda: self._store.save_state(job, fields=fields), job):
            if job.lease is not None:
                job.lease.lost = True
                job.raise_if_lost()
            raise JobNotFound(
                f"job {job.name!r} ({job.id}) cannot be updated in the database, maybe it was removed"
            )

    async def run_job_now(self, job: Job) -> None:
        """Run ``job``'s handler in this process, outside the worker's locks (``job.run()``)."""
        await self.connect()
        if job.id is None:
            await self.save_job(job)
        await run_job(self.worker_context(), job, self._definitions.get(job.name))

    async def refresh_run_fields(self, job: Job) -> None:
        """Read ``job``'s run fields back from the database (``job.is_running()``)."""
        await self.connect()
        await self._store.refresh_run_fields(job)

    def worker_context(self) -> WorkerContext:
        """What a worker running this Agenda's jobs sees of it, with the options as they are now."""
        return WorkerContext(
            name=self.name,
            store=self._store,
            events=self._events,
            definitions=self._definitions,
            owner=self,
            report_error=self._emit_error,
            records_history=self._records_history,
            trim_history=self._trim_history,
            process_every=self.process_every,
            max_concurrency=self.max_concurrency,
            lock_limit=self.lock_limit,
            default_lock_lifetime=self.default_lock_lifetime,
            dependency_check_every=self.dependency_check_every,
            remove_on_complete=self.remove_on_complete,
            change_streams=self.change_streams,
            fork_method=self.fork_method,
        )

    def _claiming_tokens(self) -> set[str]:
        """The lock tokens of the claims this process has under way (see ``Claimer.tokens_in_flight``)."""
        return {
            token
            for worker in (self._processor, self._stopping)
            if worker is not None
            for token in worker.claimer.tokens_in_flight
        }

    def _running_jobs(self) -> list[Job]:
        """The jobs this process runs now, of the started worker and of one still stopping."""
        return [
            job
            for worker in (self._processor, self._stopping)
            if worker is not None
            for job in worker.running_jobs
        ]

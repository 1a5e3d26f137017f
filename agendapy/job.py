"""The Job: one document of the jobs collection, with the methods Agenda's Job has."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, Protocol

from . import schedule as sched
from .errors import InvalidInput, InvalidInterval, LockLost
from .validate import check_unique_query, parse_priority

__all__ = ["Job", "JobOwner", "JobState", "compute_job_state", "set_lease"]

_LONGEST_DEBOUNCE = timedelta(days=3650)
_MAX_FAIL_COUNT = 2**63 - 1
#: The most of a failure message kept in ``failReason`` (and in the run record's ``error``). Unbounded,
#: a long message (an HTTP error quoting a response body) on a job whose data is near the largest
#: accepted would make the document exceed MongoDB's 16 MB: the failure could not be saved and the job
#: would stay locked, to run again one lock lifetime later, failing the same way, forever.
MAX_FAIL_REASON = 4000
_CUT_MARK = " ... (message cut)"

JobType = Literal["normal", "single"]
DebounceStrategy = Literal["trailing", "leading"]
Misfire = Literal["once", "skip", "all"]


class JobState(StrEnum):
    """The state Agenda computes for a job (it is never stored)."""

    RUNNING = "running"
    WAITING = "waiting"
    #: The stored document has fields agendapy cannot read (``job.unreadable`` says which).
    BROKEN = "broken"
    FAILED = "failed"
    REPEATING = "repeating"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    COMPLETED = "completed"


@dataclass(frozen=True)
class DebounceOptions:
    """How saves of one ``unique`` job are merged."""

    delay: timedelta
    max_wait: timedelta | None = None
    strategy: DebounceStrategy = "trailing"


@dataclass(frozen=True)
class ClaimedStart:
    """The claim that locked a job also wrote its start (``lastRunAt`` = the lock's moment, no next
    run): the run skips its start write. Holds what the start replaced, so a release of a job that
    never started puts it back (it did not run)."""

    last_run_at: datetime | None
    next_run_at: datetime | None


@dataclass
class Lease:
    """The lock a worker holds on a job it claimed: every state write is fenced by it.

    ``locked_at`` and ``token`` are both matched on write: a Node Agenda worker that takes over the job
    changes ``lockedAt``, an agendapy worker changes both, so a stale holder's writes match nothing.
    """

    token: str
    locked_at: datetime
    lost: bool = False
    #: The run is writing its final state (or releasing the job): heartbeats leave it alone.
    finishing: bool = False
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set by a store whose claim wrote the run's start with the lock; the run takes it (clears it).
    claimed_start: ClaimedStart | None = None


class JobOwner(Protocol):
    """What a job asks of the Agenda it belongs to (``job.agenda``); nothing else of it is used here.

    ``Agenda`` implements it, and so does the stand-in of a job running in a child process (which
    passes ``touch`` and ``checkpoint`` to the worker and refuses the rest).
    """

    async def save_job(self, job: Job) -> Job: ...

    async def remove_job(self, job: Job) -> int: ...

    async def touch_job(self, job: Job) -> None: ...

    async def checkpoint_job(self, job: Job) -> None: ...

    async def run_job_now(self, job: Job) -> None: ...

    async def refresh_run_fields(self, job: Job) -> None: ...


@dataclass(eq=False)
class Job:
    """A job document. Attribute names are Agenda's in snake_case; see ``agendapy.store.schema``.

    Chainable methods (``repeat_every``, ``schedule``, ``unique`` ...) change the job in memory and
    return it; ``await job.save()`` writes it.
    """

    name: str
    data: Any = None
    id: str | None = None
    type: JobType = "normal"
    priority: int = 0
    next_run_at: datetime | None = None
    locked_at: datetime | None = None
    last_run_at: datetime | None = None
    last_finished_at: datetime | None = None
    failed_at: datetime | None = None
    fail_count: int = 0
    fail_reason: str | None = None
    repeat_interval: str | int | None = None
    repeat_timezone: str | None = None
    repeat_at: str | None = None
    disabled: bool = False
    progress: float | None = None
    last_modified_by: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    skip_days: list[int] | None = None
    debounce_started_at: datetime | None = None
    #: Resumable state saved by :meth:`checkpoint`; cleared by a successful run.
    checkpoint_state: Any = None
    #: ``every(..., fixed_delay=True)``: the next run is the previous finish + the interval.
    fixed_delay: bool = False
    #: What a recurring job does about ticks missed while no worker ran: "once", "skip" or "all".
    misfire: Misfire | None = None
    #: Names of jobs whose runs must cover this job's interval before it runs.
    requires: list[str] | None = None
    #: The interval [start, end) the current (or last, or pending) run handles.
    interval_started_at: datetime | None = None
    interval_ended_at: datetime | None = None
    #: Required jobs this job is waiting for, and why (set while it waits).
    waiting_for: list[str] | None = None
    waiting_reason: str | None = None
    #: Where the handler raised, the last time a run failed here (a bounded traceback; ``failStack``).
    fail_stack: str | None = None
    #: Why the stored document cannot be read, field by field (None when it can). Never stored: the
    #: unreadable fields keep their defaults here, and a worker fails such a job instead of running it.
    unreadable: str | None = None
    #: The stored name, printed, when it is not a job name (``42``, ``{'a': 1}``): the job is broken and
    #: ``name`` is ``""``. Never stored, and never used in a query (names there are plain strings).
    foreign_name: str | None = field(default=None, repr=False, compare=False)
    #: Run in a child process (Agenda's ``fork`` field, set by ``fork_mode``).
    fork: bool = False
    #: Set on the jobs that fleet events pass to listeners: the run happened in another process
    #: (``worker`` is that process's ``lastModifiedBy`` name). Never stored.
    remote: bool = field(default=False, repr=False, compare=False)
    worker: str | None = field(default=None, repr=False, compare=False)
    unique_query: dict[str, Any] | None = field(default=None, repr=False)
    unique_insert_only: bool = field(default=False, repr=False)
    debounce_options: DebounceOptions | None = field(default=None, repr=False)
    agenda: JobOwner | None = field(default=None, repr=False, compare=False)
    _lease: Lease | None = field(default=None, repr=False, compare=False)

    @property
    def lease(self) -> Lease | None:
        """The lock this process holds on the job while a worker claims or runs it (None otherwise).

        Set only by the store that locked the job (through :func:`set_lease`); the lease's own fields
        (``lost``, ``finishing``, the stop event) are how the worker and the run signal each other.
        """
        return self._lease

    # -- schedule --------------------------------------------------------------------------------

    def repeat_every(
        self,
        interval: str | int | float | timedelta | Mapping[str, float] | None,
        *,
        timezone: str | None = None,
        skip_immediate: bool = False,
    ) -> Job:
        """Make the job recurring; the next run is computed at once (the first is immediate by default).

        ``None`` or ``""`` stops the job repeating, as Agenda's ``repeatEvery(null)`` / ``('')``: it
        becomes a one-off, stored with that ``repeatInterval``, and its next run is computed as Agenda
        does (from ``repeat_at`` if it has one, else none: ``schedule()`` it to run once more).
        """
        if interval is None or (isinstance(interval, str) and not interval):
            sched.parse_timezone(timezone)
            self.repeat_interval = interval
            self.repeat_timezone = timezone
            self.next_run_at = self._next_run()
            return self
        parsed = sched.parse_interval(interval, field="interval")
        sched.parse_timezone(timezone)
        saved = (self.repeat_interval, self.repeat_timezone, self.last_run_at)
        self.repeat_interval = parsed.stored
        self.repeat_timezone = timezone
        if skip_immediate:
            self.last_run_at = self.next_run_at or sched.utcnow()
        try:
            self.next_run_at = self._next_run()
        except InvalidInput as exc:
            self.repeat_interval, self.repeat_timezone, _ = saved
            raise InvalidInterval("interval", interval, exc.reason) from None
        finally:
            self.last_run_at = saved[2]
        return self

    def repeat_at_time(self, time: str) -> Job:
        """Run every day at a time of day such as ``"3:30pm"`` (Agenda's ``repeatAt``)."""
        sched.next_repeat_at(time, last_run_at=None, now=sched.utcnow(), timezone=None)
        self.repeat_at = time
        return self

    def schedule(self, when: datetime | str) -> Job:
        """Set the next run: a ``datetime`` (naive means UTC) or a string like ``"in 20 minutes"``."""
        at = sched.parse_when(when, field="when")
        self.next_run_at = sched.apply_date_constraints(
            at,
            start_date=self.start_date,
            end_date=self.end_date,
            skip_days=self.skip_days,
            timezone=sched.parse_timezone(self.repeat_timezone),
        )
        return self

    def set_priority(self, priority: int | str) -> Job:
        """Set the priority: an int, or lowest/low/normal/high/highest."""
        self.priority = parse_priority(priority)
        return self

    def unique(self, query: Mapping[str, Any], *, insert_only: bool = False) -> Job:
        """Save by upsert on ``query`` (plus the name) instead of inserting a new document."""
        self.unique_query = check_unique_query(query)
        self.unique_insert_only = insert_only
        return self

    def debounce(
        self,
        delay: str | float | timedelta,
        *,
        max_wait: str | float | timedelta | None = None,
        strategy: DebounceStrategy = "trailing",
    ) -> Job:
        """Merge rapid saves of a ``unique`` job into one run (trailing: last wins; leading: first)."""
        if strategy not in ("trailing", "leading"):
            raise InvalidInput("strategy", strategy, "must be 'trailing' or 'leading'")
        delay_td = sched.to_timedelta(delay, field="delay")
        wait_td = None if max_wait is None else sched.to_timedelta(max_wait, field="max_wait")
        for label, value in (("delay", delay_td), ("max_wait", wait_td)):
            if value is not None and value > _LONGEST_DEBOUNCE:
                raise InvalidInput(label, value, "must be at most 10 years")
        self.debounce_options = DebounceOptions(delay=delay_td, max_wait=wait_td, strategy=strategy)
        return self

    def disable(self) -> Job:
        """Mark the job disabled (save to apply): it is never locked while disabled."""
        self.disabled = True
        return self

    def enable(self) -> Job:
        """Clear ``disabled`` (save to apply)."""
        self.disabled = False
        return self

    def fork_mode(self, enabled: bool = True) -> Job:
        """Run this job in a child process (save to apply), like Agenda's ``job.forkMode(true)``."""
        if not isinstance(enabled, bool):
            raise InvalidInput("fork", enabled, "must be True or False")
        self.fork = enabled
        return self

    def compute_next_run_at(self) -> Job:
        """Compute ``next_run_at`` from the repeat settings, as Agenda does; a bad interval fails the job."""
        try:
            self.next_run_at = self._next_run()
        except (InvalidInterval, InvalidInput) as exc:
            self.next_run_at = None
            # Each schedule error's reason is the failReason text Agenda writes for the same case.
            self.fail(exc.reason)
        return self

    def _next_run(self) -> datetime | None:
        return sched.compute_next_run_at(
            repeat_interval=self.repeat_interval,
            repeat_timezone=self.repeat_timezone,
            repeat_at=repeat_at_of(self),
            last_run_at=self.last_run_at,
            now=sched.utcnow(),
            start_date=self.start_date,
            end_date=self.end_date,
            skip_days=self.skip_days,
        )

    def fail(self, reason: BaseException | str) -> Job:
        """Record a failure in memory: reason (at most :data:`MAX_FAIL_REASON` characters),
        ``fail_count + 1``, ``failed_at = last_finished_at = now``."""
        text = (str(reason) or type(reason).__name__) if isinstance(reason, BaseException) else str(reason)
        if len(text) > MAX_FAIL_REASON:  # keep its beginning, which says what went wrong
            text = text[: MAX_FAIL_REASON - len(_CUT_MARK)] + _CUT_MARK
        now = sched.utcnow()
        self.fail_reason = text
        # A count stored by another tool may sit at BSON's int64 limit: stay within it.
        self.fail_count = min(self.fail_count + 1, _MAX_FAIL_COUNT)
        self.failed_at = now
        self.last_finished_at = now
        return self

    # -- database ---------------------------------------------------------------------------------

    async def save(self) -> Job:
        """Insert or update the job (upsert for ``every`` jobs and ``unique`` jobs); returns the job."""
        await self._require_agenda().save_job(self)
        return self

    async def remove(self) -> int:
        """Delete the job's document; returns how many were removed (0 or 1)."""
        if self.id is None:
            return 0
        return await self._require_agenda().remove_job(self)

    async def touch(self, progress: float | None = None) -> None:
        """Renew the lock (and record ``progress``, 0-100). Raises :class:`LockLost` if the lock is gone."""
        if progress is not None:
            if isinstance(progress, bool) or not isinstance(progress, int | float):
                raise InvalidInput("progress", progress, "must be a number from 0 to 100")
            self.progress = progress
        await self._require_agenda().touch_job(self)

    async def run(self) -> Job:
        """Run the handler now in this process (outside the worker's locks), saving state like a worker."""
        await self._require_agenda().run_job_now(self)
        return self

    async def is_running(self) -> bool:
        """Whether a run of this job is in progress (read from the database unless this worker runs it)."""
        if self._lease is None and self.id is not None:
            await self._require_agenda().refresh_run_fields(self)
        if self.last_run_at is None:
            return False
        if self.last_finished_at is None:
            return True
        return self.locked_at is not None and self.last_run_at > self.last_finished_at

    # -- while running ----------------------------------------------------------------------------

    @property
    def stop_requested(self) -> bool:
        """True once the worker asks the handler to stop (graceful shutdown, timeout or a lost lock)."""
        return self._lease is not None and self._lease.stop_event.is_set()

    async def stopping(self) -> None:
        """Wait until the worker asks this run to stop."""
        if self._lease is None:
            await asyncio.Event().wait()
            return
        await self._lease.stop_event.wait()

    @property
    def lock_lost(self) -> bool:
        """True when another worker took this job's lock over (this worker's writes are refused)."""
        return self._lease is not None and self._lease.lost

    async def checkpoint(self, state: Any) -> None:
        """Persist resumable state: a later run after an interruption sees it in ``checkpoint_state``.

        If it cannot be stored (too large for the document, say), the error is raised and the job keeps
        its previous checkpoint: the run's final write would otherwise carry the same state and fail
        too, leaving the job locked, to run again one lock lifetime later and fail the same way.
        """
        previous = self.checkpoint_state
        self.checkpoint_state = state
        try:
            await self._require_agenda().checkpoint_job(self)
        except BaseException:
            self.checkpoint_state = previous
            raise

    # -- views ------------------------------------------------------------------------------------

    @property
    def state(self) -> JobState:
        """The state Agenda computes (now): running, failed, repeating, scheduled, queued or completed."""
        return compute_job_state(self)

    @property
    def display_name(self) -> str:
        """``name``, or for a document whose stored name is not a job name ``<name: 42>`` (``<no name>``
        when it has none): what listings show, never an empty string. Not a filter: query by ``id``."""
        if self.name:
            return self.name
        return "<no name>" if self.foreign_name is None else f"<name: {self.foreign_name}>"

    def to_dict(self) -> dict[str, Any]:
        """The job's stored fields as a plain dict (snake_case names)."""
        skip = {
            "agenda",
            "_lease",
            "unique_query",
            "unique_insert_only",
            "debounce_options",
            "remote",
            "worker",
        }
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        out["repeat_at"] = repeat_at_of(self)
        return out

    def _require_agenda(self) -> JobOwner:
        if self.agenda is None:
            raise RuntimeError(
                f"job {self.name!r} is not attached to an Agenda (create it with agenda.create)"
            )
        return self.agenda

    def raise_if_lost(self) -> None:
        """Raise :class:`LockLost` when another worker took this job's lock over."""
        if self._lease is not None and self._lease.lost:
            raise LockLost(f"job {self.name!r} ({self.id}) lost its lock to another worker")


def set_lease(job: Job, lease: Lease | None) -> None:
    """Give ``job`` the lease its store's claim (or locked insert) took: the one way a lease is set."""
    job._lease = lease


def compute_job_state(job: Job, now: datetime | None = None) -> JobState:
    """Agenda's computeJobState (plus ``broken`` and ``waiting``); the order of the checks matters."""
    if job.unreadable:
        return JobState.BROKEN
    if job.waiting_for:  # locked too while a worker checks its requirements again
        return JobState.WAITING
    if job.locked_at is not None:
        return JobState.RUNNING
    if job.failed_at is not None and (job.last_finished_at is None or job.failed_at >= job.last_finished_at):
        return JobState.FAILED
    if job.repeat_interval:
        return JobState.REPEATING
    if job.next_run_at is not None:
        return JobState.SCHEDULED if job.next_run_at > (now or sched.utcnow()) else JobState.QUEUED
    return JobState.COMPLETED


class _RepeatAtValue(str):
    """A job's stored ``repeat_at`` time; calling it sets a new one, like Agenda's ``job.repeatAt(time)``."""

    _job: Job

    def __new__(cls, value: str, job: Job) -> _RepeatAtValue:
        obj = super().__new__(cls, value)
        obj._job = job
        return obj

    def __call__(self, time: str) -> Job:
        return self._job.repeat_at_time(time)


class _NoRepeatAt:
    """``job.repeat_at`` when unset: falsy, equal to None, and callable to set a time."""

    __slots__ = ("_job",)

    def __init__(self, job: Job) -> None:
        self._job = job

    def __call__(self, time: str) -> Job:
        return self._job.repeat_at_time(time)

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, _NoRepeatAt)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "None"


class _RepeatAtField:
    """Lets ``repeat_at`` be both Agenda's attribute (a time string) and its chainable setter method."""

    def __get__(self, job: Job | None, owner: type[Job]) -> Any:
        if job is None:
            return None  # the dataclass default
        value: str | None = job.__dict__.get("_repeat_at")
        return _NoRepeatAt(job) if value is None else _RepeatAtValue(value, job)

    def __set__(self, job: Job, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise InvalidInput("repeat_at", value, "must be a time of day string such as '3:30pm'")
        job.__dict__["_repeat_at"] = None if value is None else str(value)


Job.repeat_at = _RepeatAtField()  # type: ignore[assignment]


def repeat_at_of(job: Job) -> str | None:
    """The plain stored ``repeat_at`` string (or None)."""
    value: str | None = job.__dict__.get("_repeat_at")
    return value

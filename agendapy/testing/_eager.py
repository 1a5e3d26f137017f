"""Running jobs inside a test: eager mode (handlers run inline when a due job is saved) and
``run_until_idle`` (run everything due, and what that makes due, then return)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from .. import schedule as sched
from ..job import Job
from ..run import RunOutcome, run_job
from ..run_due import RunDue, due_names, run_due_result
from ..worker import Worker

if TYPE_CHECKING:
    from ..agenda import Agenda, RunDueResult
    from ..store.base import JobStore

__all__ = ["EagerLoopError", "EagerMode", "EagerRuns", "eager", "run_until_idle"]

#: A handler that keeps scheduling jobs due now would recurse forever in eager mode.
MAX_EAGER_DEPTH = 50

_depth: contextvars.ContextVar[int] = contextvars.ContextVar("agendapy_eager_depth", default=0)


class EagerLoopError(RuntimeError):
    """Eager mode gave up: handlers kept scheduling jobs due now (it fails every run in the chain)."""


@dataclass
class EagerRuns:
    """What ran inline while eager mode was on, in the order the runs finished."""

    jobs: list[Job] = field(default_factory=list)
    errors: list[tuple[Job, BaseException]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The names of the jobs that ran."""
        return [job.name for job in self.jobs]


def eager(agenda: Agenda, *, propagate: bool = False) -> EagerMode:
    """Eager mode for ``agenda`` (a context manager, sync or async): see :class:`EagerMode`."""
    return EagerMode(agenda, propagate=propagate)


class EagerMode:
    """Eager mode: while it is on, saving a job that is due now (``now()``, ``schedule("now")``,
    ``every()``'s first run, ``job.save()``, ``now_many()``...) runs its handler inline; the call returns
    after the run, with its state saved, so a test can assert on side effects at once.

    Runs go through the same code as a worker's (events, retries' rescheduling, run history), outside the
    worker's locks, as ``job.run()`` does. Jobs due later, retries scheduled by a backoff, and names
    this process does not define are left in the store (``run_until_idle`` runs what becomes due).

    Args:
        agenda: an Agenda that is not started (a worker would run the same jobs).
        propagate: re-raise a handler's exception from the call that saved the job (the run is still
            recorded as failed first).

    Example::

        with eager(agenda) as runs:
            await signup("ada@example.com")       # calls agenda.now("send welcome", ...)
        assert runs.names == ["send welcome"]
    """

    def __init__(self, agenda: Agenda, *, propagate: bool = False) -> None:
        self._agenda = agenda
        self._propagate = propagate
        self._running: set[str] = set()
        self.runs = EagerRuns()

    def __enter__(self) -> EagerRuns:
        agenda = self._agenda
        if "save_job" in vars(agenda):
            raise RuntimeError("eager mode is already on for this Agenda")
        if agenda.is_running:
            raise RuntimeError(
                "eager mode runs handlers inline, but this Agenda's worker is started and would run them "
                "too; stop it first (await agenda.stop())"
            )
        save_job: Callable[[Job], Awaitable[Job]] = agenda.save_job
        insert_many: Callable[[Sequence[Job]], Awaitable[list[Job]]] = agenda.insert_many

        async def eager_save_job(job: Job) -> Job:
            saved = await save_job(job)
            await self._run_if_due(saved)
            return saved

        async def eager_insert_many(jobs: Sequence[Job]) -> list[Job]:
            saved = await insert_many(jobs)
            for job in saved:
                await self._run_if_due(job)
            return saved

        # Instance attributes shadow the methods; every way of saving a job goes through these two.
        setattr(agenda, "save_job", eager_save_job)  # noqa: B010
        setattr(agenda, "insert_many", eager_insert_many)  # noqa: B010
        return self.runs

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        vars(self._agenda).pop("save_job", None)
        vars(self._agenda).pop("insert_many", None)

    async def __aenter__(self) -> EagerRuns:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    async def _run_if_due(self, job: Job) -> None:
        definition = self._agenda.definitions.get(job.name)
        if (
            definition is None
            or job.disabled
            or job.id is None
            or job.id in self._running  # a handler re-saving its own job: it is running already
            or job.next_run_at is None
            or job.next_run_at > sched.utcnow()
        ):
            return
        depth = _depth.get()
        if depth >= MAX_EAGER_DEPTH:
            raise EagerLoopError(
                f"eager mode: jobs kept scheduling jobs due now, {MAX_EAGER_DEPTH} levels deep "
                f"(last: {job.name!r}); schedule it later or test it with run_until_idle"
            )
        token = _depth.set(depth + 1)
        self._running.add(job.id)
        try:
            outcome: RunOutcome = await run_job(self._agenda.worker_context(), job, definition)
        finally:
            self._running.discard(job.id)
            _depth.reset(token)
        self.runs.jobs.append(job)
        if outcome.error is not None:
            self.runs.errors.append((job, outcome.error))
            if self._propagate or isinstance(outcome.error, EagerLoopError):
                raise outcome.error


async def run_until_idle(
    agenda: Agenda, *, timeout: float = 10.0, names: Sequence[str] | None = None
) -> RunDueResult:
    """Run every job due now under the worker's locks, then the jobs those runs made due (retries without
    delay, jobs scheduled by handlers ...), until nothing is due; returns each job once, with the outcome
    of its last run.

    Args:
        agenda: an Agenda that is not started.
        timeout: seconds before giving up; running handlers are then cancelled (and their jobs unlocked)
            and ``TimeoutError`` is raised, e.g. when a job keeps rescheduling itself for now.
        names: only these job names (default: every defined name).
    """
    if agenda.is_running:
        raise RuntimeError(
            "run_until_idle runs the due jobs itself; call it on an Agenda whose worker is not started"
        )
    wanted = due_names(agenda.definitions, names)
    await agenda.connect()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    latest: dict[str, RunOutcome] = {}
    while True:
        run_due = RunDue(agenda.worker_context(), wanted)
        task = asyncio.ensure_future(run_due.run(sched.utcnow()))
        try:
            outcomes = await asyncio.wait_for(asyncio.shield(task), max(deadline - loop.time(), 0.0))
        except TimeoutError:
            await _abandon(run_due.worker, task, agenda.store)
            raise TimeoutError(
                f"run_until_idle: jobs were still due or running after {timeout} s "
                "(a job that keeps scheduling itself for now never lets the queue go idle)"
            ) from None
        for outcome in outcomes:
            latest[outcome.job.id or str(id(outcome.job))] = outcome
        if not any(o.status in ("succeeded", "failed", "skipped") for o in outcomes):
            break
    return run_due_result(list(latest.values()))


async def _abandon(worker: Worker, task: asyncio.Future[list[RunOutcome]], store: JobStore) -> None:
    """Stop a run-due pass without orphaning a lock.

    Cancelling the pass while a claim is in flight would lose the claimed job (locked in the store
    until its lock expires). Instead: stop claiming and cancel the runs (they unlock their jobs), then
    let the pass notice; a claim that lands meanwhile leaves its job in the worker's queue, which the
    pass releases when it is cancelled from its idle wait (no claim can start once claiming stopped).
    A run cancelled before its handler started does not unlock its job, so every job held at the stop
    is released at the end (fenced: a job already unlocked, or finished, is left alone).
    """
    held = worker.running_jobs + worker.waiting_jobs
    await worker.stop(grace=0)
    for _ in range(100):
        worker.wake()
        done, _ = await asyncio.wait({task}, timeout=0.02)
        if done or worker.waiting_jobs:
            break
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await store.release(held)

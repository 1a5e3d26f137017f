"""Fleet-wide events: the runs of other processes, emitted here (``Agenda(..., fleet_events=True)``).

Nothing is published: every worker, agendapy or Node Agenda, already writes each step of a run to the
job's document, so this process watches the jobs collection (a change stream) and turns those writes
back into Agenda's events:

==============================================  ================================================
document change                                  events (each also as ``<event>:<job name>``)
==============================================  ================================================
``lastRunAt`` set while locked                    ``start(job)``
``progress`` changed while running                ``progress(job)``
``lastFinishedAt`` set, ``failedAt`` not          ``success(job)``, ``complete(job)``
``lastFinishedAt`` and ``failedAt`` set           ``fail(error, job)``, [``retry(job, details)``],
                                                  ``complete(job)``
==============================================  ================================================

The job passed has ``job.remote == True`` and ``job.worker`` (the ``lastModifiedBy`` of the worker that
ran it); ``error`` is a :class:`RemoteFailure` whose text is the stored ``failReason``. Runs of this
process are skipped (it emitted them already). Delivery is at most once and in order per job: a
change missed while the stream was down is not replayed.

Where the server has no change streams (or ``change_streams=False``), runs are published instead
and read back from a capped collection: see :mod:`agendapy.fleet_log`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import RemoteFailure
from .fleet_log import FleetLog, FleetLogUnavailable, ensure_capped, events_collection
from .run import RetryDetails
from .store.base import WakeUpsUnavailable
from .store.schema import job_from_document

if TYPE_CHECKING:
    from .job import Job
    from .worker_context import WorkerContext

__all__ = ["FleetEvents"]

log = logging.getLogger("agendapy")

#: How many jobs' last known documents (and this process's recent runs) are remembered.
_REMEMBERED = 2_000
_MAX_ERROR_BACKOFF = 30.0
#: How long ``start()`` waits for the change stream to open.
_OPEN_WAIT = 10.0


def _ms(value: Any) -> int | None:
    """A date as whole milliseconds (what BSON keeps), to compare in-memory and stored dates."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


class FleetEvents:
    """Watches run state in the jobs collection and emits other processes' runs on the Agenda."""

    def __init__(
        self,
        context: WorkerContext,
        running_jobs: Callable[[], list[Job]],
        claiming: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self._ctx = context
        # The jobs this process runs now: the stream can report a run before its start event is out.
        self._running_jobs = running_jobs
        # The lock tokens of this process's claims under way: a claim may write the start of the jobs
        # it locks (a one-off due now), and the stream can report it before the claim has returned.
        self._claiming = claiming
        self._task: asyncio.Task[None] | None = None
        # The last known document of each job: the end of a run that removes its job (remove on
        # complete) arrives without one.
        self._docs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # The progress each job's own changes wrote last. Not the looked-up document's: a lookup made
        # after later writes already shows their progress, and the change that wrote it would then
        # look like no change at all.
        self._progress: OrderedDict[str, Any] = OrderedDict()
        # (job id, lastRunAt in ms) of runs this process started: their events were emitted locally.
        self._local: OrderedDict[tuple[str, int | None], None] = OrderedDict()
        self.ready = asyncio.Event()
        self._log: FleetLog | None = None

    async def start(self, wait: float = _OPEN_WAIT) -> None:
        """Start listening (the Agenda's ``start()``); returns once the stream is open (changes from
        then on are heard), or after ``wait`` seconds if it cannot be opened yet (it keeps trying)."""
        self._ctx.events.on("start", self._remember_local)
        self._task = asyncio.create_task(self._listening(), name="agendapy: fleet events")
        try:
            await asyncio.wait_for(self.ready.wait(), wait)
        except TimeoutError:
            log.warning("fleet events: the change stream is not open after %g s; still trying", wait)

    async def stop(self) -> None:
        """Stop listening."""
        self._ctx.events.off("start", self._remember_local)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._stop_log()

    def _remember_local(self, job: Job) -> None:
        if job.remote or job.id is None:
            return
        self._local[(job.id, _ms(job.last_run_at))] = None
        while len(self._local) > _REMEMBERED:
            self._local.popitem(last=False)

    def _is_local(self, job_id: str, last_run_at: Any) -> bool:
        key = (job_id, _ms(last_run_at))
        if key in self._local:
            return True
        # A run of this process whose start event is not emitted yet (the stream can be quicker).
        return any(job.id == job_id and _ms(job.last_run_at) == key[1] for job in self._running_jobs())

    def _claimed_here(self, doc: Mapping[str, Any]) -> bool:
        token = doc.get("lockToken")
        return isinstance(token, str) and token in self._claiming()

    async def _listening(self) -> None:
        runs_changes = getattr(self._ctx.store, "run_changes", None)
        if runs_changes is not None and not self._ctx.change_streams:
            await self._listening_to_log("change_streams=False")
            return
        if runs_changes is None:
            log.info("fleet events: this store has no change feed; only local events are emitted")
            self.ready.set()
            return
        pause = 1.0
        while True:
            try:
                stream = await runs_changes()
                self.ready.set()
                async for change in stream:
                    pause = 1.0
                    try:
                        await self._on_change(change)
                    except Exception:
                        log.exception("fleet events: cannot handle a change of %s", change.get("documentKey"))
            except asyncio.CancelledError:
                raise
            except WakeUpsUnavailable as exc:
                await self._listening_to_log(str(exc))
                return
            except Exception as exc:
                log.warning("fleet events: change stream failed (%s); retrying in %.0f s", exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_ERROR_BACKOFF)

    async def _on_change(self, change: Mapping[str, Any]) -> None:
        key = change.get("documentKey") or {}
        if "_id" not in key:
            return
        job_id = str(key["_id"])
        if change.get("operationType") == "delete":
            self._docs.pop(job_id, None)
            self._progress.pop(job_id, None)
            return
        updated: dict[str, Any] = dict((change.get("updateDescription") or {}).get("updatedFields") or {})
        full = change.get("fullDocument")
        known = self._docs.pop(job_id, None)
        # The fields this change wrote win over a fuller document looked up later (it may be newer).
        doc = {**(full or known or {"_id": key["_id"]}), **_top_level(updated)}
        self._docs[job_id] = doc
        while len(self._docs) > _REMEMBERED:
            self._docs.popitem(last=False)
        if not isinstance(doc.get("name"), str):
            return
        # Which run this change belongs to: its own start, or the start seen last (a document looked
        # up after a run's end may already show the next run's start).
        started_at = updated["lastRunAt"] if "lastRunAt" in updated else (known or {}).get("lastRunAt")
        written_before = {"progress": self._progress[job_id]} if job_id in self._progress else None
        if "progress" in updated:
            self._progress.pop(job_id, None)
            self._progress[job_id] = updated["progress"]
            while len(self._progress) > _REMEMBERED:
                self._progress.popitem(last=False)
        events = _events_of(updated, doc, written_before, started_at)
        run = started_at if started_at is not None else doc.get("lastRunAt")
        if not events or self._is_local(job_id, run) or self._claimed_here(doc):
            return
        job = job_from_document(doc)
        job.remote = True
        worker = doc.get("lastModifiedBy")
        job.worker = worker if isinstance(worker, str) else None
        job.agenda = self._ctx.owner
        emit = self._ctx.events.emit_job_event
        for event in events:
            if event == "fail":
                failure = RemoteFailure(job.fail_reason or "failed")
                await emit("fail", job.name, failure, job, remote=True)
                details = _retry_details(job, failure)
                if details is not None:
                    await emit("retry", job.name, job, details, remote=True)
            else:
                await emit(event, job.name, job, remote=True)

    # -- without change streams: the events collection (agendapy.fleet_log) --------------------------------

    async def _listening_to_log(self, why: str) -> None:
        """Publish this process's runs to the capped events collection and emit the others' entries."""
        try:
            collection = events_collection(getattr(self._ctx.store, "collection", None))
        except FleetLogUnavailable as exc:
            log.warning("fleet events are off: no change streams (%s) and %s", why, exc)
            self.ready.set()
            return
        self._log = fleet = FleetLog(collection, self._ctx.events, self._ctx.name, self._ctx.owner)
        loop = asyncio.get_running_loop()
        pause = 0.1
        while True:
            opened_at = loop.time()
            try:
                # Checked at every (re)opening: a capped collection dropped meanwhile is made again
                # before anything is written to it (an insert would make a plain one).
                await ensure_capped(collection)
                if not fleet.publishing:
                    log.info("fleet events: no change streams (%s); using %r", why, collection.name)
                    fleet.start_publishing()
                cursor, marker = await fleet.open()
                try:
                    await fleet.read(cursor, marker, self.ready)
                finally:
                    await cursor.close()
                # The cursor died: it fell behind the capped collection (reopen at once), or the
                # server cannot keep one open (reopen, but not in a tight loop).
                if loop.time() - opened_at > 10:
                    pause = 0.1
                    continue
            except asyncio.CancelledError:
                raise
            except FleetLogUnavailable as exc:
                log.warning("fleet events are off: no change streams (%s) and %s", why, exc)
                await self._stop_log()
                self.ready.set()
                return
            except Exception as exc:
                log.warning("fleet events: reading %r failed (%s); retrying", collection.name, exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_ERROR_BACKOFF)

    async def _stop_log(self) -> None:
        fleet, self._log = self._log, None
        if fleet is not None:
            await fleet.stop()


def _top_level(updated: Mapping[str, Any]) -> dict[str, Any]:
    # "data.x" style paths change nested values the lookup already shows; run fields are top level.
    return {k: v for k, v in updated.items() if "." not in k}


def _events_of(
    updated: Mapping[str, Any], doc: Mapping[str, Any], before: Mapping[str, Any] | None, started_at: Any
) -> list[str]:
    """The events one write of a run stands for (see the module's table).

    Only what this write changed counts, and a server may list a field it set to its old value: so
    an end needs the lock released and a finish no older than the run's start, and progress must
    differ from the last value an earlier change wrote (``before``).
    """
    locked = updated["lockedAt"] if "lockedAt" in updated else doc.get("lockedAt")
    finished_at = updated.get("lastFinishedAt")
    if finished_at is not None and locked is None:
        started = _ms(started_at)
        if started is None or (_ms(finished_at) or 0) >= started:
            failed_at = doc.get("failedAt")
            failed = "failedAt" in updated and failed_at is not None and _ms(failed_at) == _ms(finished_at)
            return ["fail" if failed else "success", "complete"]
        return []
    if locked is None:
        return []
    if updated.get("lastRunAt") is not None:
        return ["start"]
    progress = updated.get("progress")
    if progress is not None and (before is None or before.get("progress") != progress):
        return ["progress"]
    return []


def _retry_details(job: Job, failure: BaseException) -> RetryDetails | None:
    """A failed one-off run that is due again was rescheduled by its backoff: that is a retry."""
    if job.repeat_interval or job.repeat_at or job.next_run_at is None or job.failed_at is None:
        return None
    if job.next_run_at <= job.failed_at:
        return None
    return RetryDetails(
        attempt=job.fail_count,
        delay=(job.next_run_at - job.failed_at).total_seconds(),
        next_run_at=job.next_run_at,
        error=failure,
    )

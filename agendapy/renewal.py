"""Lock renewal, the worker's heartbeat: ``lockedAt`` of every held job moves forward in time.

So a long run needs no ``touch()``, and a dead worker's jobs come back one lock lifetime after it
stopped renewing. A job whose renewal matches nothing was taken over by another worker, and a lock
that outlived its lifetime unrenewed (the database was unreachable) may have been: either way its
lease is marked lost (its run is asked to stop), the worker forgets it if it was waiting, and ``lock
lost`` and ``error`` are emitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from . import schedule as sched
from .errors import LockLost
from .loops import Loop

if TYPE_CHECKING:
    from .job import Job
    from .worker_context import WorkerContext

__all__ = ["LockRenewal"]

log = logging.getLogger("agendapy")

_MIN_HEARTBEAT = 0.05


class LockRenewal:
    """Renews the locks of the jobs ``held()`` returns; ``forget`` drops a job whose lock was taken over."""

    def __init__(
        self, context: WorkerContext, held: Callable[[], list[Job]], forget: Callable[[Job], None]
    ) -> None:
        self._ctx = context
        self._held = held
        self._forget = forget
        self._renewing = 0

    def loop(self) -> Loop:
        return Loop("lock renewal", self._round, on_error=self._failed)

    def lifetime(self, job: Job) -> timedelta:
        """How long a lock of ``job`` lives without renewal."""
        definition = self._ctx.definitions.get(job.name)
        return definition.lock_lifetime if definition is not None else self._ctx.default_lock_lifetime

    async def _round(self) -> None:
        # Every definition's lifetime counts, not only the held jobs': a job claimed during the
        # sleep must be renewed in time. Waking every quarter lifetime and renewing what is a
        # quarter old keeps each lock under half its lifetime even when a round is slow.
        lifetimes = [d.lock_lifetime for d in self._ctx.definitions.values()]
        lifetimes.append(self._ctx.default_lock_lifetime)
        await asyncio.sleep(max(min(lifetimes).total_seconds() / 4, _MIN_HEARTBEAT))
        now = sched.utcnow()
        held = [job for job in self._held() if job.lease is not None and not job.lease.finishing]
        # A lock that outlived its lifetime unrenewed (the database was unreachable, say) may already
        # belong to another worker: its run is asked to stop, as when a takeover is seen, rather than
        # running on beside the new owner's run.
        for job in held:
            if (
                job.lease is not None
                and not job.lease.lost
                and now - job.lease.locked_at >= self.lifetime(job)
            ):
                await self._lost(job, "its lock expired before it could be renewed")
        due = [
            job
            for job in held
            if job.lease is not None
            and not job.lease.lost
            and now - job.lease.locked_at >= self.lifetime(job) / 4
        ]
        if not due:
            return
        self._renewing = len(due)
        lost = await self._ctx.store.renew_locks(due, now)
        for job in lost:
            await self._lost(job)

    async def _lost(self, job: Job, why: str = "another worker owns it now") -> None:
        lease = job.lease
        if lease is None or lease.lost:
            return
        lease.lost = True
        lease.stop_event.set()
        self._forget(job)
        log.warning("lost the lock of %s (%s): %s", job.name, job.id, why)
        await self._ctx.events.emit_job_event("lock lost", job.name, job)
        await self._ctx.report_error(LockLost(f"job {job.name!r} ({job.id}) lost its lock"))

    async def _failed(self, error: Exception, failures: int) -> None:
        log.warning("renewing %d locks failed: %s", self._renewing, error)
        await self._ctx.report_error(error)

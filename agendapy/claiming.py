"""How much a worker may claim, and the claim itself (one store round trip, never orphaning a lock).

Each name claims within its own room (its ``concurrency`` and ``lock_limit``) and the worker's total
(``max_concurrency``, ``lock_limit``), earliest due and highest priority first; a name without room is
left out, never a reason to stop claiming for the others. A job this worker saves due now, with a
free slot here, is inserted already locked (Agenda's "lock on the fly", :meth:`Claimer.insert_locked`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from . import schedule as sched
from .store.base import ClaimRequest

if TYPE_CHECKING:
    from .job import Job
    from .worker_context import WorkerContext

__all__ = ["ClaimScope", "Claimer", "Holdings"]


@dataclass(frozen=True)
class ClaimScope:
    """Which jobs a worker claims: of ``names`` only (None: every defined name) and, with ``until``, every
    job due by then at once (run-due mode) instead of what is due within a poll plus a look-ahead."""

    names: frozenset[str] | None = None
    until: datetime | None = None


class Holdings(Protocol):
    """What claiming needs to know of the jobs a worker holds (None: all names)."""

    def locked_count(self, name: str | None = None) -> int: ...

    def running_count(self, name: str | None = None) -> int: ...

    def waiting_count(self, name: str | None = None) -> int: ...

    def held_ids(self) -> frozenset[str]: ...


class Claimer:
    """Computes a worker's room to claim and claims; ``scope`` says which jobs."""

    def __init__(self, context: WorkerContext, holdings: Holdings) -> None:
        self._ctx = context
        self._held = holdings
        #: What this worker claims; run-due mode narrows it round by round.
        self.scope = ClaimScope()
        # Slots promised to jobs being saved locked on the fly, per name, until their write returns.
        self._reserved: Counter[str] = Counter()
        # What the claim under way may still lock (per name, in all), while its round trip lasts.
        self._claiming: tuple[dict[str, int], int] = ({}, 0)
        #: The lock tokens of claims under way: what they lock (and the starts they write) is this
        #: worker's before they return (fleet events must not take those runs for another process's).
        self.tokens_in_flight: set[str] = set()

    def room(self, *, immediate: bool) -> tuple[dict[str, int], int]:
        """How many jobs each name may claim now, and how many in all.

        ``immediate``: only as many as can start at once (free slots under each name's concurrency and
        ``max_concurrency``). Otherwise the look-ahead buffer: up to ``concurrency`` waiting jobs per
        name and ``max_concurrency`` in all. Each name's lock limit caps its own room, the worker's
        ``lock_limit`` the total; a name without room is left out and never holds back the others.
        """
        ctx, held, reserved = self._ctx, self._held, self._reserved
        # Jobs being saved locked on the fly count as waiting: their slots are promised.
        waiting_total = held.waiting_count() + reserved.total()
        if immediate:
            room = ctx.max_concurrency - held.running_count() - waiting_total
        else:
            room = ctx.max_concurrency - waiting_total
        if ctx.lock_limit:
            room = min(room, ctx.lock_limit - held.locked_count() - reserved.total())
        quotas: dict[str, int] = {}
        for name, definition in ctx.definitions.items():
            if self.scope.names is not None and name not in self.scope.names:
                continue
            waiting = held.waiting_count(name) + reserved[name]
            if immediate:
                free = definition.concurrency - held.running_count(name) - waiting
            else:
                free = definition.concurrency - waiting
            if definition.lock_limit:
                free = min(free, definition.lock_limit - held.locked_count(name) - reserved[name])
            if free > 0:
                quotas[name] = free
        return quotas, min(room, sum(quotas.values()))

    def top_up_floor(self, names: Collection[str]) -> int:
        """The least room for ``names`` a claim pass after runs ended (a top-up) claims for: half of
        what this worker can hold of them (``max_concurrency``, the lock limits and the names'
        concurrencies, with nothing held), at least one.

        Each claim costs the server a search for due jobs (a collection scan where the server plans
        the claim query as one), whether it locks one job or twenty: a worker whose runs end one at a
        time would otherwise search once per run, and four workers four times as often. Waiting until
        half the slots are free makes each search lock a batch. Polls and wake-ups (a job became due)
        claim whatever room there is, except for a backlogged name below this floor
        (:meth:`without_small_backlogs`), which still has jobs waiting.
        """
        ctx = self._ctx
        total = 0
        for name in names:
            definition = ctx.definitions.get(name)
            if definition is None:
                continue
            room = definition.concurrency
            if definition.lock_limit:
                room = min(room, definition.lock_limit)
            total += max(room, 0)
        total = min(total, ctx.max_concurrency)
        if ctx.lock_limit:
            total = min(total, ctx.lock_limit)
        return max(1, (total + 1) // 2)

    def worth_topping_up(self, quotas: Mapping[str, int], room: int, backlogged: Collection[str]) -> bool:
        """Whether a top-up claims now: the names that had more due (``backlogged``) have room for
        at least :meth:`top_up_floor` of them. Measured on those names alone: the room of names with
        nothing due says nothing about how much one search would lock."""
        if not backlogged:
            return False
        have = min(room, sum(quotas.get(name, 0) for name in backlogged))
        return have >= self.top_up_floor(backlogged)

    def without_small_backlogs(
        self, quotas: Mapping[str, int], backlogged: Collection[str]
    ) -> dict[str, int]:
        """``quotas`` less the backlogged names whose room is below their :meth:`top_up_floor`: a poll
        or a wake-up leaves those to the top-ups their runs' ends bring (a search for one job of a
        backlog costs the server as much as one for a batch), and claims the other names as usual.
        No slot idles for it: a backlogged name with less room than that still has jobs waiting."""
        return {
            name: quota
            for name, quota in quotas.items()
            if name not in backlogged or quota >= self.top_up_floor((name,))
        }

    @staticmethod
    def saturated(quotas: Mapping[str, int], room: int, jobs: Sequence[Job]) -> frozenset[str]:
        """The names a claim may have left due jobs of: each name it took all its room for, and
        every name it took jobs of when it filled its whole room."""
        taken = Counter(job.name for job in jobs)
        if len(jobs) >= room:
            return frozenset(taken)
        return frozenset(name for name, quota in quotas.items() if taken[name] >= quota)

    def has_slot_now(self, name: str) -> bool:
        """Whether a job of ``name`` saved now may be locked on the fly: a claim pass would start it at
        once, and the lock limits hold even if the claim under way takes all it asked for."""
        quotas, room = self.room(immediate=True)
        if room <= 0 or quotas.get(name, 0) <= 0:
            return False
        # Concurrency needs no such margin (a run starts only in a free slot; an extra job waits
        # locked), but a lock limit counts locks, so it must not be passed even for a moment.
        claiming, claiming_total = self._claiming
        held = self._held.locked_count() + self._reserved.total()
        if self._ctx.lock_limit and held + claiming_total >= self._ctx.lock_limit:
            return False
        limit = self._ctx.definitions[name].lock_limit
        held_name = self._held.locked_count(name) + self._reserved[name]
        return not (limit and held_name + claiming.get(name, 0) >= limit)

    async def claim(self, quotas: dict[str, int], limit: int, *, start_due: bool = False) -> list[Job]:
        """Lock up to ``limit`` due jobs (``quotas`` per name) for this worker. A claim cancelled in
        flight unlocks what the database locked for it.

        ``start_due``: the caller starts at once what comes back due now (a claim for free slots), so
        the store may write those runs' starts with their locks (``ClaimRequest.start_due``)."""
        ctx = self._ctx
        now = sched.utcnow()
        until = self.scope.until
        request = ClaimRequest(
            names=list(quotas),
            now=now,
            next_scan_at=until if until is not None else now + ctx.process_every,
            lock_deadlines={name: now - ctx.definitions[name].lock_lifetime for name in quotas},
            owner=ctx.name,
            per_name=quotas,
            start_due=start_due,
            held=self._held.held_ids(),
        )
        token = uuid.uuid4().hex
        claiming = asyncio.ensure_future(ctx.store.claim(request, token, limit))
        # Cleared before the caller accepts the jobs, with no await in between: they are then held.
        self._claiming = (quotas, limit)
        self.tokens_in_flight.add(token)
        try:
            jobs = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # Stopped mid-claim: the database may have locked jobs for us. Unlock what it returns.
            with contextlib.suppress(Exception):
                claimed = await asyncio.wait_for(claiming, 2.0)
                if claimed:
                    await asyncio.wait_for(ctx.store.release(claimed), 2.0)
            raise
        finally:
            self._claiming = ({}, 0)
            self.tokens_in_flight.discard(token)
        for job in jobs:
            job.agenda = ctx.owner
        return jobs

    async def insert_locked(
        self, name: str, write: Callable[[str | None], Awaitable[Job | None]]
    ) -> Job | None:
        """Save a job of ``name`` due now: locked for this worker (``write`` gets a lock token and returns
        the locked copy) when it has an immediate slot, else as usual (``write(None)``, None returned)."""
        if not self.has_slot_now(name):
            await write(None)
            return None
        # Hold the slot across the write, so concurrent saves and claim passes do not promise it again.
        self._reserved[name] += 1
        writing = asyncio.ensure_future(write(uuid.uuid4().hex))
        try:
            leased = await asyncio.shield(writing)
        except asyncio.CancelledError:
            # The caller went away mid-write; the job may be in the database locked by us. Unlock it.
            with contextlib.suppress(Exception):
                leased = await asyncio.wait_for(writing, 2.0)
                if leased is not None:
                    await asyncio.wait_for(self._ctx.store.release([leased]), 2.0)
            raise
        finally:
            self._reserved[name] -= 1
        if leased is not None:
            leased.agenda = self._ctx.owner
        return leased

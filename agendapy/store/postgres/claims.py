"""Claims on PostgreSQL: one statement locks a batch of jobs (``FOR UPDATE SKIP LOCKED``), and the
lock's upkeep (heartbeats, hand-backs, reloads), each fenced like the MongoDB store's.

The claim is Node's find-and-lock (``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)
RETURNING *``) widened to a batch over several names: per name, a ``LATERAL`` subquery takes at
most that name's room (``ClaimQuota``) of its claimable rows in claim order, so a name with no room
takes nothing and never stops the others; the batch is the first ``limit`` of them in claim order.
Claimable (``queries.claim_filter``): enabled and either unlocked and due by the end of the scan
window, or locked before its name's lock deadline (its worker died). Each name's two branches are
index range scans: the due branch on ``<table>_find_and_lock_idx`` (name, next_run_at, ...), the
expired-lock branch on ``<table>_locked_at_idx``, so a claim reads about as many rows as it locks
whatever the table holds. ``SKIP LOCKED`` makes concurrent claimers pass over each other's rows
instead of waiting: no two claims return the same job.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ...job import ClaimedStart, Job
from ..base import ClaimQuota, ClaimRequest
from ..common import leased
from ..common import refresh_run_fields as refresh_from
from ..schema import log_unreadable, unreadable_failure
from . import notify
from .schema import row_to_document, to_millis
from .state_writes import StateWrites, job_uuid

__all__ = ["RunPath", "claim", "refresh_run_fields", "release", "renew_locks"]

log = logging.getLogger("agendapy.store")

#: Claim rounds in one call when a round won only unreadable rows (each is failed, so not claimable).
_CLAIM_ROUNDS = 5

_CLAIM = """
WITH claimed AS (
  UPDATE {table} AS t
  SET locked_at = %(now)s, lock_token = %(token)s,
      last_modified_by = coalesce(%(owner)s, t.last_modified_by),
      last_run_at = CASE WHEN picked.starts THEN %(now)s ELSE t.last_run_at END,
      next_run_at = CASE WHEN picked.starts THEN NULL ELSE t.next_run_at END
  FROM (
    SELECT c.id, c.next_run_at, c.priority, c.last_run_at, c.starts
    FROM unnest(%(names)s::text[], %(rooms)s::int[], %(deadlines)s::timestamptz[]) AS q(name, room, deadline)
    CROSS JOIN LATERAL (
      SELECT u.id, u.next_run_at, u.priority, u.last_run_at, u.starts FROM (
        SELECT due.* FROM (
          SELECT j.id, j.next_run_at, j.priority, j.last_run_at,
            %(start_due)s AND j.next_run_at <= %(now)s
              AND j.repeat_interval IS NULL AND j.repeat_at IS NULL AS starts
          FROM {table} AS j
          WHERE j.name = q.name AND j.disabled = FALSE AND j.locked_at IS NULL
            AND j.next_run_at <= %(scan)s
          ORDER BY j.next_run_at, j.priority DESC
          LIMIT q.room FOR UPDATE SKIP LOCKED
        ) AS due
        UNION ALL
        SELECT expired.* FROM (
          SELECT j.id, j.next_run_at, j.priority, j.last_run_at, FALSE AS starts FROM {table} AS j
          WHERE j.locked_at <= %(latest_deadline)s AND j.locked_at <= q.deadline
            AND j.name = q.name AND j.disabled = FALSE AND j.id <> ALL(%(held)s::uuid[])
          ORDER BY j.next_run_at NULLS FIRST, j.priority DESC
          LIMIT q.room FOR UPDATE SKIP LOCKED
        ) AS expired
      ) AS u
      ORDER BY u.next_run_at NULLS FIRST, u.priority DESC
      LIMIT q.room
    ) AS c
    ORDER BY c.next_run_at NULLS FIRST, c.priority DESC
    LIMIT %(limit)s
  ) AS picked
  WHERE t.id = picked.id
  RETURNING t.*, picked.starts AS claim_started, picked.last_run_at AS claim_replaced_last_run_at,
    picked.next_run_at AS claim_replaced_next_run_at
)
SELECT * FROM claimed ORDER BY claim_replaced_next_run_at NULLS FIRST, priority DESC
"""
# A null next_run_at (a crashed run whose lock expired) sorts first, as MongoDB sorts null before every
# date; the due branch never meets one, so its index order stands.
# ``starts``: the claim writes the run's start with the lock (``ClaimRequest.start_due``) for an
# unlocked one-off job due by now, as ``queries.starts_with_claim`` says for MongoDB; the row's
# replaced lastRunAt and nextRunAt come back beside it, for the lease (``ClaimedStart``).
# ``held``: the claiming worker's own jobs, never claimed again by it (``ClaimRequest.held``).
# ``latest_deadline`` (the latest of the names' deadlines, a constant) lets the planner see that the
# expired-lock branch reads the few old locks of the locked_at index, not every row of the name.


def claim_statement(table: str) -> sql.Composed:
    """The claim statement for ``table`` (see the module's notes)."""
    return sql.SQL(_CLAIM).format(table=sql.Identifier(table))


def claim_params(request: ClaimRequest, token: str, limit: int) -> dict[str, Any] | None:
    """The claim's parameters; None when no name has room (nothing to claim)."""
    quota = ClaimQuota(request, limit)
    names = quota.open_names()
    if not names:
        return None
    caps = request.per_name or {}
    wanted = quota.wanted()
    deadlines = [to_millis(request.lock_deadlines[name]) for name in names]
    return {
        "now": to_millis(request.now),
        "token": token,
        "owner": request.owner or None,
        "names": names,
        "rooms": [min(caps.get(name, wanted), wanted) for name in names],
        "deadlines": deadlines,
        "latest_deadline": max(deadlines),
        "scan": to_millis(request.next_scan_at),
        "limit": wanted,
        "start_due": request.start_due,
        "held": sorted({uuid for uuid in map(job_uuid, request.held) if uuid is not None}),
    }


async def claim(
    pool: AsyncConnectionPool[Any],
    table: str,
    request: ClaimRequest,
    token: str,
    limit: int,
    *,
    writes: StateWrites,
) -> list[Job]:
    """Lock up to ``limit`` claimable jobs of ``request.names`` in one statement, in claim order,
    within each name's room (``request.per_name``); each returned job carries a Lease with ``token``.

    A claimed row agendapy cannot read is failed and unlocked at once (``unreadable_failure``,
    through ``writes``, fenced) and left out; when a round won only such rows, it claims again (each
    failed one is no longer claimable), so they never hide good jobs.
    """
    params = claim_params(request, token, limit)
    if params is None:
        return []
    statement = claim_statement(table)
    locked_at = params["now"]
    for _ in range(_CLAIM_ROUNDS):
        async with pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(statement, params)
            rows = await cursor.fetchall()
            if not rows:
                return []
            jobs = [
                leased(row_to_document(row), token, locked_at, claimed_start=_started(row)) for row in rows
            ]
            started = [job for job in jobs if job.lease and job.lease.claimed_start and not job.unreadable]
            await writes.announce_claimed_starts(conn, started)
        broken = [job for job in jobs if job.unreadable]
        if broken:
            await writes.apply([(job, unreadable_failure(job, locked_at)) for job in broken])
            for job in broken:
                log_unreadable(job)
        readable = [job for job in jobs if not job.unreadable]
        if readable:
            return readable
    return []


def _started(row: Mapping[str, Any]) -> ClaimedStart | None:
    """The start the claim wrote into ``row`` (what it replaced), or None."""
    if not row.get("claim_started"):
        return None
    replaced = row_to_document(
        {"last_run_at": row["claim_replaced_last_run_at"], "next_run_at": row["claim_replaced_next_run_at"]}
    )
    return ClaimedStart(replaced.get("lastRunAt"), replaced.get("nextRunAt"))


async def renew_locks(writes: StateWrites, jobs: Sequence[Job], now: datetime) -> list[Job]:
    """Heartbeat: move each lease's ``locked_at`` to ``now`` in one round trip (fenced); returns the
    jobs whose lock is gone. Leases of runs writing their final state are left alone."""
    return await writes.renew_locks(jobs, to_millis(now))


async def release(writes: StateWrites, jobs: Sequence[Job], *, reschedule_at: datetime | None = None) -> None:
    """Unlock leased jobs in one round trip (fenced). With ``reschedule_at`` they become due then; a
    job without a next run (a recovered crash) becomes due now, so no release strands it. Each one
    left claimable is announced on the jobs channel (by the write itself)."""
    await writes.release(jobs, reschedule_at=reschedule_at)


async def refresh_run_fields(pool: AsyncConnectionPool[Any], table: str, job: Job) -> None:
    """Reload lastRunAt, lockedAt and lastFinishedAt from the job's row (raises JobNotFound)."""
    found = None
    job_id = job_uuid(job.id)
    if job_id is not None:
        async with pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                sql.SQL("SELECT last_run_at, locked_at, last_finished_at FROM {} WHERE id = %s").format(
                    sql.Identifier(table)
                ),
                [job_id],
            )
            row = await cursor.fetchone()
        found = None if row is None else row_to_document(row)
    refresh_from(job, found)


class RunPath:
    """The run-path half of the ``JobStore`` protocol on one table, for ``PostgresJobStore`` to
    delegate to method by method (same names and signatures as the protocol's).

    Args:
        pool: the store's pool (called per use: the store may reconnect).
        table: the jobs table.
        channel: the jobs notification channel (run steps go to ``<channel>:state``).
        window: seconds the state writes of runs gather before they are sent together.
        unavailable: turns a lost connection into the store's "database unavailable" error.
    """

    def __init__(
        self,
        pool: Callable[[], AsyncConnectionPool[Any]],
        table: str,
        *,
        channel: str,
        window: float,
        unavailable: Callable[[Exception], Exception],
    ) -> None:
        self._pool = pool
        self._table = table
        self._channel = channel
        self.writes = StateWrites(pool, table, window=window, channel=channel, unavailable=unavailable)

    async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
        """See :func:`claim`."""
        return await claim(self._pool(), self._table, request, token, limit, writes=self.writes)

    async def save_state(self, job: Job, *, fields: Sequence[str] | None = None) -> bool:
        """Write the worker-managed fields (all, or those named), fenced by the lease if there is one."""
        return await self.writes.save_state(job, fields)

    async def save_state_batched(self, job: Job, *, stamp: Collection[str] = ()) -> bool:
        """``save_state`` of every field; the writes of runs within the window go out together."""
        if job.lease is None:
            return await self.writes.save_state(job)
        return await self.writes.queue(job, stamp)

    async def remove_finished(self, job_id: str) -> None:
        """Delete a finished job by id; the deletions within the window go out as one statement."""
        await self.writes.queue_removal(job_id)

    async def renew_locks(self, jobs: Sequence[Job], now: datetime) -> list[Job]:
        """See :func:`renew_locks`."""
        return await renew_locks(self.writes, jobs, now)

    async def release(self, jobs: Sequence[Job], *, reschedule_at: datetime | None = None) -> None:
        """See :func:`release`."""
        await release(self.writes, jobs, reschedule_at=reschedule_at)

    async def refresh_run_fields(self, job: Job) -> None:
        """See :func:`refresh_run_fields`."""
        await refresh_run_fields(self._pool(), self._table, job)

    def due_changes(self) -> AsyncIterator[tuple[str, datetime | None]]:
        """See :func:`agendapy.store.postgres.notify.due_changes`."""
        return notify.due_changes(self._pool(), self._channel)

    async def run_changes(self) -> AsyncIterator[dict[str, Any]]:
        """See :func:`agendapy.store.postgres.notify.run_changes`."""
        return await notify.run_changes(self._pool(), self._channel, table=self._table)

    async def drain(self, timeout: float = 5.0) -> None:
        """Send the batched writes still waiting (``close()`` calls this first)."""
        await self.writes.drain(timeout)

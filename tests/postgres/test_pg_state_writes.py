"""Fenced state writes on PostgreSQL: a write through a lease applies only while that lock is the stored
one; batched writes of many runs go out together and each reports its own outcome."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any, cast

import pg_run_support
import pytest
from pg_run_support import add_jobs, execute, request_for, row

from agendapy.errors import JobNotFound
from agendapy.job import Job
from agendapy.schedule.timezones import utcnow
from agendapy.store.postgres import PostgresJobStore
from agendapy.store.postgres.claims import claim, refresh_run_fields, release, renew_locks
from agendapy.store.postgres.state_writes import StateWrites

pg_store, writes = pg_run_support.pg_store, pg_run_support.writes


async def claimed(store: PostgresJobStore, writes: StateWrites, count: int, token: str = "tok") -> list[Job]:
    await add_jobs(store, "work", count)
    jobs = await claim(store.pool, store.table, request_for(["work"]), token, count, writes=writes)
    assert len(jobs) == count
    return jobs


async def take_over(store: PostgresJobStore, job: Job) -> None:
    """Another worker claims the job (its lock expired as far as that worker can tell)."""
    request = request_for(["work"], lock_lifetime=-timedelta(hours=1))
    async with store.pool.connection() as conn:
        await conn.execute(
            f'UPDATE "{store.table}" SET locked_at = %s, lock_token = %s WHERE id = %s',
            [request.now + timedelta(seconds=1), "thief", job.id],
        )


async def test_a_fenced_write_is_refused_after_a_takeover(
    pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    (job,) = await claimed(pg_store, writes, 1)
    job.progress = 0.5
    assert await writes.save_state(job, ["progress"]) is True
    assert (await row(pg_store, job.id))["progress"] == 0.5
    await take_over(pg_store, job)
    job.progress = 0.9
    assert await writes.save_state(job, ["progress"]) is False
    assert (await row(pg_store, job.id))["progress"] == 0.5  # the thief's run owns the row now
    job.locked_at = utcnow()
    assert await writes.queue(job, ("last_run_at",)) is False
    assert await renew_locks(writes, [job], utcnow()) == [job]


async def test_a_node_takeover_moves_only_locked_at_and_still_fences_us_out(
    pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    (job,) = await claimed(pg_store, writes, 1)
    # Node's getNextJobToRun sets locked_at (and last_modified_by), never lock_token.
    await execute(pg_store, f'UPDATE "{pg_store.table}" SET locked_at = now() WHERE id = %s', [job.id])
    job.fail_reason = "stale"
    assert await writes.save_state(job, ["fail_reason"]) is False
    assert (await row(pg_store, job.id))["fail_reason"] is None


class CountingPool:
    """The store's pool, counting the connections taken (one per round trip of the writer)."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.taken = pool, 0

    def connection(self) -> Any:
        self.taken += 1
        return self.pool.connection()


async def test_batched_writes_go_together_and_report_each_outcome(pg_store: PostgresJobStore) -> None:
    counting = CountingPool(pg_store.pool)
    writes = StateWrites(lambda: cast(Any, counting), pg_store.table, window=0.05, channel=pg_store.channel)
    jobs = await claimed(pg_store, writes, 4)
    await take_over(pg_store, jobs[1])
    await execute(pg_store, f'DELETE FROM "{pg_store.table}" WHERE id = %s', [jobs[2].id])
    for job in jobs:
        job.last_run_at = utcnow()
    counting.taken = 0
    outcomes = await asyncio.gather(*(writes.queue(job, ("last_run_at",)) for job in jobs))
    assert outcomes == [True, False, False, True]
    assert counting.taken == 1  # four runs' writes, one round trip
    first, last = await row(pg_store, jobs[0].id), await row(pg_store, jobs[3].id)
    # Stamped with the moment of the batch's write: one value for all, held by the jobs too.
    assert first["last_run_at"] == last["last_run_at"] == jobs[0].last_run_at == jobs[3].last_run_at
    assert first["locked_at"] == jobs[0].lease.locked_at == first["last_run_at"]  # type: ignore[union-attr]
    assert (await row(pg_store, jobs[1].id))["lock_token"] == "thief"

    # The final writes of a start and an end of runs, different columns, in the same batch.
    jobs[0].locked_at, jobs[0].last_finished_at = None, utcnow()
    jobs[3].progress, jobs[3].checkpoint_state = 0.25, {"step": 2, "seen": ["a", None]}
    counting.taken = 0
    done = await asyncio.gather(writes.queue(jobs[0], ("last_finished_at",)), writes.queue(jobs[3], ()))
    assert done == [True, True]
    assert counting.taken == 1  # two statements (different columns) in one pipeline
    ended = await row(pg_store, jobs[0].id)
    assert ended["locked_at"] is None and ended["lock_token"] is None
    assert ended["last_finished_at"] == jobs[0].last_finished_at
    kept = await row(pg_store, jobs[3].id)
    assert (kept["progress"], kept["checkpoint"]) == (0.25, {"step": 2, "seen": ["a", None]})


async def test_a_value_the_column_refuses_fails_that_job_alone(
    pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    bad, good = await claimed(pg_store, writes, 2)
    bad.checkpoint_state = {"ratio": math.nan}  # JSON has no NaN
    bad.next_run_at = None
    for job in (bad, good):
        job.last_run_at = utcnow()
    outcomes = await asyncio.gather(writes.queue(bad, ()), writes.queue(good, ()))
    assert outcomes == [False, True]
    stored = await row(pg_store, bad.id)
    assert stored["locked_at"] is None and stored["lock_token"] is None
    assert (
        "could not save this run's state" in stored["fail_reason"] and "checkpoint" in stored["fail_reason"]
    )
    assert stored["fail_count"] == 1
    assert (await row(pg_store, good.id))["last_run_at"] == good.last_run_at


async def test_heartbeats_release_and_refresh(pg_store: PostgresJobStore, writes: StateWrites) -> None:
    kept, lost, handed_back = await claimed(pg_store, writes, 3)
    await take_over(pg_store, lost)
    beat = utcnow() + timedelta(seconds=2)
    assert await renew_locks(writes, [kept, lost], beat) == [lost]
    assert (await row(pg_store, kept.id))["locked_at"] == beat == kept.lease.locked_at  # type: ignore[union-attr]

    later = utcnow() + timedelta(minutes=3)
    await release(writes, [handed_back], reschedule_at=later)
    stored = await row(pg_store, handed_back.id)
    assert (stored["locked_at"], stored["lock_token"], stored["next_run_at"]) == (None, None, later)

    await refresh_run_fields(pg_store.pool, pg_store.table, kept)
    assert kept.locked_at == beat
    with pytest.raises(JobNotFound):
        await refresh_run_fields(pg_store.pool, pg_store.table, Job(name="work", id="not-a-uuid"))


async def test_a_write_without_a_lease_and_an_id_that_is_no_uuid(
    pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    (job,) = await add_jobs(pg_store, "plain", 1)
    job.fail_reason = "noted"
    assert await writes.save_state(job, ["fail_reason"]) is True
    assert (await row(pg_store, job.id))["fail_reason"] == "noted"
    assert await writes.save_state(Job(name="plain", id="12345"), ["fail_reason"]) is False

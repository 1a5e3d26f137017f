"""Claims on PostgreSQL: one statement locks a batch (FOR UPDATE SKIP LOCKED), never the same job
twice, within each name's room, in claim order; expired locks come back; unreadable rows are failed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pg_run_support
import pytest
from pg_run_support import add_jobs, execute, request_for, row
from psycopg.rows import tuple_row

from agendapy.job import Job
from agendapy.schedule.timezones import utcnow
from agendapy.store.postgres import PostgresJobStore
from agendapy.store.postgres.claims import claim, claim_params, claim_statement
from agendapy.store.postgres.state_writes import StateWrites

pg_store, writes = pg_run_support.pg_store, pg_run_support.writes


async def test_concurrent_claimers_never_get_the_same_job(
    pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    jobs = await add_jobs(pg_store, "work", 400)
    won: list[list[str]] = []

    async def claimer(n: int) -> None:
        mine: list[str] = []
        while True:
            batch = await claim(
                pg_store.pool, pg_store.table, request_for(["work"]), f"t{n}", 7, writes=writes
            )
            if not batch:
                break
            mine.extend(str(job.id) for job in batch)
        won.append(mine)

    # Eight claimers at once, each on its own pool connection.
    await asyncio.gather(*(claimer(n) for n in range(8)))
    every = [job_id for mine in won for job_id in mine]
    assert len(every) == len(set(every)), "a job was claimed twice"
    assert sorted(every) == sorted(str(job.id) for job in jobs)
    assert sum(1 for mine in won if mine) > 1, "the claimers did not run concurrently"


async def test_a_claim_locks_with_its_token_and_owner_and_returns_claim_order(
    pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    now = utcnow()
    due = now - timedelta(seconds=30)
    low, high = Job(name="a", next_run_at=due, priority=0), Job(name="a", next_run_at=due, priority=10)
    first = Job(name="b", next_run_at=now - timedelta(minutes=5))
    later = Job(name="a", next_run_at=now + timedelta(minutes=5))  # not due yet
    disabled = Job(name="a", next_run_at=due, disabled=True)
    await pg_store.insert_many([low, high, first, later, disabled], last_modified_by=None)
    claimed = await claim(
        pg_store.pool, pg_store.table, request_for(["a", "b"], now=now), "tok", 10, writes=writes
    )
    # Earliest due first; at the same moment, the higher priority first.
    assert [job.id for job in claimed] == [first.id, high.id, low.id]
    for job in claimed:
        assert job.lease is not None and job.lease.token == "tok" and job.lease.locked_at == now
        stored = await row(pg_store, job.id)
        assert (stored["locked_at"], stored["lock_token"]) == (now, "tok")
        assert stored["last_modified_by"] == "test-worker"
    again = await claim(pg_store.pool, pg_store.table, request_for(["a", "b"]), "other", 10, writes=writes)
    assert again == []


async def test_per_name_room_is_honoured_and_a_full_name_never_stops_the_others(
    pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    # "full" holds the most overdue jobs: with one cap for the whole batch it would take every slot.
    await add_jobs(pg_store, "full", 10, ago=timedelta(hours=1))
    await add_jobs(pg_store, "some", 10, ago=timedelta(minutes=30))
    await add_jobs(pg_store, "free", 10, ago=timedelta(minutes=1))

    request = request_for(["full", "some", "free"], per_name={"full": 0, "some": 2})
    claimed = await claim(pg_store.pool, pg_store.table, request, "t1", 5, writes=writes)
    assert [job.name for job in claimed] == ["some", "some", "free", "free", "free"]

    request = request_for(["full"], per_name={"full": 0})
    assert await claim(pg_store.pool, pg_store.table, request, "t2", 5, writes=writes) == []
    assert claim_params(request, "t2", 5) is None


async def test_an_expired_lock_is_claimed_again_and_a_live_one_is_not(
    pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    now = utcnow()
    dead, alive = await add_jobs(pg_store, "work", 2)
    await execute(pg_store, f'UPDATE "{pg_store.table}" SET locked_at = %s, lock_token = %s WHERE id = %s',
                  [now - timedelta(hours=1), "crashed", dead.id])  # fmt: skip
    await execute(pg_store, f'UPDATE "{pg_store.table}" SET locked_at = %s, lock_token = %s WHERE id = %s',
                  [now - timedelta(seconds=5), "running", alive.id])  # fmt: skip
    claimed = await claim(
        pg_store.pool, pg_store.table, request_for(["work"], now=now), "new", 5, writes=writes
    )
    assert [job.id for job in claimed] == [dead.id]
    assert (await row(pg_store, dead.id))["lock_token"] == "new"
    assert (await row(pg_store, alive.id))["lock_token"] == "running"


@pytest.mark.parametrize(
    ("column", "stored", "field"),
    [
        ("skip_days", '["monday"]', "skipDays"),
        ("requires", "[1, 2]", "requires"),
        ("misfire", "sometimes", "misfire"),
        ("progress", "NaN", "progress"),
        ("repeat_interval", None, None),  # readable: the control case
    ],
)
async def test_an_unreadable_row_is_failed_and_unlocked_and_the_next_job_taken(
    pg_store: PostgresJobStore, writes: StateWrites, column: str, stored: str | None, field: str | None
) -> None:
    odd, good = await add_jobs(pg_store, "work", 2)
    # Another tool (or an older version) stored a value agendapy cannot read.
    await execute(pg_store, f'UPDATE "{pg_store.table}" SET {column} = %s WHERE id = %s', [stored, odd.id])
    claimed = await claim(pg_store.pool, pg_store.table, request_for(["work"]), "tok", 1, writes=writes)
    if field is None:
        assert [job.id for job in claimed] == [odd.id]
        return
    assert [job.id for job in claimed] == [good.id]
    found = await row(pg_store, odd.id)
    assert found["locked_at"] is None and found["lock_token"] is None and found["next_run_at"] is None
    assert field in found["fail_reason"] and "cannot read" in found["fail_reason"]


async def test_the_claim_reads_about_as_many_rows_as_it_locks(pg_store: PostgresJobStore) -> None:
    now = utcnow()
    await execute(
        pg_store,
        f"""INSERT INTO "{pg_store.table}" (name, next_run_at, priority, locked_at)
            SELECT 'n' || (i %% 4), %s - (i || ' seconds')::interval - interval '1 day', i %% 3,
                   CASE WHEN i %% 500 = 0 THEN %s ELSE NULL END
            FROM generate_series(1, 20000) AS i""",
        [now + timedelta(days=2), now - timedelta(seconds=1)],
    )  # most rows are due in a day: the claim must not read them
    await execute(pg_store, f'ANALYZE "{pg_store.table}"')
    params = claim_params(request_for(["n0", "n1", "n2", "n3"], now=now), "tok", 10)
    assert params is not None
    async with pg_store.pool.connection() as conn:
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute(b"EXPLAIN (ANALYZE, FORMAT TEXT) " + claim_statement(pg_store.table).as_bytes(conn),
                             params)  # fmt: skip
        plan = "\n".join(line for (line,) in await cursor.fetchall())
    assert f"{pg_store.table}_find_and_lock_idx" in plan
    assert f"{pg_store.table}_locked_at_idx" in plan
    assert "Seq Scan" not in plan, plan

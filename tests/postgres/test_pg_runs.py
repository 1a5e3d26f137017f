"""PostgresRunStore on a real PostgreSQL: the run-record contract (guard, take-over, trim, coverage,
history) plus what is PostgreSQL's own: concurrent starts on separate connections, concurrent schema
creation, expiry without a TTL index, dates in any session time zone, text a TEXT column refuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from agendapy import InvalidInput
from agendapy.dependencies import assess
from agendapy.schedule import RunInterval, utcnow
from agendapy.store.postgres.runs import PostgresRunStore
from agendapy.store.runs import RunRecord

HOUR = timedelta(hours=1)


@pytest.fixture(params=["store", "plain"])
async def pool(pg_url: str, request: pytest.FixtureRequest) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A pool as the job store makes it (autocommit, dict rows) or psycopg's defaults; its session time
    zone far from UTC: every date must still read back as aware UTC."""
    kwargs: dict[str, Any] = {"options": "-c TimeZone=Asia/Kolkata"}
    if request.param == "store":
        kwargs |= {"autocommit": True, "row_factory": dict_row}
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        pg_url, min_size=1, max_size=8, open=False, kwargs=kwargs
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


async def make_runs(pool: AsyncConnectionPool[Any], **options: Any) -> PostgresRunStore:
    options.setdefault("ttl", timedelta(days=30))
    options.setdefault("keep_per_name", 1000)
    runs = PostgresRunStore(pool, **options)
    await runs.create_tables()
    return runs


@pytest.fixture
async def runs(pool: AsyncConnectionPool[Any]) -> PostgresRunStore:
    return await make_runs(pool)


def hour(start: datetime, hours: int = 1) -> RunInterval:
    return RunInterval(start, start + hours * HOUR)


def base_hour() -> datetime:
    return utcnow().replace(minute=0, second=0, microsecond=0) - 24 * HOUR


async def start(runs: PostgresRunStore, name: str, **options: Any) -> str | None:
    options.setdefault("job_id", None)
    options.setdefault("interval", None)
    options.setdefault("guard", False)
    options.setdefault("started_at", utcnow())
    options.setdefault("worker", None)
    return await runs.start(name=name, **options)


async def query(runs: PostgresRunStore, **options: Any) -> list[RunRecord]:
    for key in ("name", "since", "until", "status"):
        options.setdefault(key, None)
    options.setdefault("limit", 0)
    return await runs.query(**options)


async def scalar(pool: AsyncConnectionPool[Any], statement: str, *params: Any) -> Any:
    async with pool.connection() as conn:
        row = await (await conn.cursor(row_factory=tuple_row).execute(statement, params)).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]


async def test_create_tables_is_idempotent_and_safe_when_processes_start_together(
    pool: AsyncConnectionPool[Any],
) -> None:
    stores = [PostgresRunStore(pool, ttl=HOUR, keep_per_name=10) for _ in range(4)]
    await asyncio.gather(*(store.create_tables() for store in stores))
    await stores[0].create_tables()
    indexes = await scalar(
        pool,
        "SELECT array_agg(indexname::text ORDER BY indexname) FROM pg_indexes WHERE tablename = %s",
        "agendapy_runs",
    )
    assert indexes == [
        "agendapy_runs_by_interval_idx",
        "agendapy_runs_by_job_idx",
        "agendapy_runs_by_name_idx",
        "agendapy_runs_interval_key_idx",
        "agendapy_runs_pkey",
        "agendapy_runs_started_at_idx",
    ]


async def test_start_finish_and_query_with_dates_in_milliseconds_and_utc(runs: PostgresRunStore) -> None:
    started = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
    interval = RunInterval(datetime(2026, 3, 1, 9, tzinfo=UTC), datetime(2026, 3, 1, 10, tzinfo=UTC))
    run_id = await start(runs, "load", job_id="j1", interval=interval, started_at=started, worker="w1")
    assert run_id is not None and len(run_id) == 24  # ObjectId text, as in MongoDB
    [record] = await query(runs, name="load")
    assert (record.id, record.job_id, record.status, record.worker) == (run_id, "j1", "running", "w1")
    assert record.started_at == started.replace(microsecond=123000)
    assert record.started_at.tzinfo == UTC and record.interval_ended_at == interval.ended_at
    assert record.interval_started_at is not None and record.interval_started_at.tzinfo == UTC
    await runs.finish(run_id, status="failed", finished_at=started + HOUR, error="boom")
    [record] = await query(runs, name="load", status="failed")
    assert (record.finished_at, record.error) == (started.replace(microsecond=123000) + HOUR, "boom")
    assert await query(runs, name="load", status="succeeded") == []
    await runs.finish("not-an-id", status="succeeded", finished_at=utcnow(), error=None)  # no crash


async def test_query_is_newest_first_with_bounds_limit_and_job(runs: PostgresRunStore) -> None:
    t0 = utcnow() - timedelta(minutes=10)
    for i in range(5):
        name, job_id = ("n", "j1") if i % 2 == 0 else ("m", "j2")
        await start(runs, name, job_id=job_id, started_at=t0 + timedelta(minutes=i), worker=str(i))
    same_ms = utcnow()
    for worker in ("x", "y", "z"):  # one millisecond: the id keeps the order they started in
        await start(runs, "tie", started_at=same_ms, worker=worker)
    assert [r.worker for r in await query(runs, name="tie")] == ["z", "y", "x"]
    assert [r.worker for r in await query(runs, name="n")] == ["4", "2", "0"]
    window = await query(runs, since=t0 + timedelta(minutes=1), until=t0 + timedelta(minutes=3))
    assert [r.worker for r in window] == ["2", "1"]  # since inclusive, until exclusive
    assert [r.worker for r in await query(runs, limit=2)] == ["z", "y"]
    assert [r.worker for r in await query(runs, job_id="j2")] == ["3", "1"]
    assert await query(runs, name="n", job_id="j2") == []


async def test_concurrent_guarded_starts_on_separate_connections_let_exactly_one_through(
    pool: AsyncConnectionPool[Any], runs: PostgresRunStore
) -> None:
    base = base_hour()
    for i in range(5):
        interval = hour(base + i * HOUR)
        # Each start takes its own pooled connection, so the inserts really race in the server.
        results = await asyncio.gather(
            *(start(runs, "race", job_id=f"job{j}", interval=interval, guard=True) for j in range(6))
        )
        assert sum(result is not None for result in results) == 1, results
    assert await scalar(pool, "SELECT count(*) FROM agendapy_runs WHERE name = 'race'") == 5


async def test_the_guard_and_the_take_over_of_a_running_run_of_the_same_job(
    pool: AsyncConnectionPool[Any], runs: PostgresRunStore
) -> None:
    interval = hour(base_hour())
    first = await start(runs, "g", job_id="j1", interval=interval, guard=True, worker="dead")
    assert first is not None
    resumed = await start(runs, "g", job_id="j1", interval=interval, guard=True, worker="alive")
    assert resumed == first
    [record] = await query(runs, name="g")
    assert (record.worker, record.status) == ("alive", "running")
    assert await scalar(pool, "SELECT attempts FROM agendapy_runs WHERE id = %s", first) == 1
    # Another job document of the same name: the interval is taken.
    assert await start(runs, "g", job_id="j2", interval=interval, guard=True, worker="x") is None
    # Finished: nobody takes it over, not even the same job.
    await runs.finish(first, status="succeeded", finished_at=utcnow(), error=None)
    assert await start(runs, "g", job_id="j1", interval=interval, guard=True, worker="w2") is None
    # Other names and other intervals are free; unguarded runs never collide.
    assert await start(runs, "h", job_id="j1", interval=interval, guard=True)
    assert await start(runs, "g", job_id="j1", interval=hour(interval.ended_at), guard=True)
    free = [await start(runs, "g", job_id="j1", interval=interval) for _ in range(3)]
    assert len(set(free)) == 3 and None not in free


async def test_a_skipped_run_is_finished_when_recorded(runs: PostgresRunStore) -> None:
    run_id = await start(
        runs, "s", interval=hour(base_hour()), status="skipped", error="'dep' is not scheduled"
    )
    assert run_id is not None
    [record] = await query(runs, name="s")
    assert (record.status, record.error) == ("skipped", "'dep' is not scheduled")
    assert record.finished_at == record.started_at


async def test_trim_keeps_the_newest_records_and_running_ones(pool: AsyncConnectionPool[Any]) -> None:
    runs = await make_runs(pool, keep_per_name=2)
    t0 = utcnow() - timedelta(minutes=10)
    for i in range(5):
        run_id = await start(runs, "t", started_at=t0 + timedelta(minutes=i), worker=str(i))
        assert run_id
        if i != 0:
            await runs.finish(run_id, status="succeeded", finished_at=utcnow(), error=None)
    await start(runs, "other", started_at=t0, worker="o")
    await runs.trim("t")
    assert [r.worker for r in await query(runs, name="t")] == ["4", "3", "0"]  # "0" is still running
    assert len(await query(runs, name="other")) == 1
    await runs.trim("nothing-recorded")


async def test_records_past_the_ttl_are_deleted_by_start_and_by_trim(pool: AsyncConnectionPool[Any]) -> None:
    runs = await make_runs(pool, ttl=HOUR)
    now = utcnow()
    await start(runs, "old", started_at=now - 2 * HOUR, worker="old")  # the first start expires...
    await start(runs, "new", started_at=now, worker="new")  # ...and then at most once a minute
    assert {r.worker for r in await query(runs)} == {"old", "new"}
    # Another process (its own store) starting now deletes it.
    later = await make_runs(pool, ttl=HOUR)
    await start(later, "new", started_at=now, worker="newer")
    assert {r.worker for r in await query(runs)} == {"new", "newer"}
    await start(runs, "old", started_at=now - 2 * HOUR, worker="old again")
    await runs.trim("new")  # trim always expires, whatever the name
    assert {r.worker for r in await query(runs)} == {"new", "newer"}


async def record(runs: PostgresRunStore, name: str, begin: datetime, hours: int, status: str) -> None:
    run_id = await start(runs, name, interval=hour(begin, hours))
    assert run_id
    if status != "running":
        error = "bad" if status == "failed" else None
        await runs.finish(run_id, status=status, finished_at=utcnow(), error=error)  # type: ignore[arg-type]


async def test_coverage_returns_overlapping_runs_and_the_first_and_last_interval(
    runs: PostgresRunStore,
) -> None:
    t = base_hour()
    await record(runs, "dep", t, 1, "succeeded")
    await record(runs, "dep", t + HOUR, 1, "failed")
    await record(runs, "dep", t + 2 * HOUR, 1, "running")
    await record(runs, "dep", t + 5 * HOUR, 1, "skipped")
    await start(runs, "dep", worker="one-off")  # no interval: never counts
    covering = await runs.coverage("dep", RunInterval(t + timedelta(minutes=30), t + 3 * HOUR))
    assert [(r.interval_started_at, r.status) for r in covering.overlapping] == [
        (t, "succeeded"),
        (t + HOUR, "failed"),
        (t + 2 * HOUR, "running"),
    ]
    assert (covering.first_started_at, covering.last_started_at) == (t, t + 5 * HOUR)
    assert covering.first_started_at is not None and covering.first_started_at.tzinfo == UTC
    # Runs outside the interval still bound it; nothing overlapping is an empty list.
    later = await runs.coverage("dep", hour(t + 10 * HOUR))
    assert (later.overlapping, later.first_started_at, later.last_started_at) == ([], t, t + 5 * HOUR)
    none = await runs.coverage("other", hour(t))
    assert (none.overlapping, none.first_started_at, none.last_started_at) == ([], None, None)
    judged = assess("dep", hour(t), await runs.coverage("dep", hour(t)))
    assert judged is not None and judged.met
    judged = assess("dep", hour(t, 2), await runs.coverage("dep", hour(t, 2)))
    assert judged is not None and not judged.met and judged.final


async def test_text_a_text_column_refuses_is_stored_readably(runs: PostgresRunStore) -> None:
    run_id = await start(runs, "odd", worker="w\x00orker")
    assert run_id is not None
    await runs.finish(run_id, status="failed", finished_at=utcnow(), error="bad \x00 byte \ud800")
    [record] = await query(runs, name="odd")
    assert (record.worker, record.error) == ("w\ufffdorker", "bad \ufffd byte \ufffd")


async def test_an_unknown_status_written_by_hand_reads_as_failed(
    pool: AsyncConnectionPool[Any], runs: PostgresRunStore
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO agendapy_runs (id, name, interval_key, started_at, status)"
            " VALUES ('x1', 'hand', 'x1', now(), 'exploded')"
        )
    [record] = await query(runs, name="hand")
    assert (record.id, record.status, record.job_id) == ("x1", "failed", None)


async def test_bad_options_are_refused_naming_the_field(pool: AsyncConnectionPool[Any]) -> None:
    with pytest.raises(InvalidInput, match="table"):
        PostgresRunStore(pool, table="x" * 41, ttl=HOUR, keep_per_name=1)
    with pytest.raises(InvalidInput, match="table"):
        PostgresRunStore(pool, table="", ttl=HOUR, keep_per_name=1)
    with pytest.raises(InvalidInput, match="ttl"):
        PostgresRunStore(pool, ttl=timedelta(0), keep_per_name=1)
    with pytest.raises(InvalidInput, match="keep_per_name"):
        PostgresRunStore(pool, ttl=HOUR, keep_per_name=-1)


async def test_a_table_name_of_its_own(pool: AsyncConnectionPool[Any]) -> None:
    with pytest.raises(InvalidInput, match="table"):
        PostgresRunStore(pool, table='runs"; DROP TABLE x; --', ttl=HOUR, keep_per_name=1)
    runs = await make_runs(pool, table="My_Runs")
    assert await start(runs, "q", interval=hour(base_hour()), guard=True)
    assert await start(runs, "q", interval=hour(base_hour()), guard=True, job_id="other") is None
    assert [r.name for r in await query(runs)] == ["q"]
    with pytest.raises(psycopg.errors.UndefinedTable):
        async with pool.connection() as conn:
            await conn.execute("SELECT 1 FROM agendapy_runs")


async def test_every_statement_uses_its_index_on_a_large_history(
    pool: AsyncConnectionPool[Any], runs: PostgresRunStore
) -> None:
    async with pool.connection() as conn:
        # 200 names with 100 interval runs each, an hour apart.
        await conn.execute(
            "INSERT INTO agendapy_runs (id, name, job_id, interval_started_at, interval_ended_at,"
            " interval_key, started_at, finished_at, status)"
            " SELECT lpad(to_hex(g), 24, '0'), 'job' || g % 200, 'j' || g % 200, at, at + interval '1 hour',"
            " 'job' || g % 200 || '@' || g, at, at, 'succeeded'"
            " FROM generate_series(1, 20000) g, LATERAL (SELECT now() - g / 200 * interval '1 hour' AS at) t"
        )
        await conn.execute("ANALYZE agendapy_runs")

    async def plan(statement: sql.Composed, params: Any) -> str:
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + statement, params)
            row = await cur.fetchone()
            assert row is not None
            return json.dumps(row[0])

    t = utcnow() - 50 * HOUR
    expected = {
        "agendapy_runs_by_name_idx": [
            runs._history(50, {"name": "job7", "since": None, "until": None, "status": None}),
            (runs._trim, {"name": "job7", "keep": 10}),
        ],
        "agendapy_runs_by_job_idx": [
            runs._history(50, {"name": None, "since": None, "until": None, "status": None, "job_id": "j7"}),
        ],
        "agendapy_runs_by_interval_idx": [(runs._coverage, {"name": "job7", "start": t, "end": t + HOUR})],
        "agendapy_runs_interval_key_idx": [
            (runs._take_over, {"worker": "w", "started_at": t, "interval_key": "job7@7", "job_id": "j7"})
        ],
        "agendapy_runs_started_at_idx": [(runs._expiry, [utcnow() - 1000 * HOUR])],
    }
    for index, statements in expected.items():
        for statement, params in statements:
            explained = await plan(statement, params)
            assert index in explained and "Seq Scan" not in explained, explained

"""Store contract: run records (history, the unique interval guard and its take-over, coverage, trim)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from contract_helpers import MakeStore, ms, utcnow

from agendapy.dependencies import Requirement, assess
from agendapy.schedule import RunInterval
from agendapy.store.base import JobStore
from agendapy.store.runs import RunRecord

HOUR = timedelta(hours=1)


def hour(start: datetime, hours: int = 1) -> RunInterval:
    return RunInterval(start, start + hours * HOUR)


def base_hour() -> datetime:
    return utcnow().replace(minute=0, second=0, microsecond=0) - 24 * HOUR


async def start(store: JobStore, name: str, **options: Any) -> str | None:
    """``runs.start`` with defaults: no job, no interval, unguarded, started now."""
    options.setdefault("job_id", None)
    options.setdefault("interval", None)
    options.setdefault("guard", False)
    options.setdefault("started_at", ms(utcnow()))
    options.setdefault("worker", None)
    return await store.runs.start(name=name, **options)


async def query(store: JobStore, **options: Any) -> list[RunRecord]:
    """``runs.query`` with defaults: every name, no bounds, any status, no limit."""
    for key in ("name", "since", "until", "status"):
        options.setdefault(key, None)
    options.setdefault("limit", 0)
    return await store.runs.query(**options)


async def test_start_finish_and_query(store: JobStore) -> None:
    started = ms(utcnow())
    interval = hour(base_hour())
    run_id = await start(store, "load", job_id="j1", interval=interval, started_at=started, worker="w1")
    assert run_id
    [record] = await query(store, name="load", limit=10)
    assert (record.id, record.name, record.job_id, record.status, record.worker) == (
        run_id,
        "load",
        "j1",
        "running",
        "w1",
    )
    assert (record.interval_started_at, record.interval_ended_at) == (interval.started_at, interval.ended_at)
    assert record.started_at == started and record.finished_at is None and record.error is None
    finished = started + timedelta(seconds=2)
    await store.runs.finish(run_id, status="failed", finished_at=finished, error="boom")
    [record] = await query(store, name="load", status="failed")
    assert (record.status, record.finished_at, record.error) == ("failed", finished, "boom")
    assert await query(store, name="load", status="succeeded") == []


async def test_a_skipped_run_is_finished_when_recorded(store: JobStore) -> None:
    started = ms(utcnow())
    await start(store, "s", started_at=started, status="skipped")
    [record] = await query(store, name="s")
    assert record.status == "skipped" and record.finished_at == started
    assert record.interval_started_at is None and record.job_id is None


async def test_query_is_newest_first_with_bounds_and_limit(store: JobStore) -> None:
    t0 = ms(utcnow()) - timedelta(minutes=10)
    for i in range(5):
        await start(store, "n" if i % 2 == 0 else "m", started_at=t0 + timedelta(minutes=i), worker=str(i))
    assert [r.worker for r in await query(store)] == ["4", "3", "2", "1", "0"]
    assert [r.worker for r in await query(store, name="n")] == ["4", "2", "0"]
    window = await query(store, since=t0 + timedelta(minutes=1), until=t0 + timedelta(minutes=3))
    assert [r.worker for r in window] == ["2", "1"]  # since inclusive, until exclusive
    assert [r.worker for r in await query(store, limit=2)] == ["4", "3"]


async def test_query_by_job(store: JobStore) -> None:
    for worker, job_id in (("a", "j1"), ("b", "j2"), ("c", "j1"), ("d", None)):
        await start(store, "same", job_id=job_id, worker=worker)
    assert sorted(r.worker or "" for r in await query(store, job_id="j1")) == ["a", "c"]
    assert [r.worker for r in await query(store, name="same", job_id="j2")] == ["b"]
    assert await query(store, job_id="nope") == []


async def test_the_guard_lets_one_run_per_interval_through(store: JobStore) -> None:
    interval = hour(base_hour())
    first = await start(store, "g", job_id="j1", interval=interval, guard=True, worker="w1")
    assert first
    await store.runs.finish(first, status="succeeded", finished_at=ms(utcnow()), error=None)
    assert await start(store, "g", job_id="j1", interval=interval, guard=True, worker="w2") is None
    assert await start(store, "h", job_id="j1", interval=interval, guard=True, worker="w2")
    assert await start(store, "g", job_id="j1", interval=hour(interval.ended_at), guard=True, worker="w2")


async def test_a_running_guarded_run_of_the_same_job_is_taken_over(store: JobStore) -> None:
    interval = hour(base_hour())
    first = await start(store, "g", job_id="j1", interval=interval, guard=True, worker="dead")
    resumed = await start(store, "g", job_id="j1", interval=interval, guard=True, worker="alive")
    assert resumed == first
    [record] = await query(store, name="g")
    assert record.worker == "alive" and record.status == "running"
    assert await start(store, "g", job_id="j2", interval=interval, guard=True, worker="x") is None


async def test_concurrent_guards_let_exactly_one_through(store: JobStore) -> None:
    interval = hour(base_hour())
    results = await asyncio.gather(
        *(start(store, "race", job_id=f"job{i}", interval=interval, guard=True) for i in range(6))
    )
    assert sum(r is not None for r in results) == 1


async def test_unguarded_runs_never_collide(store: JobStore) -> None:
    interval = hour(base_hour())
    ids = [await start(store, "free", job_id="j", interval=interval) for _ in range(3)]
    assert len(set(ids)) == 3 and None not in ids


async def record(store: JobStore, name: str, begin: datetime, hours: int, status: str) -> None:
    run_id = await start(store, name, interval=hour(begin, hours))
    assert run_id
    if status != "running":
        error = "bad" if status == "failed" else None
        await store.runs.finish(run_id, status=status, finished_at=ms(utcnow()), error=error)  # type: ignore[arg-type]


async def covered(store: JobStore, name: str, interval: RunInterval) -> Requirement | None:
    """The dependency rule (agendapy.dependencies) applied to what the store returns."""
    return assess(name, interval, await store.runs.coverage(name, interval))


async def test_a_skipped_run_is_recorded_finished_with_its_reason_in_one_write(store: JobStore) -> None:
    t = base_hour()
    run_id = await start(store, "s", interval=hour(t), status="skipped", error="'dep' is not scheduled")
    assert run_id is not None
    [record] = await query(store, name="s")
    assert (record.status, record.error) == ("skipped", "'dep' is not scheduled")
    assert record.finished_at == record.started_at


async def test_coverage_returns_overlapping_runs_and_the_first_and_last_interval(store: JobStore) -> None:
    t = base_hour()
    await record(store, "dep", t, 1, "succeeded")
    await record(store, "dep", t + HOUR, 1, "failed")
    await record(store, "dep", t + 2 * HOUR, 1, "running")
    await record(store, "dep", t + 5 * HOUR, 1, "skipped")
    await start(store, "dep", started_at=ms(utcnow()), worker="one-off")  # no interval: never counts
    runs = await store.runs.coverage("dep", RunInterval(t + timedelta(minutes=30), t + 3 * HOUR))
    assert [(r.interval_started_at, r.status) for r in runs.overlapping] == [
        (t, "succeeded"),
        (t + HOUR, "failed"),
        (t + 2 * HOUR, "running"),
    ]
    assert (runs.first_started_at, runs.last_started_at) == (t, t + 5 * HOUR)
    none = await store.runs.coverage("other", hour(t))
    assert (none.overlapping, none.first_started_at, none.last_started_at) == ([], None, None)


async def test_coverage_needs_succeeded_runs_without_a_gap(store: JobStore) -> None:
    t = base_hour()
    await record(store, "dep", t, 1, "succeeded")
    await record(store, "dep", t + HOUR, 1, "succeeded")
    await record(store, "dep", t + 2 * HOUR, 1, "failed")
    await record(store, "dep", t + 3 * HOUR, 1, "running")
    await record(store, "dep", t + 5 * HOUR, 1, "succeeded")
    judged = await covered(store, "dep", hour(t, 2))
    assert judged is not None and judged.met
    judged = await covered(store, "dep", hour(t + HOUR, 2))
    assert judged is not None and not judged.met and "bad" in (judged.reason or "")
    assert judged.final  # "dep" has gone on to later intervals: the failed one is never run again
    judged = await covered(store, "dep", hour(t + 3 * HOUR))  # only a running one
    assert judged is not None and not judged.met
    judged = await covered(store, "dep", hour(t + 4 * HOUR, 2))  # a gap first
    assert judged is not None and not judged.met
    judged = await covered(store, "dep", RunInterval(t + timedelta(minutes=30), t + HOUR))
    assert judged is not None and judged.met  # part of one succeeded interval
    judged = await covered(store, "dep", hour(t - 2 * HOUR, 3))  # before its first interval: free
    assert judged is not None and judged.met
    assert await covered(store, "other", hour(t)) is None  # never ran: the job decides


async def test_a_requirement_is_waited_for_until_it_has_gone_on(store: JobStore) -> None:
    t = base_hour()
    await record(store, "dep", t, 1, "succeeded")
    await record(store, "dep", t + HOUR, 1, "failed")
    judged = await covered(store, "dep", hour(t, 2))
    assert judged is not None and not judged.met and not judged.final  # a retry can still cover it
    await record(store, "dep", t + 2 * HOUR, 1, "running")
    judged = await covered(store, "dep", hour(t, 2))
    assert judged is not None and judged.final and "gone on" in (judged.reason or "")


async def test_coverage_by_a_longer_run(store: JobStore) -> None:
    t = base_hour()
    await record(store, "daily", t, 24, "succeeded")
    judged = await covered(store, "daily", hour(t + 5 * HOUR))
    assert judged is not None and judged.met
    judged = await covered(store, "daily", hour(t + 23 * HOUR, 2))
    assert judged is not None and not judged.met and not judged.final


async def test_trim_keeps_the_newest_records_and_running_ones(make_store: MakeStore) -> None:
    store = await make_store(history_keep=2)
    t0 = ms(utcnow()) - timedelta(minutes=10)
    for i in range(5):
        run_id = await start(store, "t", started_at=t0 + timedelta(minutes=i), worker=str(i))
        assert run_id
        if i != 0:
            await store.runs.finish(run_id, status="succeeded", finished_at=ms(utcnow()), error=None)
    await start(store, "other", started_at=t0, worker="o")
    await store.runs.trim("t")
    assert [r.worker for r in await query(store, name="t")] == ["4", "3", "0"]  # "0" is still running
    assert len(await query(store, name="other")) == 1

"""Beyond Agenda: once-per-interval runs, run history, dependencies, misfires, fixed delay, run-due."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from agendapy import Agenda, Job, JobState, UnknownJob

from support import EventLog, wait_until


def floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


async def set_next_run(collection: Any, job: Job, at: datetime) -> None:
    await collection.update_one({"_id": ObjectId(job.id)}, {"$set": {"nextRunAt": at}})


# -- once per interval ----------------------------------------------------------------------------


async def test_each_interval_runs_once_across_two_workers(make_agenda: Any) -> None:
    seen: list[tuple[str, datetime, datetime]] = []

    async def tick(job: Job) -> None:
        assert job.interval_started_at is not None and job.interval_ended_at is not None
        seen.append((job.agenda.name if job.agenda else "?", job.interval_started_at, job.interval_ended_at))

    workers = [await make_agenda(name=f"w{i}") for i in range(2)]
    for agenda in workers:
        agenda.define("tick", tick, once_per_interval=True)
    await workers[0].every("* * * * * *", "tick")  # every second, 6-field cron
    for agenda in workers:
        await agenda.start()
    await wait_until(lambda: len(seen) >= 4, timeout=20)
    for agenda in workers:
        await agenda.stop(grace=2)

    ends = [end for _, _, end in seen]
    assert len(ends) == len(set(ends)), f"an interval ran twice: {ends}"
    for _, start, end in seen:
        assert end - start == timedelta(seconds=1)
        assert end.microsecond == 0
    records = await workers[0].runs("tick", limit=0)
    succeeded = [r for r in records if r.status == "succeeded"]
    assert len(succeeded) == len(seen)
    assert {r.interval_ended_at for r in succeeded} == set(ends)


async def test_an_interval_already_run_is_skipped_when_the_job_comes_due_for_it_again(
    agenda: Agenda, jobs_collection: Any
) -> None:
    calls: list[datetime | None] = []

    @agenda.define("hourly", once_per_interval=True)
    async def hourly(job: Job) -> None:
        calls.append(job.interval_ended_at)

    job = await agenda.every("1 hour", "hourly", skip_immediate=True)
    tick = floor_hour(datetime.now(UTC))
    await set_next_run(jobs_collection, job, tick)
    first = await agenda.run_due()
    assert [j.name for j in first.succeeded] == ["hourly"]
    # A stale copy of the schedule (clock skew, a restored backup, another worker's old state) makes
    # the same tick due again: the interval's run record refuses it.
    await set_next_run(jobs_collection, job, tick)
    second = await agenda.run_due()
    assert second.succeeded == [] and [j.name for j in second.skipped] == ["hourly"]
    assert calls == [tick]
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["nextRunAt"] == tick + timedelta(hours=1)


async def test_concurrent_guards_for_one_interval_let_exactly_one_through(agenda: Agenda) -> None:
    from agendapy.schedule import RunInterval

    await agenda.connect()
    interval = RunInterval(datetime(2026, 1, 1, 9, tzinfo=UTC), datetime(2026, 1, 1, 10, tzinfo=UTC))
    results = await asyncio.gather(
        *(
            agenda.store.runs.start(
                name="race",
                job_id=f"job{i}",
                interval=interval,
                guard=True,
                started_at=datetime.now(UTC),
                worker=f"w{i}",
            )
            for i in range(8)
        )
    )
    assert sum(r is not None for r in results) == 1


# -- run history ------------------------------------------------------------------------------------


async def test_runs_lists_recurring_runs_newest_first_with_status_and_error(agenda: Agenda) -> None:
    attempts = 0

    @agenda.define("sometimes")
    async def sometimes(job: Job) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 2:
            raise RuntimeError("second run breaks")

    log = EventLog(agenda, "complete")
    await agenda.every(0.2, "sometimes")
    await agenda.start()
    await log.wait("complete", 3)
    await agenda.stop()
    runs = await agenda.runs("sometimes")
    assert len(runs) >= 3
    assert [r.started_at for r in runs] == sorted((r.started_at for r in runs), reverse=True)
    oldest_three = list(reversed(runs))[:3]
    assert [r.status for r in oldest_three] == ["succeeded", "failed", "succeeded"]
    assert oldest_three[1].error == "second run breaks"
    assert all(r.finished_at is not None and r.finished_at >= r.started_at for r in oldest_three)
    failed = await agenda.runs("sometimes", status="failed")
    assert [r.error for r in failed] == ["second run breaks"]
    assert len(await agenda.runs("sometimes", limit=1)) == 1


async def test_one_off_jobs_are_recorded_when_history_is_all(make_agenda: Any) -> None:
    agenda: Agenda = await make_agenda(history="all")
    agenda.define("once", lambda job: None)
    log = EventLog(agenda, "complete")
    job = await agenda.now("once")
    await agenda.start()
    await log.wait("complete")
    runs = await agenda.runs("once")
    assert [(r.job_id, r.status, r.interval_ended_at) for r in runs] == [(job.id, "succeeded", None)]


async def test_runs_rejects_a_bad_status(agenda: Agenda) -> None:
    with pytest.raises(ValueError, match="status"):
        await agenda.runs(status="exploded")  # type: ignore[arg-type]


# -- dependencies ---------------------------------------------------------------------------------


async def test_a_job_runs_only_after_its_requirement_covered_its_interval(agenda: Agenda) -> None:
    order: list[tuple[str, datetime, datetime]] = []

    @agenda.define("child", once_per_interval=True)
    async def child(job: Job) -> None:
        assert job.interval_started_at and job.interval_ended_at
        order.append(("child", job.interval_started_at, job.interval_ended_at))

    @agenda.define("parent", once_per_interval=True)
    async def parent(job: Job) -> None:
        assert job.interval_started_at and job.interval_ended_at
        order.append(("parent", job.interval_started_at, job.interval_ended_at))

    await agenda.every("* * * * * *", "child")
    await agenda.start()
    await wait_until(lambda: sum(1 for n, *_ in order if n == "child") >= 2, timeout=15)
    await agenda.every("*/2 * * * * *", "parent", requires=["child"])
    await wait_until(lambda: sum(1 for n, *_ in order if n == "parent") >= 2, timeout=20)
    await agenda.stop()

    for index, (name, start, end) in enumerate(order):
        if name != "parent":
            continue
        assert end - start == timedelta(seconds=2)
        before = {(s, e) for n, s, e in order[:index] if n == "child"}
        assert (start, start + timedelta(seconds=1)) in before, "the first half ran after the parent"
        assert (start + timedelta(seconds=1), end) in before, "the second half ran after the parent"


async def test_a_waiting_job_is_visible_and_reports_a_failed_requirement(agenda: Agenda) -> None:
    @agenda.define("load users", once_per_interval=True)
    async def load_users(job: Job) -> None:
        raise ConnectionError("users API down")

    @agenda.define("report", once_per_interval=True)
    async def report(job: Job) -> None:
        raise AssertionError("must not run while its requirement fails")

    # Every 5 s: a report interval stays waiting on the failed one until "load users" goes on to its next
    # interval (then the report gives it up: tests/integration/test_dependencies.py).
    await agenda.every("*/5 * * * * *", "load users")
    log = EventLog(agenda, "fail")
    await agenda.start()
    await log.wait("fail")
    report_job = await agenda.every("* * * * * *", "report", requires=["load users"])

    async def waiting() -> bool:
        result = await agenda.query_jobs(state="waiting")
        return [j.name for j in result.jobs] == ["report"]

    await wait_until(waiting, timeout=15)
    fetched = await agenda.get_job(report_job.id or "")
    assert fetched is not None and fetched.state is JobState.WAITING
    assert fetched.waiting_for == ["load users"]
    await wait_until(lambda: _reason_mentions_failure(agenda, report_job.id), timeout=15)
    await agenda.stop()


async def _reason_mentions_failure(agenda: Agenda, job_id: str | None) -> bool:
    job = await agenda.get_job(job_id or "")
    return job is not None and "users API down" in (job.waiting_reason or "")


async def test_requires_must_name_jobs(agenda: Agenda) -> None:
    with pytest.raises(ValueError, match="requires"):
        await agenda.every("1 hour", "report", requires=[""])
    assert await agenda.jobs_overview() == []


# -- misfires -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("misfire", "expected_calls"),
    [("all", 3), ("once", 1), ("skip", 0)],
)
async def test_misfire_policies_after_downtime(
    agenda: Agenda, jobs_collection: Any, misfire: str, expected_calls: int
) -> None:
    handled: list[datetime | None] = []

    @agenda.define("hourly")
    async def hourly(job: Job) -> None:
        handled.append(job.interval_ended_at)

    job = await agenda.every("1 hour", "hourly", misfire=misfire, skip_immediate=True)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    latest_tick = floor_hour(now)
    # No worker ran for three hours: the tick two hours before the latest one was the last scheduled.
    await set_next_run(jobs_collection, job, latest_tick - timedelta(hours=2))
    result = await agenda.run_due()
    assert len(handled) == expected_calls
    if misfire == "all":
        assert handled == [latest_tick - timedelta(hours=2), latest_tick - timedelta(hours=1), latest_tick]
    if misfire == "once":
        assert handled == [latest_tick]
    if misfire == "skip":
        assert [j.name for j in result.skipped] == ["hourly"]
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["nextRunAt"] == latest_tick + timedelta(hours=1)


async def test_misfire_must_be_known(agenda: Agenda) -> None:
    with pytest.raises(ValueError, match="misfire"):
        await agenda.every("1 hour", "x", misfire="sometimes")  # type: ignore[arg-type]


# -- fixed delay ----------------------------------------------------------------------------------


async def test_fixed_delay_waits_from_the_finish_and_never_overlaps(
    agenda: Agenda, jobs_collection: Any
) -> None:
    spans: list[tuple[datetime, datetime]] = []

    @agenda.define("poll", concurrency=5)
    async def poll(job: Job) -> None:
        doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
        assert doc["nextRunAt"] is None, "a fixed-delay job has no next run while it runs"
        started = datetime.now(UTC)
        await asyncio.sleep(0.25)
        spans.append((started, datetime.now(UTC)))

    await agenda.every(0.3, "poll", fixed_delay=True)
    await agenda.start()
    await wait_until(lambda: len(spans) >= 3, timeout=15)
    await agenda.stop()
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert started >= finished + timedelta(seconds=0.3) - timedelta(milliseconds=5)


async def test_fixed_delay_after_downtime_runs_once_then_waits(agenda: Agenda, jobs_collection: Any) -> None:
    calls = 0

    @agenda.define("sync")
    async def sync(job: Job) -> None:
        nonlocal calls
        calls += 1

    job = await agenda.every("10 minutes", "sync", fixed_delay=True)
    await set_next_run(jobs_collection, job, datetime.now(UTC) - timedelta(hours=5))
    result = await agenda.run_due()
    assert calls == 1 and result.ok
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["nextRunAt"] - doc["lastFinishedAt"] == timedelta(minutes=10)


async def test_fixed_delay_needs_a_duration(agenda: Agenda) -> None:
    with pytest.raises(ValueError, match="fixed_delay"):
        await agenda.every("0 * * * *", "x", fixed_delay=True)


# -- run-due --------------------------------------------------------------------------------------


async def test_run_due_runs_what_is_due_and_reports_failures(agenda: Agenda) -> None:
    ran: list[str] = []

    @agenda.define("ok")
    async def ok(job: Job) -> None:
        ran.append(f"ok {job.data['n']}")

    @agenda.define("broken")
    async def broken(job: Job) -> None:
        raise ValueError("bad row 7")

    for n in range(3):
        await agenda.now("ok", {"n": n})
    await agenda.now("broken")
    later = await agenda.schedule("in 1 hour", "ok", {"n": 99})
    result = await agenda.run_due()
    assert sorted(ran) == ["ok 0", "ok 1", "ok 2"]
    assert len(result.succeeded) == 3
    assert [(j.name, str(e)) for j, e in result.failed] == [("broken", "bad row 7")]
    assert not result.ok
    fetched = await agenda.get_job(later.id or "")
    assert fetched is not None and fetched.last_run_at is None


async def test_run_due_limited_to_names(agenda: Agenda) -> None:
    ran: list[str] = []
    agenda.define("a", lambda job: ran.append("a"))
    agenda.define("b", lambda job: ran.append("b"))
    await agenda.now("a")
    await agenda.now("b")
    result = await agenda.run_due(["b"])
    assert ran == ["b"] and result.ok
    with pytest.raises(UnknownJob):
        await agenda.run_due(["nope"])


# -- interval forms -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "interval", [timedelta(minutes=15), 900, 900.0, "PT15M", {"minutes": 15}, "15 minutes"]
)
async def test_interval_forms_store_what_node_reads(
    agenda: Agenda, jobs_collection: Any, interval: Any
) -> None:
    job = await agenda.every(interval, "form")
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["repeatInterval"] in (900_000, "15 minutes")

"""Dependencies between recurring jobs: what covers an interval, first deploys, requirements never met.

The rule under test (docs/intervals.md, "What covers an interval"): a required job covers time from its
first recorded interval on; what lies before it counts as covered. An interval whose requirement can
no longer be met is given up (recorded as skipped, with the reason) instead of blocking every later one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from agendapy import Agenda, Job, JobState
from agendapy.schedule import RunInterval

from support import wait_until

HOUR = timedelta(hours=1)
HALF = timedelta(minutes=30)


def floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


async def record_run(
    agenda: Agenda,
    name: str,
    start: datetime,
    end: datetime,
    status: str = "succeeded",
    error: str | None = None,
) -> None:
    """A run of ``name`` for [start, end) in the history, as a worker would have left it."""
    run_id = await agenda.store.runs.start(
        name=name,
        job_id=None,
        interval=RunInterval(start, end),
        guard=False,
        started_at=end,
        worker="earlier",
    )
    assert run_id is not None
    await agenda.store.runs.finish(run_id, status=status, finished_at=end, error=error)  # type: ignore[arg-type]


# -- the first deploy: both jobs created in one start ---------------------------------------------


@pytest.mark.parametrize("parent_first", [True, False], ids=["parent first", "child first"])
async def test_jobs_created_together_run_from_their_first_interval(
    agenda: Agenda, parent_first: bool
) -> None:
    ran: list[tuple[str, datetime, datetime]] = []

    @agenda.define("child")
    async def child(job: Job) -> None:
        assert job.interval_started_at and job.interval_ended_at
        ran.append(("child", job.interval_started_at, job.interval_ended_at))

    @agenda.define("parent")
    async def parent(job: Job) -> None:
        assert job.interval_started_at and job.interval_ended_at
        ran.append(("parent", job.interval_started_at, job.interval_ended_at))

    await agenda.start()
    if parent_first:
        await agenda.every("*/2 * * * * *", "parent", requires=["child"])
        await agenda.every("*/1 * * * * *", "child")
    else:
        await agenda.every("*/1 * * * * *", "child")
        await agenda.every("*/2 * * * * *", "parent", requires=["child"])
    # The parent's first interval began before the child existed: it must not wait for it forever.
    await wait_until(lambda: sum(1 for n, *_ in ran if n == "parent") >= 3, timeout=20)
    await agenda.stop()

    first_child_start = min(start for name, start, _ in ran if name == "child")
    for index, (name, start, end) in enumerate(ran):
        if name != "parent":
            continue
        done = {(s, e) for n, s, e in ran[:index] if n == "child"}
        second = start + timedelta(seconds=1)
        # Every second of the parent's interval since the child's first interval ran before it.
        for part in ((start, second), (second, end)):
            if part[0] >= first_child_start:
                assert part in done, f"parent ran [{start}, {end}) before the child covered {part}"
    # An interval is given up only for a second the child never ran: a child run more than a second
    # late (a loaded machine; misfire "once") goes on with the latest second, and then it must be.
    covered = {s for n, s, _ in ran if n == "child"}
    for skipped in await agenda.runs("parent", status="skipped", limit=0):
        start = skipped.interval_started_at
        assert start is not None
        needed = {s for s in (start, start + timedelta(seconds=1)) if s >= first_child_start}
        assert needed - covered, f"parent gave up [{start}, +2 s) though the child covered it"


@pytest.mark.parametrize("parent_first", [True, False], ids=["parent first", "child first"])
async def test_run_due_runs_jobs_created_together(agenda: Agenda, parent_first: bool) -> None:
    agenda.define("child", lambda job: None)
    agenda.define("parent", lambda job: None)
    if parent_first:
        await agenda.every("1 hour", "parent", requires=["child"])
        await agenda.every("30 minutes", "child")
    else:
        await agenda.every("30 minutes", "child")
        await agenda.every("1 hour", "parent", requires=["child"])
    result = await agenda.run_due()
    assert sorted(j.name for j in result.succeeded) == ["child", "parent"]
    assert result.waiting == [] and result.skipped == []


async def test_a_required_job_covers_time_from_its_first_interval_on(agenda: Agenda) -> None:
    """Its first run handled the second half of the parent's hour: the first half is not waited for."""
    agenda.define("parent", lambda job: None)
    tick = floor_hour(datetime.now(UTC))
    await record_run(agenda, "child", tick - HALF, tick)
    await agenda.every("1 hour", "parent", requires=["child"])
    result = await agenda.run_due()
    assert [j.name for j in result.succeeded] == ["parent"]
    [run] = await agenda.runs("parent")
    assert (run.interval_started_at, run.interval_ended_at, run.status) == (tick - HOUR, tick, "succeeded")


async def test_a_gap_after_the_first_interval_is_still_waited_for(agenda: Agenda) -> None:
    """Only time *before* the first interval is free: a half the child has not run yet is waited for."""
    agenda.define("parent", lambda job: None)
    agenda.define("child", lambda job: None)
    tick = floor_hour(datetime.now(UTC))
    await record_run(agenda, "child", tick - 2 * HOUR, tick - HOUR - HALF)
    await record_run(agenda, "child", tick - HOUR, tick - HALF)
    await agenda.every("1 hour", "child", skip_immediate=True)  # scheduled, not due now
    job = await agenda.every("1 hour", "parent", requires=["child"])
    result = await agenda.run_due(["parent"])
    assert [j.name for j in result.waiting] == ["parent"]
    waiting = await agenda.get_job(job.id or "")
    assert waiting is not None and waiting.state is JobState.WAITING
    assert waiting.waiting_for == ["child"]
    assert "has not completed" in (waiting.waiting_reason or "")


# -- a requirement that can never be met ------------------------------------------------------------


async def test_a_requirement_never_scheduled_is_reported_and_blocks_no_later_interval(
    agenda: Agenda, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[datetime] = []

    @agenda.define("parent")
    async def parent(job: Job) -> None:
        assert job.interval_ended_at is not None
        ran.append(job.interval_ended_at)

    agenda.define("ghost", lambda job: None)
    caplog.set_level(logging.WARNING, logger="agendapy")
    await agenda.every("* * * * * *", "parent", requires=["ghost"])
    await agenda.start()

    async def given_up(count: int) -> bool:
        return len(await agenda.runs("parent", status="skipped")) >= count

    # Each interval is given up once the next one has ended: the job moves on instead of waiting forever.
    await wait_until(lambda: given_up(2), timeout=20)
    skipped = await agenda.runs("parent", status="skipped")
    assert len({r.interval_ended_at for r in skipped}) == len(skipped)
    assert all("'ghost'" in (r.error or "") and "not scheduled" in (r.error or "") for r in skipped), [
        (r.interval_ended_at, r.error) for r in skipped
    ]
    assert any("gives up" in m and "'ghost'" in m for m in caplog.messages)
    assert ran == []

    # Once the requirement exists, the next interval runs: nothing was left blocked.
    await agenda.every("* * * * * *", "ghost")
    await wait_until(lambda: len(ran) >= 1, timeout=20)
    await agenda.stop()


async def test_an_interval_the_required_job_moved_past_is_given_up(agenda: Agenda) -> None:
    """The child failed the first half hour and went on to the next: the parent's hour cannot be met."""
    agenda.define("parent", lambda job: None)
    tick = floor_hour(datetime.now(UTC))
    await record_run(agenda, "child", tick - 2 * HOUR, tick - HOUR)
    await record_run(agenda, "child", tick - HOUR, tick - HALF, status="failed", error="users API down")
    await record_run(agenda, "child", tick - HALF, tick)
    job = await agenda.every("1 hour", "parent", requires=["child"])
    result = await agenda.run_due()
    assert [j.name for j in result.skipped] == ["parent"] and result.ok
    [run] = await agenda.runs("parent")
    assert (run.interval_ended_at, run.status) == (tick, "skipped")
    assert run.error is not None and "users API down" in run.error and "'child'" in run.error
    doc = await agenda.get_job(job.id or "")
    assert doc is not None and doc.waiting_for is None and doc.next_run_at == tick + HOUR


async def test_a_failed_requirement_is_waited_for_while_it_can_still_be_retried(agenda: Agenda) -> None:
    agenda.define("parent", lambda job: None)
    tick = floor_hour(datetime.now(UTC))
    await record_run(agenda, "child", tick - HOUR, tick, status="failed", error="users API down")
    job = await agenda.every("1 hour", "parent", requires=["child"])
    result = await agenda.run_due(["parent"])
    assert [j.name for j in result.waiting] == ["parent"]
    doc = await agenda.get_job(job.id or "")
    assert doc is not None and "users API down" in (doc.waiting_reason or "")


async def test_a_requirement_whose_runs_are_not_recorded_is_reported(make_agenda: Any) -> None:
    agenda: Agenda = await make_agenda(history="none")
    agenda.define("child", lambda job: None)
    agenda.define("parent", lambda job: None, history=True)
    await agenda.every("1 hour", "child")
    assert [j.name for j in (await agenda.run_due(["child"])).succeeded] == ["child"]
    job = await agenda.every("1 hour", "parent", requires=["child"])
    result = await agenda.run_due(["parent"])
    assert [j.name for j in result.waiting] == ["parent"]
    doc = await agenda.get_job(job.id or "")
    assert doc is not None and "not recorded" in (doc.waiting_reason or "")


async def make_pending(jobs_collection: Any, job: Job, start: datetime, end: datetime, on: str) -> None:
    """The state a worker leaves when the job waits for ``on`` to cover [start, end)."""
    await jobs_collection.update_one(
        {"_id": ObjectId(job.id)},
        {
            "$set": {
                "intervalStartedAt": start,
                "intervalEndedAt": end,
                "waitingFor": [on],
                "waitingReason": f"{on!r} has not completed it yet",
                "nextRunAt": datetime.now(UTC) - timedelta(seconds=1),
            }
        },
    )


async def test_a_requirement_scheduled_late_unblocks_the_next_interval(
    agenda: Agenda, jobs_collection: Any
) -> None:
    """Waiting on an unscheduled requirement for over an interval: that interval is given up, the job
    catches up its latest one, which waits until the requirement exists and then runs."""
    ran: list[datetime | None] = []
    agenda.define("parent", lambda job: ran.append(job.interval_ended_at))
    agenda.define("ghost", lambda job: None)
    tick = floor_hour(datetime.now(UTC))
    job = await agenda.every("1 hour", "parent", requires=["ghost"])
    await make_pending(jobs_collection, job, tick - 2 * HOUR, tick - HOUR, on="ghost")

    first = await agenda.run_due(["parent"])
    assert [j.name for j in first.skipped] == ["parent"]
    assert "not scheduled" in first.skip_reasons[job.id or ""]
    [given_up] = await agenda.runs("parent", status="skipped")
    assert given_up.interval_ended_at == tick - HOUR and "'ghost'" in (given_up.error or "")
    doc = await agenda.get_job(job.id or "")
    assert doc is not None and doc.next_run_at is not None and doc.next_run_at <= datetime.now(UTC)

    second = await agenda.run_due(["parent"])  # the catch-up run, for the latest interval
    assert [j.name for j in second.waiting] == ["parent"]  # within its grace: "ghost" may still come
    assert "'ghost' is not scheduled" in (second.waiting[0].waiting_reason or "")

    await agenda.every("30 minutes", "ghost")
    # The wait set the next check dependency_check_every (50 ms) ahead: make it due now.
    await jobs_collection.update_one(
        {"_id": ObjectId(job.id)}, {"$set": {"nextRunAt": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    third = await agenda.run_due()
    assert sorted(j.name for j in third.succeeded) == ["ghost", "parent"]
    assert ran == [tick]


async def test_a_job_that_waited_past_later_ticks_catches_up_the_latest_interval(
    agenda: Agenda, jobs_collection: Any
) -> None:
    ran: list[datetime | None] = []
    agenda.define("parent", lambda job: ran.append(job.interval_ended_at))
    tick = floor_hour(datetime.now(UTC))
    for hours_ago in (3, 2, 1):
        await record_run(agenda, "child", tick - hours_ago * HOUR, tick - (hours_ago - 1) * HOUR)
    job = await agenda.every("1 hour", "parent", requires=["child"])
    await make_pending(jobs_collection, job, tick - 2 * HOUR, tick - HOUR, on="child")
    await agenda.run_due()
    await agenda.run_due()
    assert ran == [tick - HOUR, tick]  # the pending interval, then the latest one (misfire "once")
    doc = await agenda.get_job(job.id or "")
    assert doc is not None and doc.next_run_at == tick + HOUR


# -- restarts ---------------------------------------------------------------------------------------


async def test_after_a_restart_a_pending_interval_the_child_covered_runs(
    make_agenda: Any, jobs_collection: Any
) -> None:
    """A parent left waiting by a stopped worker resumes its interval; the child's later runs (after
    the restart, once per interval) neither skip it nor make it wait again."""
    first: Agenda = await make_agenda(name="before")
    tick = floor_hour(datetime.now(UTC))
    job = await first.every("1 hour", "parent", requires=["child"])
    await first.close()
    # The worker that stopped had found the parent waiting for [tick - 1h, tick); the child then covered it.
    await jobs_collection.update_one(
        {"_id": ObjectId(job.id)},
        {
            "$set": {
                "intervalStartedAt": tick - HOUR,
                "intervalEndedAt": tick,
                "waitingFor": ["child"],
                "waitingReason": "'child' has not completed it yet",
                "nextRunAt": tick - timedelta(minutes=5),
            }
        },
    )

    ran: list[datetime | None] = []
    second: Agenda = await make_agenda(name="after")
    second.define("parent", lambda job: ran.append(job.interval_ended_at))
    second.define("child", lambda job: None)
    await record_run(second, "child", tick - HOUR, tick - HALF)
    await record_run(second, "child", tick - HALF, tick)
    await second.every("1 hour", "parent", requires=["child"])  # the boot re-declares both jobs
    await second.every("30 minutes", "child", skip_immediate=True)
    result = await second.run_due(["parent"])
    assert [j.name for j in result.succeeded] == ["parent"]
    assert ran == [tick]


# -- what a waiting dependent logs ----------------------------------------------------------------------------


def waiting_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "agendapy" and "wait" in r.getMessage()]


async def parent_waits(agenda: Agenda) -> bool:
    (parent,) = (await agenda.query_jobs(name="parent")).jobs
    return bool(parent.waiting_for)


async def test_a_healthy_pipeline_logs_its_waits_on_one_line_at_debug(
    agenda: Agenda, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()

    @agenda.define("child")
    async def child(job: Job) -> None:
        await release.wait()  # the first run lasts until the parent was seen waiting for it

    agenda.define("parent", lambda job: None)
    caplog.set_level(logging.DEBUG, logger="agendapy")
    await agenda.every("* * * * * *", "child")
    await agenda.every("* * * * * *", "parent", requires=["child"])
    await agenda.start()

    await wait_until(lambda: parent_waits(agenda), timeout=20)
    release.set()

    async def parent_ran() -> bool:
        return bool(await agenda.runs("parent", status="succeeded"))

    await wait_until(parent_ran, timeout=20)
    waits = [r for r in waiting_records(caplog) if " waits: " in r.getMessage()]
    assert waits, caplog.text
    assert all(r.levelno == logging.DEBUG for r in waits), [(r.levelname, r.getMessage()) for r in waits]
    assert all("\n" not in r.getMessage() and "'child'" in r.getMessage() for r in waits)


async def test_a_wait_beyond_its_interval_is_one_warning(
    agenda: Agenda, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()

    @agenda.define("child")
    async def child(job: Job) -> None:
        await release.wait()  # stuck: the parent's interval stays uncovered

    agenda.define("parent", lambda job: None)
    caplog.set_level(logging.WARNING, logger="agendapy")
    await agenda.every("* * * * * *", "child")
    await agenda.every("* * * * * *", "parent", requires=["child"])
    await agenda.start()

    def stuck() -> list[logging.LogRecord]:
        return [r for r in waiting_records(caplog) if "still waiting" in r.getMessage()]

    await wait_until(stuck, timeout=20)
    warned_at = datetime.fromtimestamp(stuck()[0].created, UTC)

    async def checked_again_since() -> bool:
        # Each check that leaves the parent waiting sets its next check 50 ms on: several came since.
        (parent,) = (await agenda.query_jobs(name="parent")).jobs
        return bool(parent.waiting_for) and (parent.next_run_at or warned_at) > warned_at + timedelta(
            seconds=0.5
        )

    await wait_until(checked_again_since, timeout=20)
    release.set()
    (warning,) = stuck()
    message = warning.getMessage()
    assert warning.levelno == logging.WARNING and "\n" not in message
    assert "parent" in message and "'child' has not completed" in message and "ago" in message

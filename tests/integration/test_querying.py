"""query_jobs, cancel, disable/enable, purge, jobs_overview and computed job states.

agendapy's own tests, with Agenda 6's repository-suite items 142-146 and 157 and the computeJobState unit
tests (183). Agenda's agenda-test-suite is ported test for test in tests/agenda/.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agendapy import Agenda, Job, JobsResult, JobState

from support import EventLog


def utcnow() -> datetime:
    return datetime.now(UTC)


def get(obj: Any, key: str) -> Any:
    """Read an overview entry whether it is a mapping or an object with attributes."""
    return obj[key] if isinstance(obj, dict) else getattr(obj, key)


def state_of(job: Job) -> JobState:
    """A job's computed state (a property, computed at access)."""
    return job.state


async def three_jobs(agenda: Agenda) -> list[Job]:
    return [
        await agenda.schedule("in 1 hour", "job a", {"n": 1}),
        await agenda.schedule("in 2 hours", "job a", {"n": 2}),
        await agenda.schedule("in 3 hours", "job b", {"n": 3}),
    ]


# -- query_jobs ------------------------------------------------------------------------------------


async def test_query_all_and_by_name(agenda: Agenda) -> None:
    await three_jobs(agenda)
    everything = await agenda.query_jobs()
    assert isinstance(everything, JobsResult)
    assert everything.total == 3
    assert len(everything.jobs) == 3
    assert all(isinstance(j, Job) for j in everything.jobs)
    by_name = await agenda.query_jobs(name="job a")
    assert by_name.total == 2
    assert {j.data["n"] for j in by_name.jobs} == {1, 2}


async def test_query_sort(agenda: Agenda) -> None:
    for p in (2, 3, 1):
        await agenda.create("sorted", {"p": p}).set_priority(p).save()
    desc = await agenda.query_jobs(sort={"priority": "desc"})
    assert [j.priority for j in desc.jobs] == [3, 2, 1]
    asc = await agenda.query_jobs(sort={"priority": "asc"})
    assert [j.priority for j in asc.jobs] == [1, 2, 3]


async def test_query_default_sort_is_latest_next_run_first(agenda: Agenda) -> None:
    await three_jobs(agenda)
    result = await agenda.query_jobs()
    assert [j.data["n"] for j in result.jobs] == [3, 2, 1]


async def test_query_by_names_search_id_ids_and_data(agenda: Agenda) -> None:
    a1, a2, b = await three_jobs(agenda)
    await agenda.now("other thing", {"n": 4, "deep": {"x": 1, "y": 2}})
    assert (await agenda.query_jobs(names=["job a", "job b"])).total == 3
    assert (await agenda.query_jobs(search="JOB")).total == 3  # case-insensitive substring
    assert (await agenda.query_jobs(search="OB B")).total == 1
    by_id = await agenda.query_jobs(id=a2.id)
    assert [j.id for j in by_id.jobs] == [a2.id]
    by_ids = await agenda.query_jobs(ids=[a1.id, b.id])
    assert {j.id for j in by_ids.jobs} == {a1.id, b.id}
    assert (await agenda.query_jobs(data={"n": 3})).total == 1
    partial = await agenda.query_jobs(data={"deep": {"x": 1}})  # partial match on nested data
    assert [j.name for j in partial.jobs] == ["other thing"]


async def test_query_jobs_takes_the_same_filter_keywords_as_cancel(agenda: Agenda) -> None:
    await three_jobs(agenda)
    await agenda.now("other thing")
    # not_names, like cancel/disable/enable: one filter for the four methods.
    others = await agenda.query_jobs(not_names=["job a"])
    assert sorted(j.name for j in others.jobs) == ["job b", "other thing"]
    assert (await agenda.query_jobs(name="job a", not_names=["job a"])).total == 0
    assert await agenda.cancel(not_names=["job a", "job b"]) == 1
    assert (await agenda.query_jobs()).total == 3


async def test_a_misspelt_filter_keyword_is_refused_not_ignored(agenda: Agenda) -> None:
    await three_jobs(agenda)
    bad: dict[str, Any] = {"nmae": "job a"}
    for method in (agenda.cancel, agenda.disable, agenda.enable, agenda.query_jobs):
        with pytest.raises(TypeError, match="unexpected keyword argument 'nmae'"):
            await method(**bad)
    assert (await agenda.query_jobs(include_disabled=False)).total == 3  # nothing changed


async def test_query_search_escapes_regex(agenda: Agenda) -> None:
    await agenda.now("a.b")
    await agenda.now("axb")
    result = await agenda.query_jobs(search="a.b")
    assert [j.name for j in result.jobs] == ["a.b"]


async def test_query_include_disabled(agenda: Agenda) -> None:
    await three_jobs(agenda)
    await agenda.create("off").disable().save()
    assert (await agenda.query_jobs()).total == 4
    assert (await agenda.query_jobs(include_disabled=False)).total == 3


async def test_query_rejects_bad_arguments(agenda: Agenda) -> None:
    with pytest.raises(ValueError, match="sleeping"):
        await agenda.query_jobs(state="sleeping")
    with pytest.raises(ValueError, match=r"\$where"):
        await agenda.query_jobs(data={"$where": "true"})
    with pytest.raises(ValueError, match="limit"):
        await agenda.query_jobs(limit=-1)


# -- states ----------------------------------------------------------------------------------------


async def make_every_state(agenda: Agenda) -> None:
    """One job per state, each made through the public API."""
    agenda.define("completed", lambda job: None)

    def boom(job: Job) -> None:
        raise RuntimeError("boom")

    agenda.define("failed", boom)
    await agenda.create("completed").run()
    await agenda.create("failed").run()
    await agenda.every("1 hour", "repeating", skip_immediate=True)
    await agenda.schedule("in 1 hour", "scheduled")
    await agenda.schedule(utcnow() - timedelta(minutes=1), "queued")
    running = await agenda.schedule("in 1 hour", "running")
    await running.touch()  # holds the lock, as a worker running it would
    await agenda.create("paused").schedule("in 1 hour").disable().save()


async def test_query_jobs_computes_each_state(agenda: Agenda) -> None:
    await make_every_state(agenda)
    result = await agenda.query_jobs()
    states = {j.name: state_of(j) for j in result.jobs}
    assert states == {
        "completed": JobState.COMPLETED,
        "failed": JobState.FAILED,
        "repeating": JobState.REPEATING,
        "scheduled": JobState.SCHEDULED,
        "queued": JobState.QUEUED,
        "running": JobState.RUNNING,
        "paused": JobState.SCHEDULED,
    }
    assert states["running"] == "running"  # a str enum


# Waiting needs a dependency, broken a document agendapy cannot read (no public API writes one): both are
# covered elsewhere (tests/integration/test_dependencies.py, tests/contract/test_contract_bad_documents.py).
@pytest.mark.parametrize("state", [s for s in JobState if s not in (JobState.WAITING, JobState.BROKEN)])
async def test_query_jobs_filters_by_state(agenda: Agenda, state: JobState) -> None:
    await make_every_state(agenda)
    result = await agenda.query_jobs(state=state.value)
    expected = {state.value} | ({"paused"} if state is JobState.SCHEDULED else set())
    assert {j.name for j in result.jobs} == expected
    assert result.total == len(expected)


async def test_query_by_state_pages(agenda: Agenda) -> None:
    for i in range(5):
        await agenda.schedule(f"in {i + 1} hours", "later", {"i": i})
    await agenda.schedule(utcnow() - timedelta(minutes=1), "queued")
    result = await agenda.query_jobs(state="scheduled", limit=2, skip=1)
    assert result.total == 5
    assert len(result.jobs) == 2


async def test_job_state_rules(agenda: Agenda) -> None:
    now = utcnow()
    hour = timedelta(hours=1)

    def job(**attrs: Any) -> Job:
        j = agenda.create("state")
        j.next_run_at = None
        for key, value in attrs.items():
            setattr(j, key, value)
        return j

    assert state_of(job(locked_at=now, failed_at=now)) is JobState.RUNNING
    assert state_of(job(failed_at=now)) is JobState.FAILED
    assert state_of(job(failed_at=now, last_finished_at=now - hour)) is JobState.FAILED
    assert state_of(job(failed_at=now, last_finished_at=now)) is JobState.FAILED
    assert state_of(job(failed_at=now - hour, last_finished_at=now)) is JobState.COMPLETED
    assert state_of(job(last_finished_at=now)) is JobState.COMPLETED
    assert state_of(job(repeat_interval="5 minutes", next_run_at=now + hour)) is JobState.REPEATING
    assert state_of(job(failed_at=now, repeat_interval="5 minutes")) is JobState.FAILED
    assert state_of(job(next_run_at=now + hour)) is JobState.SCHEDULED
    assert state_of(job(next_run_at=now - hour)) is JobState.QUEUED
    assert state_of(job()) is JobState.COMPLETED


async def test_state_is_a_property_equal_to_its_string(agenda: Agenda) -> None:
    job = await agenda.schedule("in 1 hour", "documented")
    fetched = (await agenda.query_jobs(id=job.id)).jobs[0]
    assert fetched.state == JobState.SCHEDULED == "scheduled"


# -- jobs_overview ---------------------------------------------------------------------------------


async def test_jobs_overview_counts_per_name(agenda: Agenda) -> None:
    await make_every_state(agenda)
    await agenda.schedule("in 2 hours", "scheduled")
    overview = {get(entry, "name"): entry for entry in await agenda.jobs_overview()}
    assert set(overview) == {"completed", "failed", "repeating", "scheduled", "queued", "running", "paused"}
    scheduled = overview["scheduled"]
    assert get(scheduled, "total") == 2
    assert get(scheduled, "scheduled") == 2
    assert get(scheduled, "failed") == 0
    assert get(overview["failed"], "failed") == 1
    assert get(overview["running"], "running") == 1
    assert get(overview["repeating"], "repeating") == 1
    assert get(overview["queued"], "queued") == 1
    assert get(overview["completed"], "completed") == 1
    assert get(overview["paused"], "paused") == 1
    assert get(overview["paused"], "scheduled") == 1


async def test_jobs_overview_of_an_empty_collection(agenda: Agenda) -> None:
    assert list(await agenda.jobs_overview()) == []


# -- cancel / cancel_all / purge -------------------------------------------------------------------


async def test_cancel_by_id_ids_names_not_names_and_data(agenda: Agenda, jobs_collection: Any) -> None:
    a1, a2, b = await three_jobs(agenda)
    c = await agenda.now("job c", {"n": 4})
    d = await agenda.now("job d", {"n": 5})
    assert await agenda.cancel(id=a1.id) == 1
    assert await agenda.cancel(id=a1.id) == 0
    assert await agenda.cancel(ids=[a2.id, b.id]) == 2
    assert await agenda.cancel(name="job c", data={"n": 999}) == 0
    assert await agenda.cancel(name="job c", data={"n": 4}) == 1
    assert await agenda.cancel(names=["nobody"]) == 0
    await agenda.now("job e")
    assert await agenda.cancel(not_names=["job d"]) == 1
    assert [str(x["_id"]) for x in await jobs_collection.find({}).to_list()] == [d.id]
    assert c.id is not None


async def test_cancel_without_criteria_removes_nothing(agenda: Agenda, jobs_collection: Any) -> None:
    await three_jobs(agenda)
    assert await agenda.cancel() == 0
    assert await jobs_collection.count_documents({}) == 3


async def test_cancel_rejects_unsafe_data_filter(agenda: Agenda, jobs_collection: Any) -> None:
    await three_jobs(agenda)
    with pytest.raises(ValueError, match=r"\$where"):
        await agenda.cancel(data={"$where": "true"})
    assert await jobs_collection.count_documents({}) == 3


async def test_cancel_all(agenda: Agenda, jobs_collection: Any) -> None:
    await three_jobs(agenda)
    assert await agenda.cancel_all() == 3
    assert await jobs_collection.count_documents({}) == 0


async def test_purge_without_definitions_removes_nothing(agenda: Agenda, jobs_collection: Any) -> None:
    await three_jobs(agenda)
    assert await agenda.purge() == 0
    assert await jobs_collection.count_documents({}) == 3


# -- disable / enable ------------------------------------------------------------------------------


async def test_disabled_job_is_never_processed(agenda: Agenda, jobs_collection: Any) -> None:
    ran: list[str] = []
    agenda.define("sleepy", lambda job: ran.append(job.data["which"]))
    log = EventLog(agenda, "complete:sleepy")
    await agenda.create("sleepy", {"which": "disabled"}).disable().save()
    await agenda.now("sleepy", {"which": "enabled"})
    await agenda.start()
    await log.wait("complete:sleepy")
    await asyncio.sleep(0.5)
    assert ran == ["enabled"]
    doc = await jobs_collection.find_one({"data.which": "disabled"})
    assert doc["lockedAt"] is None
    assert doc.get("lastRunAt") is None


async def test_agenda_disable_and_enable_return_counts(agenda: Agenda, jobs_collection: Any) -> None:
    await three_jobs(agenda)
    assert await agenda.disable(name="job a") == 2
    assert await jobs_collection.count_documents({"disabled": True}) == 2
    assert await agenda.disable(name="nobody") == 0
    assert await agenda.disable() == 0
    await agenda.enable(name="job a")
    await agenda.disable(name="job a", data={"n": 1})
    assert await agenda.enable(name="job a") == 1
    assert await jobs_collection.count_documents({"disabled": True}) == 0


async def test_enabled_job_runs_after_enable(agenda: Agenda) -> None:
    agenda.define("later on", lambda job: None)
    log = EventLog(agenda, "complete:later on")
    await agenda.create("later on").disable().save()
    await agenda.start()
    await asyncio.sleep(0.3)
    assert log.count("complete:later on") == 0
    assert await agenda.enable(name="later on") == 1
    await log.wait("complete:later on")


# -- queue size (running_stats) --------------------------------------------------------------------


async def test_queue_size_counts_due_jobs(agenda: Agenda) -> None:
    await agenda.start()
    assert (await agenda.running_stats()).total_queue_size_db == 0
    # names this worker does not define: counted, never run
    await agenda.schedule(utcnow() - timedelta(minutes=2), "elsewhere")
    await agenda.schedule(utcnow() - timedelta(minutes=1), "elsewhere")
    await agenda.schedule("in 1 hour", "elsewhere")
    assert (await agenda.running_stats()).total_queue_size_db == 2

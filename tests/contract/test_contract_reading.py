"""Store contract: queries (criteria, data partial match, search, sort, paging), overview, bulk changes,
queue size, names, and the wake-up feed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from contract_helpers import MINUTE, claim, job, ms, save, utcnow

from agendapy import InvalidInput, Job, JobState
from agendapy.job import compute_job_state
from agendapy.store.base import JobCriteria, JobQuery, JobStore

from support import wait_until


async def names_of(store: JobStore, **options: Any) -> list[Any]:
    jobs, _ = await store.query(JobQuery(**options))
    return [j.data for j in jobs]


def where(**criteria: Any) -> JobQuery:
    if "data" in criteria:
        criteria["has_data"] = True
    return JobQuery(criteria=JobCriteria(**criteria), sort={"name": "asc"})


async def datas(store: JobStore, query: JobQuery) -> list[Any]:
    jobs, total = await store.query(query)
    assert total == len(jobs)
    return sorted(canonical(j.data) for j in jobs)


def canonical(data: Any) -> str:
    """``data`` compared without its key order: PostgreSQL's JSONB keeps keys sorted its own way
    (MongoDB keeps them as written); which jobs match is what these tests are about."""
    return json.dumps(data, sort_keys=True)


@pytest.fixture
async def catalogue(store: JobStore) -> dict[str, Job]:
    """A few jobs with varied data."""
    specs: list[tuple[str, Any]] = [
        ("email", {"user": {"id": 1, "name": "ada"}, "tags": ["a", "b"], "n": 1}),
        ("email", {"user": {"id": 2, "name": "bob"}, "tags": ["b"], "n": 2}),
        ("report", {"user": {"id": 1}, "n": 3.0}),
        ("report", {"n": True}),
        ("scalar", 5),
        ("scalar", "text"),
        ("scalar", [1, 2]),
        ("nothing", None),
    ]
    made = {}
    for i, (name, data) in enumerate(specs):
        made[f"{name}{i}"] = await save(store, job(name, data, next_run_at=utcnow() + i * MINUTE))
    return made


# -- criteria --------------------------------------------------------------------------------------


async def test_query_by_name_names_and_not_names(store: JobStore, catalogue: dict[str, Job]) -> None:
    assert (await store.query(where(name="email")))[1] == 2
    assert (await store.query(where(names=["email", "report"])))[1] == 4
    assert (await store.query(where(not_names=["email", "report"])))[1] == 4
    assert (await store.query(where(name="absent")))[1] == 0


async def test_query_by_id_and_ids(store: JobStore, catalogue: dict[str, Job]) -> None:
    first, second = catalogue["email0"], catalogue["report2"]
    jobs, total = await store.query(where(id=first.id))
    assert total == 1 and jobs[0].id == first.id
    jobs, total = await store.query(where(ids=[first.id, second.id, "000000000000000000000000"]))
    assert sorted(j.id or "" for j in jobs) == sorted([first.id or "", second.id or ""])
    assert (await store.query(where(id="not-an-object-id")))[1] == 0


async def test_data_mapping_matches_partially_by_its_leaves(
    store: JobStore, catalogue: dict[str, Job]
) -> None:
    assert await datas(store, where(data={"user": {"id": 1}})) == sorted(
        [canonical(catalogue["email0"].data), canonical(catalogue["report2"].data)]
    )
    assert (await store.query(where(data={"user": {"id": 1, "name": "ada"}})))[1] == 1
    assert (await store.query(where(data={"user.name": "bob"})))[1] == 1


async def test_data_matches_numbers_across_types_but_not_booleans(
    store: JobStore, catalogue: dict[str, Job]
) -> None:
    assert (await store.query(where(data={"n": 3})))[1] == 1  # 3 == 3.0
    assert (await store.query(where(data={"n": 1})))[1] == 1  # not the True
    assert (await store.query(where(data={"n": True})))[1] == 1


async def test_data_matches_array_elements(store: JobStore, catalogue: dict[str, Job]) -> None:
    assert (await store.query(where(data={"tags": "b"})))[1] == 2
    assert (await store.query(where(data={"tags": ["b"]})))[1] == 1
    assert (await store.query(where(data={"tags": ["b", "a"]})))[1] == 0


async def test_data_with_operators(store: JobStore, catalogue: dict[str, Job]) -> None:
    assert (await store.query(where(data={"n": {"$gte": 2}})))[1] == 2  # 2 and 3.0, not True
    assert (await store.query(where(data={"n": {"$in": [1, 3]}})))[1] == 2
    assert (await store.query(where(data={"user": {"$exists": False}}, name="report")))[1] == 1
    assert (await store.query(where(data={"tags": {"$size": 2}})))[1] == 1
    assert (await store.query(where(data={"user.name": {"$regex": "^A", "$options": "i"}})))[1] == 1
    assert (await store.query(where(data={"n": {"$type": "double"}})))[1] == 1
    assert (await store.query(where(data={"n": {"$not": {"$gt": 1}}}, name="email")))[1] == 1
    assert (await store.query(where(data={"tags": {"$all": ["a", "b"]}})))[1] == 1


async def test_data_that_is_not_a_mapping_matches_whole(store: JobStore, catalogue: dict[str, Job]) -> None:
    assert (await store.query(where(data=5)))[1] == 1
    assert (await store.query(where(data="text")))[1] == 1
    assert (await store.query(where(data=[1, 2])))[1] == 1
    assert (await store.query(where(data=1, name="scalar")))[1] == 1  # an element of [1, 2]
    assert (await store.query(where(data=None, name="nothing")))[1] == 1
    assert (await store.query(where(data={}, name="email")))[1] == 0  # {} is the empty document


async def test_a_filter_the_server_refuses_is_invalid_input(
    store: JobStore, catalogue: dict[str, Job]
) -> None:
    for bad in ({"n": {"$regex": "("}}, {"n": {"$size": "x"}}, {"n": {"$type": "nope"}}, {"n": {"$in": 5}}):
        with pytest.raises(InvalidInput, match="data"):
            await store.query(where(data=bad))
        with pytest.raises(InvalidInput, match="data"):
            await store.remove(JobCriteria(data=bad, has_data=True))
        with pytest.raises(InvalidInput, match="data"):
            await store.set_disabled(JobCriteria(data=bad, has_data=True), True)
    assert (await store.query(JobQuery()))[1] == len(catalogue)


async def test_search_is_a_case_insensitive_literal_substring(store: JobStore) -> None:
    for name in ("Send Email", "send-sms", "a.b", "axb"):
        await save(store, job(name))
    found, _ = await store.query(JobQuery(search="SEND"))
    assert sorted(j.name for j in found) == ["Send Email", "send-sms"]
    found, _ = await store.query(JobQuery(search="."))
    assert [j.name for j in found] == ["a.b"]


async def test_include_disabled(store: JobStore) -> None:
    await save(store, job("on"))
    off = await save(store, job("off"))
    await store.set_disabled(JobCriteria(id=off.id), True)
    assert (await store.query(JobQuery(include_disabled=False)))[1] == 1
    assert (await store.query(JobQuery(include_disabled=True)))[1] == 2


# -- sort and paging -------------------------------------------------------------------------------


async def test_default_sort_is_next_run_then_last_run_descending(store: JobStore) -> None:
    now = utcnow()
    await save(store, job("x", "none", next_run_at=None))
    await save(store, job("x", "soon", next_run_at=now + MINUTE))
    await save(store, job("x", "later", next_run_at=now + 2 * MINUTE))
    assert await names_of(store) == ["later", "soon", "none"]


async def test_sort_by_fields_and_directions(store: JobStore) -> None:
    now = utcnow()
    for name, priority in (("b", 5), ("a", -3), ("c", 20)):
        await save(store, job(name, name, priority=priority, next_run_at=now))
    assert await names_of(store, sort={"priority": "asc"}) == ["a", "b", "c"]
    assert await names_of(store, sort={"priority": "desc"}) == ["c", "b", "a"]
    assert await names_of(store, sort={"name": "desc"}) == ["c", "b", "a"]
    with pytest.raises(InvalidInput):
        await store.query(JobQuery(sort={"bogus": "asc"}))


async def test_nulls_sort_first_ascending(store: JobStore) -> None:
    now = utcnow()
    await save(store, job("x", "later", next_run_at=now + MINUTE))
    await save(store, job("x", "none", next_run_at=None))
    await save(store, job("x", "now", next_run_at=now))
    assert await names_of(store, sort={"next_run_at": "asc"}) == ["none", "now", "later"]


async def test_skip_limit_and_total(store: JobStore) -> None:
    now = utcnow()
    for i in range(5):
        await save(store, job("page", i, next_run_at=now + i * MINUTE))
    jobs, total = await store.query(JobQuery(sort={"nextRunAt": "asc"}, skip=1, limit=2))
    assert [j.data for j in jobs] == [1, 2] and total == 5
    jobs, total = await store.query(JobQuery(sort={"nextRunAt": "asc"}, skip=4, limit=10))
    assert [j.data for j in jobs] == [4] and total == 5
    jobs, total = await store.query(JobQuery(skip=9))
    assert jobs == [] and total == 5
    every = await store.fetch_all_states(JobQuery(sort={"nextRunAt": "asc"}, skip=1, limit=1))
    assert [j.data for j in every] == [0, 1, 2, 3, 4]


async def test_sort_by_data_uses_bson_order(store: JobStore) -> None:
    now = utcnow()
    for data in ("s", 2, None, {"k": 1}, [0], True):
        await save(store, job("mixed", data, next_run_at=now))
    jobs, _ = await store.query(JobQuery(sort={"data": "asc"}))
    # null < numbers < strings < documents < arrays (by their smallest element) < booleans
    assert [j.data for j in jobs] == [None, [0], 2, "s", {"k": 1}, True]


# -- overview, removal, disabling, counts ----------------------------------------------------------


async def test_overview_counts_states_per_name(store: JobStore) -> None:
    now = utcnow()
    await save(store, job("a", next_run_at=now + timedelta(hours=1)))  # scheduled
    await save(store, job("a", next_run_at=now - MINUTE))  # queued, then claimed: running
    await save(store, job("b", next_run_at=None))  # completed
    failed = await save(store, job("b", next_run_at=None))
    repeating = await save(store, job("c", type="single", repeat_interval=60_000, next_run_at=now + MINUTE))
    await store.set_disabled(JobCriteria(id=repeating.id), True)
    failed.failed_at = now
    failed.fail_count = 1
    await store.save_state(failed)
    await claim(store, "a")
    overview = {entry["name"]: entry for entry in await store.overview(now)}
    assert list(overview) == ["a", "b", "c"]
    assert overview["a"]["total"] == 2 and overview["a"]["running"] == 1 and overview["a"]["scheduled"] == 1
    assert overview["b"]["completed"] == 1 and overview["b"]["failed"] == 1
    assert overview["c"]["repeating"] == 1 and overview["c"]["paused"] == 1
    assert await store.overview(now) == [overview[n] for n in ("a", "b", "c")]


async def test_overview_counts_jobs_waiting_for_their_requirements(store: JobStore) -> None:
    now = utcnow()
    item = await save(store, job("child", type="single", repeat_interval=60_000, next_run_at=now + MINUTE))
    item.waiting_for = ["parent"]
    item.waiting_reason = "'parent' has not completed its interval yet"
    assert await store.save_state(item, fields=["waiting_for", "waiting_reason"])
    [fetched] = await store.fetch_all_states(JobQuery())
    assert compute_job_state(fetched, now) is JobState.WAITING
    [entry] = await store.overview(now)
    assert (entry["waiting"], entry["repeating"]) == (1, 0)


async def test_remove_by_criteria_and_all(store: JobStore, catalogue: dict[str, Job]) -> None:
    assert await store.remove(JobCriteria()) == 0
    assert await store.remove(JobCriteria(name="email")) == 2
    assert await store.remove(JobCriteria(data={"n": True}, has_data=True)) == 1
    assert await store.remove(JobCriteria(name="email")) == 0
    assert await store.remove_all() == len(catalogue) - 3
    assert await store.remove_all() == 0
    assert await store.distinct_names() == []


async def test_set_disabled_counts_only_changed_jobs(store: JobStore, catalogue: dict[str, Job]) -> None:
    assert await store.set_disabled(JobCriteria(), True) == 0
    assert await store.set_disabled(JobCriteria(name="email"), True) == 2
    assert await store.set_disabled(JobCriteria(names=["email", "report"]), True) == 2
    assert await store.set_disabled(JobCriteria(name="email"), False) == 2
    assert await store.set_disabled(JobCriteria(name="email"), False) == 0
    jobs, _ = await store.query(where(name="report"))
    assert all(j.disabled for j in jobs)


async def test_queue_size_counts_jobs_due_strictly_before_now(store: JobStore) -> None:
    now = ms(utcnow())
    await save(store, job(next_run_at=now - MINUTE))
    await save(store, job(next_run_at=now))
    await save(store, job(next_run_at=now + MINUTE))
    await save(store, job(next_run_at=None))
    assert await store.queue_size(now) == 1
    assert await store.queue_size(now + timedelta(milliseconds=1)) == 2


async def test_distinct_names_are_sorted(store: JobStore) -> None:
    assert await store.distinct_names() == []
    for name in ("b", "a", "b", "C"):
        await save(store, job(name))
    assert await store.distinct_names() == ["C", "a", "b"]


async def test_get_job_of_unknown_ids(store: JobStore) -> None:
    assert await store.get_job("000000000000000000000000") is None
    assert await store.get_job("no-such-id") is None


# -- wake-ups --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def watching(store: JobStore) -> AsyncIterator[list[tuple[str, datetime | None]]]:
    seen: list[tuple[str, datetime | None]] = []

    async def listen() -> None:
        async for change in store.due_changes():
            seen.append(change)

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.5)  # let a change stream open
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settle(seen: list[Any], count: int, timeout: float = 5.0) -> None:
    """Wait for ``count`` changes in all, then a little longer: anything extra would arrive now."""
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: len(seen) >= count, timeout=timeout)
    await asyncio.sleep(0.3)


async def test_due_changes_reports_inserts_reschedules_unlocks_and_enables(store: JobStore) -> None:
    now = ms(utcnow())
    later = now + timedelta(hours=1)
    async with watching(store) as seen:
        item = await save(store, job("wake", next_run_at=now))
        await settle(seen, 1)
        assert seen == [("wake", now)]
        [claimed] = await claim(store, "wake")
        await store.renew_locks([claimed], ms(utcnow()))
        await store.release([claimed], reschedule_at=later)
        await settle(seen, 2)
        assert seen == [("wake", now), ("wake", later)]  # the claim and the renewal are not wake-ups
        await store.set_disabled(JobCriteria(id=item.id), True)
        await store.set_disabled(JobCriteria(id=item.id), False)
        await settle(seen, 3)
        assert seen[2:] == [("wake", later)]  # disabling is not a wake-up; enabling is


async def test_due_changes_skips_finished_one_off_runs(store: JobStore) -> None:
    """The final write of a one-off run unlocks a job with no next run: nothing a claim could take,
    so no worker of the fleet hears of it (with many workers that would be a storm of wake-ups)."""
    await save(store, job("done soon", next_run_at=utcnow() - timedelta(seconds=1)))
    async with watching(store) as seen:
        [claimed] = await claim(store, "done soon")
        claimed.last_run_at = claimed.locked_at = ms(utcnow())
        claimed.next_run_at = None
        assert await store.save_state_batched(claimed)  # the start write
        claimed.locked_at = None
        claimed.last_finished_at = ms(utcnow())
        assert await store.save_state_batched(claimed)  # the final write
        marker = ms(utcnow())
        await save(store, job("marker", next_run_at=marker))  # changes arrive in order
        await settle(seen, 1)
        assert seen == [("marker", marker)]


async def test_due_changes_skips_locked_and_disabled_jobs(store: JobStore) -> None:
    item = await save(store, job("quiet", next_run_at=utcnow() - timedelta(days=1)))
    async with watching(store) as seen:
        [claimed] = await claim(store, "quiet")
        claimed.next_run_at = ms(utcnow())
        await store.save_state(claimed, fields=["next_run_at"])  # still locked
        await store.set_disabled(JobCriteria(id=item.id), True)
        await store.release([claimed])  # unlocked, but disabled
        await settle(seen, 1, timeout=0.5)
        assert seen == []

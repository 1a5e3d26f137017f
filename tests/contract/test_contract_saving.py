"""Store contract: saving jobs (insert, update, every()'s single upsert, unique, debounce)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from contract_helpers import MINUTE, claim, job, ms, save, utcnow

from agendapy import Job
from agendapy.store.base import JobCriteria, JobQuery, JobStore


async def count(store: JobStore, name: str | None = None) -> int:
    criteria = JobCriteria(name=name) if name else JobCriteria()
    return (await store.query(JobQuery(criteria=criteria)))[1]


async def stored(store: JobStore, item: Job) -> Job:
    assert item.id is not None
    found = await store.get_job(item.id)
    assert found is not None
    return found


# -- insert and update -----------------------------------------------------------------------------


async def test_insert_assigns_an_id_and_stores_every_field(store: JobStore) -> None:
    due = utcnow() + MINUTE
    item = await save(store, job("send", {"to": "ada"}, next_run_at=due, priority=10), by="me")
    assert isinstance(item.id, str) and item.id
    back = await stored(store, item)
    assert (back.name, back.data, back.priority, back.type) == ("send", {"to": "ada"}, 10, "normal")
    assert back.next_run_at == due
    assert back.last_modified_by == "me"
    assert back.locked_at is None and back.last_run_at is None and back.fail_count == 0
    assert back.disabled is False


async def test_dates_come_back_aware_utc_and_truncated_to_milliseconds(store: JobStore) -> None:
    precise = datetime(2031, 5, 6, 7, 8, 9, 123456)  # naive: UTC
    item = await save(store, job(next_run_at=precise, start_date=precise))
    back = await stored(store, item)
    assert back.next_run_at == ms(precise)
    assert back.next_run_at is not None and back.next_run_at.tzinfo is not None
    assert back.next_run_at.utcoffset() == timedelta(0)
    assert back.start_date == ms(precise)


async def test_data_is_copied_both_ways(store: JobStore) -> None:
    data: dict[str, Any] = {"items": [1, 2], "nested": {"k": "v"}, "pair": (1, 2)}
    item = await save(store, job(data=data))
    data["items"].append(3)
    data["nested"]["k"] = "changed"
    first = await stored(store, item)
    assert first.data == {"items": [1, 2], "nested": {"k": "v"}, "pair": [1, 2]}  # tuples become lists
    first.data["items"].append(99)
    second = await stored(store, item)
    assert second.data["items"] == [1, 2]
    assert first.data is not second.data


async def test_update_by_id_keeps_the_id_and_never_writes_worker_fields(store: JobStore) -> None:
    item = await save(store, job(data={"v": 1}))
    first_id = item.id
    item.data = {"v": 2}
    item.priority = 5
    item.fail_count = 7  # worker-managed: save() must not write it
    item.last_run_at = utcnow()
    await save(store, item, by="other")
    assert item.id == first_id
    back = await stored(store, item)
    assert (back.data, back.priority, back.fail_count, back.last_run_at) == ({"v": 2}, 5, 0, None)
    assert back.last_modified_by == "other"
    assert await count(store) == 1


async def test_update_of_a_removed_job_inserts_nothing(store: JobStore) -> None:
    item = await save(store, job())
    assert await store.remove(JobCriteria(id=item.id)) == 1
    item.data = {"again": True}
    await save(store, item)
    assert await count(store) == 0


async def test_insert_many_sets_ids_in_order(store: JobStore) -> None:
    items = [job("bulk", {"i": i}) for i in range(4)]
    await store.insert_many(items, last_modified_by="bulk-writer")
    assert len({i.id for i in items}) == 4
    for i, item in enumerate(items):
        back = await stored(store, item)
        assert back.data == {"i": i} and back.last_modified_by == "bulk-writer"


# -- every(): one "single" document per name -------------------------------------------------------


def recurring(
    name: str = "tick", *, every_ms: int = 60_000, next_run_at: datetime | None = None, data: Any = None
) -> Job:
    return job(
        name, data, type="single", repeat_interval=every_ms, next_run_at=next_run_at or utcnow() + MINUTE
    )


async def test_single_jobs_upsert_one_document_per_name(store: JobStore) -> None:
    first = await save(store, recurring(data={"v": 1}))
    second = await save(store, recurring(data={"v": 2}))
    assert first.id == second.id
    assert await count(store, "tick") == 1
    assert (await stored(store, first)).data == {"v": 2}
    assert second.data == {"v": 2}


async def test_single_save_with_an_unchanged_schedule_keeps_the_stored_next_run(store: JobStore) -> None:
    kept = ms(utcnow() + 5 * MINUTE)
    await save(store, recurring(next_run_at=kept))
    again = await save(store, recurring(next_run_at=utcnow() + 30 * MINUTE))
    assert again.next_run_at == kept
    assert (await stored(store, again)).next_run_at == kept


async def test_single_save_with_a_new_schedule_and_a_future_run_overwrites_it(store: JobStore) -> None:
    await save(store, recurring(next_run_at=utcnow() + 5 * MINUTE))
    later = ms(utcnow() + 30 * MINUTE)
    again = await save(store, recurring(every_ms=120_000, next_run_at=later))
    back = await stored(store, again)
    assert back.next_run_at == later and back.repeat_interval == 120_000


async def test_single_save_with_a_due_next_run_keeps_the_stored_one(store: JobStore) -> None:
    kept = ms(utcnow() + 5 * MINUTE)
    await save(store, recurring(next_run_at=kept))
    now = utcnow()
    again = await save(store, recurring(every_ms=120_000, next_run_at=now - MINUTE), now=now)
    assert again.next_run_at == kept
    back = await stored(store, again)
    assert back.next_run_at == kept and back.repeat_interval == 120_000


async def test_single_save_without_a_next_run_keeps_the_stored_one(store: JobStore) -> None:
    kept = ms(utcnow() + 5 * MINUTE)
    await save(store, recurring(next_run_at=kept))
    item = recurring(every_ms=120_000)
    item.next_run_at = None
    await save(store, item)
    assert (await stored(store, item)).next_run_at == kept


async def test_single_save_sets_a_next_run_when_none_is_stored(store: JobStore) -> None:
    first = recurring()
    first.next_run_at = None
    await save(store, first)
    wanted = ms(utcnow() + 3 * MINUTE)
    again = await save(store, recurring(next_run_at=wanted))
    assert (await stored(store, again)).next_run_at == wanted


async def test_single_save_compares_the_schedule_as_stored(store: JobStore) -> None:
    start = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)  # microseconds: stored as .123
    kept = ms(utcnow() + 5 * MINUTE)
    first = recurring(next_run_at=kept)
    first.start_date = start
    await save(store, first)
    again = recurring(next_run_at=utcnow() + 30 * MINUTE)
    again.start_date = start  # the same schedule, declared again at the next start
    await save(store, again)
    assert again.next_run_at == kept


async def test_update_by_id_matches_the_name_too(store: JobStore) -> None:
    item = await save(store, job("original", {"v": 1}))
    item.name = "renamed"
    item.data = {"v": 2}
    await save(store, item)
    back = await stored(store, item)
    assert (back.name, back.data) == ("original", {"v": 1})


async def test_single_save_does_not_reset_worker_fields(store: JobStore) -> None:
    item = await save(store, recurring(next_run_at=utcnow() - MINUTE))
    [claimed] = await claim(store, "tick")
    claimed.last_run_at = utcnow()
    claimed.fail_count = 2
    assert await store.save_state(claimed)
    await save(store, recurring(data={"new": True}))
    back = await stored(store, item)
    assert back.fail_count == 2 and back.last_run_at is not None and back.locked_at is not None
    assert back.data == {"new": True}


# -- unique ----------------------------------------------------------------------------------------


def keyed(data: dict[str, Any], key: dict[str, Any], *, insert_only: bool = False, **fields: Any) -> Job:
    return job("keyed", data, **fields).unique(key, insert_only=insert_only)


async def test_unique_saves_upsert_on_the_key(store: JobStore) -> None:
    first = await save(store, keyed({"type": "a", "user": 1, "v": 1}, {"data.type": "a", "data.user": 1}))
    second = await save(store, keyed({"type": "a", "user": 1, "v": 2}, {"data.type": "a", "data.user": 1}))
    assert first.id == second.id
    assert await count(store, "keyed") == 1
    assert (await stored(store, first)).data == {"type": "a", "user": 1, "v": 2}


async def test_unique_saves_with_different_keys_insert_two_jobs(store: JobStore) -> None:
    a = await save(store, keyed({"user": 1}, {"data.user": 1}))
    b = await save(store, keyed({"user": 2}, {"data.user": 2}))
    assert a.id != b.id and await count(store, "keyed") == 2


async def test_unique_is_scoped_to_the_job_name(store: JobStore) -> None:
    a = await save(store, job("one", {"k": 1}).unique({"data.k": 1}))
    b = await save(store, job("two", {"k": 1}).unique({"data.k": 1}))
    assert a.id != b.id


async def test_unique_insert_only_leaves_the_existing_job_alone(store: JobStore) -> None:
    first = await save(store, keyed({"user": 1, "v": "first"}, {"data.user": 1}, insert_only=True))
    second = await save(store, keyed({"user": 1, "v": "second"}, {"data.user": 1}, insert_only=True))
    assert second.id == first.id
    assert second.data == {"user": 1, "v": "first"}
    assert (await stored(store, first)).data == {"user": 1, "v": "first"}


async def test_unique_key_with_an_operator(store: JobStore) -> None:
    first = await save(store, keyed({"n": 5}, {"data.n": {"$gte": 1}}))
    assert (await stored(store, first)).data == {"n": 5}
    second = await save(store, keyed({"n": 7}, {"data.n": {"$gte": 1}}))
    assert second.id == first.id and (await stored(store, first)).data == {"n": 7}


async def test_unique_key_on_a_top_level_field(store: JobStore) -> None:
    first = await save(store, keyed({"v": 1}, {"priority": 3}))
    assert (await stored(store, first)).priority == 0  # the document's own value wins over the key's
    again = await save(store, keyed({"v": 2}, {"priority": 3}))
    assert again.id != first.id  # no job has priority 3, so a second one is inserted


async def test_unique_save_keeps_worker_fields(store: JobStore) -> None:
    item = await save(store, keyed({"user": 1}, {"data.user": 1}, next_run_at=utcnow() - MINUTE))
    [claimed] = await claim(store, "keyed")
    claimed.fail_count = 4
    assert await store.save_state(claimed)
    await save(store, keyed({"user": 1, "v": 2}, {"data.user": 1}))
    back = await stored(store, item)
    assert back.fail_count == 4 and back.locked_at is not None


async def test_a_bad_unique_key_is_invalid_input(store: JobStore) -> None:
    # A job that could match first: SecantusDB's findAndModify skips parsing the filter of an upsert on
    # an empty collection (mongod refuses it either way).
    await save(store, keyed({"user": "x"}, {"data.user": "x"}))
    with pytest.raises(ValueError, match="unique"):
        await save(store, keyed({"user": 1}, {"data.user": {"$regex": "("}}))


# -- debounce --------------------------------------------------------------------------------------


def debounced(data: Any, *, delay: float = 10.0, next_run_at: datetime | None = None, **options: Any) -> Job:
    fields = {} if next_run_at is None else {"next_run_at": next_run_at}
    return job("debounced", data, **fields).unique({"data.key": "k"}).debounce(delay, **options)


async def test_debounce_trailing_pushes_the_run_back_on_every_save(store: JobStore) -> None:
    t0 = ms(utcnow())
    first = await save(store, debounced({"key": "k", "n": 1}), now=t0)
    assert first.next_run_at == t0 + timedelta(seconds=10)
    assert first.debounce_started_at == t0
    t1 = t0 + timedelta(seconds=3)
    second = await save(store, debounced({"key": "k", "n": 2}), now=t1)
    assert second.id == first.id
    assert second.next_run_at == t1 + timedelta(seconds=10)
    assert second.debounce_started_at == t0
    back = await stored(store, first)
    assert (back.data, back.next_run_at, back.debounce_started_at) == (
        {"key": "k", "n": 2},
        t1 + timedelta(seconds=10),
        t0,
    )


async def test_debounce_max_wait_forces_a_run_and_starts_a_new_window(store: JobStore) -> None:
    t0 = ms(utcnow())
    await save(store, debounced({"key": "k"}, max_wait=30.0), now=t0)
    await save(store, debounced({"key": "k"}, max_wait=30.0), now=t0 + timedelta(seconds=20))
    t2 = t0 + timedelta(seconds=30)
    forced = await save(store, debounced({"key": "k"}, max_wait=30.0), now=t2)
    assert forced.next_run_at == t2
    assert forced.debounce_started_at is None
    t3 = t2 + timedelta(seconds=1)
    restarted = await save(store, debounced({"key": "k"}, max_wait=30.0), now=t3)
    assert restarted.next_run_at == t3 + timedelta(seconds=10)
    assert restarted.debounce_started_at == t3


async def test_debounce_leading_keeps_the_first_run(store: JobStore) -> None:
    t0 = ms(utcnow())
    first = await save(store, debounced({"key": "k", "n": 1}, strategy="leading", next_run_at=t0), now=t0)
    assert first.next_run_at == t0 and first.debounce_started_at == t0
    t1 = t0 + timedelta(seconds=2)
    second = await save(store, debounced({"key": "k", "n": 2}, strategy="leading", next_run_at=t1), now=t1)
    assert second.id == first.id
    assert second.next_run_at == t0 and second.debounce_started_at == t0
    assert (await stored(store, first)).data == {"key": "k", "n": 2}


async def test_debounce_without_unique_inserts_every_time(store: JobStore) -> None:
    await save(store, job("plain").debounce(5.0))
    await save(store, job("plain").debounce(5.0))
    assert await count(store, "plain") == 2


async def test_debounce_keys_are_independent(store: JobStore) -> None:
    a = await save(store, job("d", {"key": 1}).unique({"data.key": 1}).debounce(5.0))
    b = await save(store, job("d", {"key": 2}).unique({"data.key": 2}).debounce(5.0))
    assert a.id != b.id and await count(store, "d") == 2

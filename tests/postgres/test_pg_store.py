"""PostgresJobStore beyond the contract suite: concurrent saves across processes' stores, values
PostgreSQL cannot hold, rows Node Agenda wrote, ids that are not UUIDs, wake-ups in Node's format."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from agendapy import InvalidData, InvalidInput, Job, JobState
from agendapy.errors import DatabaseUnavailable
from agendapy.schedule import utcnow
from agendapy.store.base import JobCriteria, JobQuery
from agendapy.store.postgres import PostgresJobStore


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[list[PostgresJobStore]]:
    """Four stores on one database, as four worker processes would have."""
    made = [PostgresJobStore(pg_url) for _ in range(4)]
    await asyncio.gather(*(s.connect() for s in made))
    try:
        yield made
    finally:
        await asyncio.gather(*(s.close() for s in made))


async def rows(url: str, where: str = "TRUE") -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cur.execute(f"SELECT * FROM agenda_jobs WHERE {where} ORDER BY created_at")
        return await cur.fetchall()


def recurring(name: str = "tick", interval: str = "5 minutes") -> Job:
    return Job(
        name=name, type="single", repeat_interval=interval, next_run_at=utcnow() + timedelta(minutes=5)
    )


async def test_every_from_several_stores_at_once_keeps_one_row(
    pg_url: str, stores: list[PostgresJobStore]
) -> None:
    for _ in range(3):
        jobs = [recurring() for _ in stores]
        await asyncio.gather(
            *(
                s.save_job(j, now=utcnow(), last_modified_by=f"w{i}")
                for i, (s, j) in enumerate(zip(stores, jobs, strict=True))
            )
        )
        assert len({j.id for j in jobs}) == 1
    assert len(await rows(pg_url)) == 1


async def test_unique_from_several_stores_at_once_keeps_one_row(
    pg_url: str, stores: list[PostgresJobStore]
) -> None:
    jobs = [Job(name="mail", data={"to": "ada", "n": i}, next_run_at=utcnow()) for i in range(8)]
    for item in jobs:
        item.unique({"data.to": "ada"})
    await asyncio.gather(
        *(stores[i % 4].save_job(j, now=utcnow(), last_modified_by=None) for i, j in enumerate(jobs))
    )
    stored = await rows(pg_url)
    assert len(stored) == 1 and stored[0]["data"]["to"] == "ada"
    assert len({j.id for j in jobs}) == 1


async def test_data_json_cannot_hold_is_refused_and_nothing_changes(
    pg_url: str, stores: list[PostgresJobStore]
) -> None:
    store = stores[0]
    with pytest.raises(InvalidData) as caught:
        await store.save_job(
            Job(name="a", data={"when": datetime.now(UTC)}), now=utcnow(), last_modified_by=None
        )
    assert caught.value.field == "data.when"
    with pytest.raises(InvalidData, match="NaN"):
        await store.insert_many([Job(name="a", data=[1.0, float("nan")])], last_modified_by=None)
    assert await rows(pg_url) == []

    saved = Job(name="a", data={"ok": 1}, next_run_at=utcnow())
    await store.save_job(saved, now=utcnow(), last_modified_by=None)
    saved.data = {"ok": b"bytes"}
    with pytest.raises(InvalidData, match=r"data\.ok"):
        await store.save_job(saved, now=utcnow(), last_modified_by=None)
    [row] = await rows(pg_url)
    assert row["data"] == {"ok": 1}


async def test_values_beyond_nodes_column_types_are_invalid_input(stores: list[PostgresJobStore]) -> None:
    store = stores[0]
    with pytest.raises(InvalidInput, match="255"):
        await store.save_job(Job(name="n" * 256), now=utcnow(), last_modified_by=None)
    with pytest.raises(InvalidInput) as caught:
        await store.save_job(Job(name="p", priority=2**40), now=utcnow(), last_modified_by=None)
    assert caught.value.field == "priority"
    assert await store.distinct_names() == []


async def test_a_row_node_wrote_reads_and_saves_back_in_nodes_form(
    pg_url: str, stores: list[PostgresJobStore]
) -> None:
    # As Node's PostgresJobRepository inserts: a number interval as text, data JSON, no agendapy column.
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute(
            "INSERT INTO agenda_jobs (name, priority, next_run_at, type, repeat_interval, data, disabled, fork,"
            " last_modified_by, skip_days) VALUES ('report', 10, now() + interval '1 hour', 'single', '60000',"
            " %s, FALSE, FALSE, NULL, '[0, 6]') RETURNING id",
            [json.dumps({"user": {"id": 7}})],
        )
        [node_id] = await cur.fetchone() or [None]
    store = stores[0]
    job = await store.get_job(str(node_id))
    assert job is not None and job.unreadable is None
    assert (job.repeat_interval, job.skip_days, job.data, job.priority) == (
        60000,
        [0, 6],
        {"user": {"id": 7}},
        10,
    )
    assert job.state is not JobState.BROKEN

    job.data = {"user": {"id": 8}}
    await store.save_job(job, now=utcnow(), last_modified_by="py")
    [row] = await rows(pg_url)
    assert row["repeat_interval"] == "60000" and row["data"] == {"user": {"id": 8}}
    assert row["fork"] is False and row["lock_token"] is None and row["updated_at"] > row["created_at"]


async def test_ids_that_are_not_uuids_match_nothing_and_mappings_are_refused(
    stores: list[PostgresJobStore],
) -> None:
    store = stores[0]
    saved = Job(name="a", next_run_at=utcnow())
    await store.save_job(saved, now=utcnow(), last_modified_by=None)
    assert await store.get_job("5f0c0c0c0c0c0c0c0c0c0c0c") is None  # a MongoDB ObjectId
    assert await store.remove(JobCriteria(id="not-a-uuid")) == 0
    assert (await store.query(JobQuery(criteria=JobCriteria(ids=["x", str(saved.id)]))))[1] == 1
    with pytest.raises(InvalidInput):
        await store.remove(JobCriteria(id={"$ne": None}))  # type: ignore[arg-type]
    assert (await store.query(JobQuery()))[1] == 1


async def test_a_row_with_an_empty_name_or_bad_json_is_listed_as_broken(
    pg_url: str, stores: list[PostgresJobStore]
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO agenda_jobs (name, next_run_at, skip_days, requires) VALUES"
            " ('', now(), NULL, NULL), ('task', now(), '\"weekends\"', NULL), ('task', now(), NULL, '[1]')"
        )
    store = stores[0]
    jobs, total = await store.query(JobQuery())
    assert total == 3 and all(j.unreadable for j in jobs)
    overview = {entry["name"]: entry for entry in await store.overview(utcnow())}
    assert overview["task"]["broken"] == 2 and overview["<name: ''>"]["unreadable_name"] is True


async def test_saves_wake_listeners_in_nodes_notification_format(
    stores: list[PostgresJobStore], pg_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as listener:
        await listener.execute("LISTEN agenda_jobs")
        store = stores[0]
        due = utcnow()
        await store.save_job(Job(name="wake", next_run_at=due, priority=5), now=due, last_modified_by="py-1")
        await store.save_job(Job(name="later", next_run_at=None), now=due, last_modified_by="py-1")
        payloads = []
        async for note in listener.notifies(timeout=2.0, stop_after=1):
            payloads.append(json.loads(note.payload))
    [payload] = payloads
    assert payload["jobName"] == "wake" and payload["priority"] == 5 and payload["source"] == "py-1"
    assert datetime.fromisoformat(payload["nextRunAt"].replace("Z", "+00:00")) == due.replace(
        microsecond=due.microsecond // 1000 * 1000
    )


DATAS: list[Any] = [
    {"items": [{"sku": "a", "n": 1}, {"sku": "b", "n": 2.0}], "tags": ["x", "y"]},
    {"items": {"sku": "a"}, "tags": "x", "user": {"id": 1, "name": "Ada"}},
    {"items": [[{"sku": "a"}]], "tags": [["x"]], "n": True},
    {"user": {"id": "1"}, "n": 1, "we.ird": {"k": 1}, 'q"uote': "v"},
    {"user": {"name": "Bob", "id": 2}, "items": [{"sku": "c", "n": 3}]},
    None,
    5,
    ["x", 1],
]
FILTERS: list[Any] = [
    {"items.sku": "a"},
    {"items.n": 2},
    {"items.0.sku": "a"},
    {"tags": "x"},
    {"tags.0": "x"},
    {"user.id": 1},
    {"user.id": "1"},
    {"n": 1},
    {"n": True},
    {'q"uote': "v"},
    {"user": {"id": 1, "name": "Ada"}},
    # Whole embedded documents: JSONB keeps keys in its own order, which must not matter.
    {"user": {"name": "Bob", "id": 2}},
    {"items": {"$elemMatch": {"sku": "c", "n": 3}}},
    {"items": [{"sku": "c", "n": 3}]},
    {"user.name": {"$regex": "^a", "$options": "i"}},
    {"missing": None},
    5,
    "x",
    None,
]


async def test_data_filters_match_exactly_what_the_in_memory_store_matches(
    stores: list[PostgresJobStore],
) -> None:
    # The SQL pre-filter (JSON paths) may only narrow the rows the MongoDB matcher then decides on.
    from agendapy.testing import MemoryJobStore

    memory, store = MemoryJobStore(), stores[0]
    for index, data in enumerate(DATAS):
        for target in (memory, store):
            await target.save_job(Job(name=f"j{index}", data=data), now=utcnow(), last_modified_by=None)
    for flt in FILTERS:
        query = JobQuery(criteria=JobCriteria(data=flt, has_data=True))
        expected = sorted(j.name for j in (await memory.query(query))[0])
        assert sorted(j.name for j in (await store.query(query))[0]) == expected, flt
        assert await store.set_disabled(JobCriteria(data=flt, has_data=True), True) == len(expected), flt
        await store.set_disabled(JobCriteria(data=flt, has_data=True), False)


async def test_insert_many_in_chunks_gives_each_job_its_row_and_one_wake_up_per_name(
    stores: list[PostgresJobStore], pg_url: str
) -> None:
    count = 5003  # beyond one statement's chunk (5,000)
    jobs = [Job(name=f"bulk{i % 2}", data={"i": i}, next_run_at=utcnow()) for i in range(count)]
    jobs.append(Job(name="unscheduled", data={"i": -1}, next_run_at=None))
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as listener:
        await listener.execute("LISTEN agenda_jobs")
        await stores[0].insert_many(jobs, last_modified_by="loader")
        names = [json.loads(note.payload)["jobName"] async for note in listener.notifies(timeout=1.0)]
    assert sorted(names) == ["bulk0", "bulk1"]
    stored = {str(row["id"]): row for row in await rows(pg_url)}
    assert len(stored) == count + 1
    assert all(stored[str(j.id)]["data"] == j.data and stored[str(j.id)]["name"] == j.name for j in jobs)
    assert all(row["last_modified_by"] == "loader" and row["fork"] is False for row in stored.values())


async def test_a_lost_connection_is_database_unavailable_and_the_next_call_reconnects(
    stores: list[PostgresJobStore], pg_url: str
) -> None:
    store = stores[0]
    saved = Job(name="a", next_run_at=utcnow())
    await store.save_job(saved, now=utcnow(), last_modified_by=None)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    # The pool's one idle connection is dead: the first use says so, naming the server.
    with pytest.raises(DatabaseUnavailable, match="cannot reach PostgreSQL"):
        await store.get_job(str(saved.id))
    found = await store.get_job(str(saved.id))
    assert found is not None and found.name == "a"

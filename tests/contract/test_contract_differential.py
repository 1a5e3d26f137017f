"""The two stores side by side: the same documents, hundreds of user filters and sorts, the same answers.

The per-backend suite states expectations by hand; this one asks MongoDB and compares, so any filter
where the in-memory matcher drifts from MongoDB's semantics shows up with the filter that exposed it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from contract_helpers import job, save

from agendapy.store.base import ClaimRequest, JobCriteria, JobQuery, JobStore
from agendapy.store.mongo import MongoJobStore
from agendapy.testing import MemoryJobStore

_MISSING = object()

VALUES: list[Any] = [
    _MISSING, None, True, False, 0, 1, 1.5, -5, 2**40, math.nan, "", "a", "B", "abc", "é",
    [], [1], [1, 2], [2, 1], ["a", "b"], [[1]], [None], {}, {"x": 1}, {"x": 1, "y": 2}, {"y": 2, "x": 1},
    [{"x": 1}, {"x": 2}], [{"x": 3}, 5], datetime(2020, 1, 1, tzinfo=UTC), ObjectId("0" * 24),
    Binary(b"ab"), [{"x": [1, 2]}], {"x": [1]}, [{"x": None}], [{}], {"x": None}, [[{"x": 1}]],
    {"x": {"y": 1}}, [{"x": {"y": 1}}], Decimal128("1.5"), Int64(7), [1, [2, 3]], "ab\nc",
]  # fmt: skip

OPERANDS: list[Any] = [
    None, True, 0, 1, 1.0, 2, "a", "", [1], [1, 2], [], {"x": 1}, {}, datetime(2020, 1, 1, tzinfo=UTC),
    math.nan,
]  # fmt: skip

TYPES: list[str | int] = ["double", "string", "object", "array", "bool", "date", "null", "int", "long"]
TYPES += ["number", "binData", "objectId", 16, "decimal"]


def filters() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for operand in OPERANDS:
        found.append({"v": {"$eq": operand}})
        found.append({"v": {"$ne": operand}})
        for op in ("$gt", "$gte", "$lt", "$lte"):
            found.append({"v": {op: operand}})
    for operand in VALUES[1:]:
        found.append({"v": {"$eq": operand}})
    found += [{"v": {"$type": t}} for t in TYPES]
    found += [{"v": {"$exists": flag}} for flag in (True, False)]
    found += [{"v": {"$size": n}} for n in (0, 1, 2)]
    found += [
        {"v": {"$in": [1, "a"]}}, {"v": {"$in": [None]}}, {"v": {"$in": [[1]]}}, {"v": {"$in": []}},
        {"v": {"$nin": [1, None]}}, {"v": {"$all": [1]}}, {"v": {"$all": [1, 2]}}, {"v": {"$all": []}},
        {"v": {"$elemMatch": {"$gt": 1}}}, {"v": {"$elemMatch": {"x": 1}}}, {"v": {"$elemMatch": {"$lt": 2}}},
        {"v": {"$regex": "^a"}}, {"v": {"$regex": "^a", "$options": "i"}}, {"v": {"$not": {"$gt": 1}}},
        {"v": {"$not": {"$regex": "b"}}}, {"v": {"$mod": [2, 0]}}, {"v": {"$mod": [2, 1]}},
        {"v": {"$gt": 0, "$lt": 2}},
        {"v.x": 1}, {"v.x": None}, {"v.x": {"$exists": True}}, {"v.x": {"$gt": 1}},
        {"v.0": 1}, {"v.0": "a"}, {"v.0": {"$exists": True}}, {"v.0": {"x": 1}}, {"v.1": None}, {"v.0": None}, {"v.0.x": 1}, {"v.x.0": 1},
        {"v.0": [1]}, {"v.x": {"$exists": False}}, {"v.x": {"$ne": None}}, {"v.x": {"$size": 1}},
        {"v": {"x": 1}}, {"v": {"y": 2, "x": 1}}, {"v": {"x": {"$gte": 1}, "y": 2}},
        {"v": [1, 2]}, {"v": [2, 1]}, {"v": 1}, {"v": None}, {"v": "a"}, {"v": []},
        {"v": {"$in": [re.compile("^a")]}}, {"v": re.compile("B", re.IGNORECASE)}, {"v": 1.5},
        {"v": {"$regex": "^c", "$options": "m"}}, {"v": {"$regex": "b.c", "$options": "s"}},
        {"v.x.y": 1}, {"v.x": [1]}, {"v.x": {"$elemMatch": {"$eq": 2}}}, {"v": {"$elemMatch": {"x": None}}},
        {"v": {"$elemMatch": {"x": {"$exists": True}}}}, {"v": 7}, {"v": {"$type": "decimal"}},
        {"v": {"$all": [[2, 3]]}}, {"v": [2, 3]}, {"v.1": 2}, {"v.1.0": 2}, {"v.x": {"$type": "array"}},
        {"v": {"$not": {"$type": "number"}}}, {"v": {"$nin": []}}, {"v": {"$gte": "a", "$lt": "b"}},
        {"$or": [{"v": 1}, {"v": "a"}]}, {"$and": [{"v": {"$gt": 0}}]}, {"v": {"x.y": 1}}, {"v.$gt": 1},
        {"v": {"$in": [{"x": 1}]}}, {"tag": {"$lt": 3}, "v": {"$exists": True}}, {"v": {"$eq": [1, 2]}},
    ]  # fmt: skip
    return found


@pytest.fixture
async def both(db_url: str) -> AsyncIterator[tuple[JobStore, JobStore]]:
    mongo = MongoJobStore(db_url)
    memory = MemoryJobStore()
    await mongo.connect()
    try:
        yield mongo, memory
    finally:
        await mongo.collection.database.client.drop_database(mongo.collection.database.name)
        await mongo.close()


async def fill(stores: tuple[JobStore, ...], datas: list[Any], name: str = "d") -> None:
    for store in stores:
        for data in datas:
            await save(store, job(name, data))


def tags(jobs: list[Any]) -> list[Any]:
    return sorted(j.data["tag"] for j in jobs)


async def test_user_filters_match_the_same_documents(both: tuple[JobStore, JobStore]) -> None:
    mongo, memory = both
    datas = [{"tag": i} if v is _MISSING else {"tag": i, "v": v} for i, v in enumerate(VALUES)]
    await fill(both, datas)
    disagreements = []
    for flt in filters():
        query = JobQuery(criteria=JobCriteria(data=flt, has_data=True))
        answers: list[list[Any] | str] = []
        for store in (mongo, memory):
            try:
                answers.append(tags((await store.query(query))[0]))
            except ValueError as exc:
                answers.append(f"error: {type(exc).__name__}")
        if answers[0] != answers[1]:
            disagreements.append((flt, *answers))
    assert disagreements == [], "\n".join(f"{f}: mongo {a} / memory {b}" for f, a, b in disagreements)


async def test_sorting_by_data_gives_the_same_order(both: tuple[JobStore, JobStore]) -> None:
    mongo, memory = both
    # No two values equal under MongoDB's comparison (their relative order would be arbitrary).
    sortable = [v for v in VALUES if v is not _MISSING and v not in ([2, 1], {"y": 2, "x": 1})]
    await fill(both, sortable)
    directions: tuple[Literal["asc"], Literal["desc"]] = ("asc", "desc")
    for direction in directions:
        orders = []
        for store in (mongo, memory):
            jobs, _ = await store.query(JobQuery(sort={"data": direction}))
            orders.append([repr(j.data) for j in jobs])
        assert orders[0] == orders[1], direction


async def script(store: JobStore) -> None:
    """A fixed sequence of saves, claims and state writes (every time given explicitly)."""
    t0 = datetime(2030, 1, 1, 12, tzinfo=UTC)
    at = [t0 + timedelta(seconds=i) for i in range(60)]
    datas: list[dict[str, Any]] = [{"n": 1}, {"n": 2, "extra": [1, {"deep": None}]}]
    for data, insert_only, strategy in itertools.product(datas, [False, True], ["trailing", "leading", None]):
        item = job("mix", {"user": 1, **data}, next_run_at=at[1]).unique(
            {"data.user": 1}, insert_only=insert_only
        )
        if strategy is not None:
            item.debounce(5.0, max_wait=12.0, strategy=strategy)
        await save(store, item, now=at[len(data) * 7])
    for i, when in enumerate((at[2], at[40], None, at[3])):
        every = job("every", {"i": i}, type="single", repeat_interval=1000 * (1 + i % 2), next_run_at=when)
        await save(store, every, now=at[10])
    await save(store, job("plain", {"p": (1, 2)}, next_run_at=at[5], priority=-3))
    names = ["mix", "every", "plain"]
    deadlines = {name: at[0] for name in names}
    request = ClaimRequest(names=names, now=at[20], next_scan_at=at[21], lock_deadlines=deadlines, owner="w")
    claimed = await store.claim(request, "token-1", 5)
    for index, item in enumerate(claimed):
        item.last_run_at = at[22]
        item.progress = index
        item.locked_at = None if index % 2 else item.locked_at
        await store.save_state(item)
    await store.release(claimed[-1:], reschedule_at=at[30])
    await store.set_disabled(JobCriteria(name="plain"), True)


def normalized(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without ids (an upsert's id comes from the server), in a stable order (each name appears once)."""
    return sorted(
        ({k: v for k, v in doc.items() if k != "_id"} for doc in documents), key=lambda d: d["name"]
    )


async def test_a_scripted_history_leaves_identical_documents(both: tuple[JobStore, JobStore]) -> None:
    mongo, memory = both
    for store in both:
        await script(store)
    assert isinstance(mongo, MongoJobStore) and isinstance(memory, MemoryJobStore)
    stored = [doc async for doc in mongo.collection.find({})]
    assert [d["name"] for d in normalized(stored)] == ["every", "mix", "plain"]
    assert normalized(stored) == normalized(memory.documents())

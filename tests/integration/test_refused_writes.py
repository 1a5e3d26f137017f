"""One run's state write refused by the server (a collection validator here; a document grown past
16 MB alike) must not stop the other runs written with it, nor leave the refused job locked."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from agendapy import Agenda, Job

from support import EventLog, wait_until

LOCK_LIFETIME = 0.3


async def _validated(client: AsyncMongoClient[Any], db_name: str, validator: dict[str, Any]) -> None:
    await client[db_name].create_collection("agendaJobs", validator=validator)


def _max_length(field: str, limit: int) -> dict[str, Any]:
    return {"$jsonSchema": {"properties": {field: {"bsonType": ["string", "null"], "maxLength": limit}}}}


async def _finish_together(agenda: Agenda, names: list[str], fail: set[str]) -> dict[str, int]:
    """Define ``names``; their handlers return (or raise) only once all have started, so their final
    writes go out in one batch (the state write window is long). Returns the runs per name."""
    runs = dict.fromkeys(names, 0)
    started = {name: asyncio.Event() for name in names}

    def define(name: str) -> None:
        async def handler(job: Job) -> None:
            runs[name] += 1
            started[name].set()
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 10)
            if name in fail:
                raise RuntimeError(f"{name} failed: " + "the reason is long " * 20)

        agenda.define(name, handler, lock_lifetime=LOCK_LIFETIME)

    for name in names:
        define(name)
    return runs


async def test_a_refused_final_write_spares_the_others_of_its_batch_and_unlocks_its_job(
    make_agenda: Any,
    client: AsyncMongoClient[Any],
    db_name: str,
    jobs_collection: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The server refuses the failed run's failReason: every retry would be refused the same way.
    await _validated(client, db_name, _max_length("failReason", 10))
    agenda: Agenda = await make_agenda(state_write_window=0.2)
    runs = await _finish_together(agenda, ["ok", "bad"], fail={"bad"})
    caplog.set_level(logging.DEBUG, logger="agendapy")
    ok = await agenda.now("ok")
    bad = await agenda.now("bad")
    log = EventLog(agenda, "complete")
    await agenda.start()
    await log.wait("complete", count=2)

    async def doc(job: Job) -> dict[str, Any]:
        found = await jobs_collection.find_one({"_id": ObjectId(job.id)})
        assert found is not None
        return dict(found)

    # The refused job is unlocked (its failure cannot be stored: the validator refuses any failReason).
    await wait_until(lambda: _unlocked(doc(bad)), timeout=10)
    ok_doc = await doc(ok)
    assert ok_doc["lockedAt"] is None and ok_doc["lastFinishedAt"] is not None
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]
    refusals = [r for r in caplog.records if "refused the state of bad" in r.getMessage()]
    assert len(refusals) == 1 and bad.id in refusals[0].getMessage()
    # Several lock lifetimes: a job left locked would be claimed and run again, and fail the same way.
    await asyncio.sleep(LOCK_LIFETIME * 4)
    assert runs == {"ok": 1, "bad": 1}
    bad_doc = await doc(bad)
    assert bad_doc["lockedAt"] is None and bad_doc.get("lockToken") is None
    assert bad_doc["nextRunAt"] is None


async def _unlocked(pending: Any) -> bool:
    found = await pending
    return found["lockedAt"] is None


async def test_a_refused_job_records_a_failure_without_the_refused_fields(
    make_agenda: Any, client: AsyncMongoClient[Any], db_name: str, jobs_collection: Any
) -> None:
    # The failed run's failStack is refused; the failure is recorded without it.
    await _validated(client, db_name, _max_length("failStack", 10))
    agenda: Agenda = await make_agenda(state_write_window=0.2)
    runs = await _finish_together(agenda, ["ok", "bad"], fail={"bad"})
    ok = await agenda.now("ok")
    bad = await agenda.every("1 hour", "bad")
    log = EventLog(agenda, "complete")
    await agenda.start()
    await log.wait("complete", count=2)

    async def recorded() -> bool:
        found = await jobs_collection.find_one({"_id": ObjectId(bad.id)})
        return bool(found.get("failReason")) and found["lockedAt"] is None

    await wait_until(recorded, timeout=10)
    bad_doc = await jobs_collection.find_one({"_id": ObjectId(bad.id)})
    assert bad_doc["failReason"].startswith("agendapy could not save this run's state: ")
    assert "validation" in bad_doc["failReason"]
    assert bad_doc["failCount"] == 1 and bad_doc["failedAt"] is not None
    assert bad_doc.get("lockToken") is None and bad_doc.get("failStack") is None
    # The next run is scheduled by the normal rules (every hour), not dropped.
    assert bad_doc["nextRunAt"] is not None and bad_doc["nextRunAt"] > bad_doc["failedAt"]
    ok_doc = await jobs_collection.find_one({"_id": ObjectId(ok.id)})
    assert ok_doc["lockedAt"] is None and ok_doc["lastFinishedAt"] is not None
    assert runs == {"ok": 1, "bad": 1}


async def test_one_refused_document_of_identical_finishes_spares_the_others(
    make_agenda: Any, client: AsyncMongoClient[Any], db_name: str, jobs_collection: Any
) -> None:
    # One-off runs that succeed together write the same values (one update_many); the server refuses
    # them for one document only (it may never be marked finished).
    await _validated(client, db_name, {"$or": [{"lastFinishedAt": None}, {"data.refuse": {"$ne": True}}]})
    agenda: Agenda = await make_agenda(state_write_window=0.2)
    started: list[str] = []
    everyone = asyncio.Event()

    @agenda.define("same", lock_lifetime=LOCK_LIFETIME, concurrency=5)
    async def same(job: Job) -> None:
        started.append(job.id)
        if len(started) == 3:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 10)

    first = await agenda.now("same", {"n": 1})
    refused = await agenda.now("same", {"refuse": True})
    last = await agenda.now("same", {"n": 3})
    log = EventLog(agenda, "complete")
    await agenda.start()
    await log.wait("complete", count=3)

    async def settled() -> bool:
        docs = [await jobs_collection.find_one({"_id": ObjectId(j.id)}) for j in (first, refused, last)]
        return all(d["lockedAt"] is None for d in docs)

    await wait_until(settled, timeout=10)
    for job in (first, last):
        found = await jobs_collection.find_one({"_id": ObjectId(job.id)})
        assert found["lastFinishedAt"] is not None and found.get("failReason") is None
    refused_doc = await jobs_collection.find_one({"_id": ObjectId(refused.id)})
    assert refused_doc["failReason"].startswith("agendapy could not save this run's state: ")
    assert refused_doc.get("lockToken") is None and refused_doc.get("lastFinishedAt") is None
    await asyncio.sleep(LOCK_LIFETIME * 4)
    assert sorted(started) == sorted([first.id, refused.id, last.id])


async def test_a_refused_start_write_fails_and_unlocks_the_job_without_running_it(
    make_agenda: Any, client: AsyncMongoClient[Any], db_name: str, jobs_collection: Any
) -> None:
    # The server refuses to stamp lastRunAt on one job: its run cannot start, the others' do.
    await _validated(client, db_name, {"$or": [{"lastRunAt": None}, {"data.refuse": {"$ne": True}}]})
    agenda: Agenda = await make_agenda(state_write_window=0.2)
    ran: list[str] = []

    @agenda.define("start", lock_lifetime=LOCK_LIFETIME)
    async def start(job: Job) -> None:
        ran.append(job.id)

    fine = await agenda.now("start", {"n": 1})
    refused = await agenda.now("start", {"refuse": True})
    # Written by another tool: a null count is counted from zero.
    await jobs_collection.update_one({"_id": ObjectId(refused.id)}, {"$set": {"failCount": None}})
    log = EventLog(agenda, "complete")
    await agenda.start()
    await log.wait("complete")

    async def failed() -> bool:
        found = await jobs_collection.find_one({"_id": ObjectId(refused.id)})
        return bool(found.get("failReason")) and found["lockedAt"] is None

    await wait_until(failed, timeout=10)
    refused_doc = await jobs_collection.find_one({"_id": ObjectId(refused.id)})
    assert refused_doc["failReason"].startswith("agendapy could not save this run's state: ")
    assert refused_doc["failCount"] == 1 and refused_doc.get("lockToken") is None
    assert refused_doc["nextRunAt"] is None and refused_doc.get("lastRunAt") is None
    await asyncio.sleep(LOCK_LIFETIME * 4)
    assert ran == [fine.id]
    fine_doc = await jobs_collection.find_one({"_id": ObjectId(fine.id)})
    assert fine_doc["lockedAt"] is None and fine_doc["lastFinishedAt"] is not None

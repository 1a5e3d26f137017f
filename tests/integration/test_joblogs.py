"""Job logs: Agenda 6.2's lifecycle entries in ``agenda_logs``, read back with get_logs, cleared with
clear_logs; the same API on the in-memory store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import CodecOptions, ObjectId

from agendapy import Agenda, InvalidInput, Job, backoff
from agendapy.testing import MemoryJobStore, run_until_idle

from support import EventLog


def _logs(client: Any, db_name: str) -> Any:
    return client[db_name].get_collection(
        "agenda_logs", codec_options=CodecOptions(tz_aware=True, tzinfo=UTC)
    )


async def test_a_success_writes_start_success_complete_in_agendas_shape(
    make_agenda: Any, client: Any, db_name: str
) -> None:
    agenda = await make_agenda(logging=True, name="logger-1")

    @agenda.define("greet")
    async def greet(job: Job) -> None:
        return None

    events = EventLog(agenda, "complete")
    await agenda.start()
    job = await agenda.now("greet")
    await events.wait("complete")

    result = await agenda.get_logs(job_id=job.id, sort="asc")
    assert [entry.event for entry in result.entries] == ["start", "success", "complete"]
    assert result.total == 3
    docs = [doc async for doc in _logs(client, db_name).find({"jobId": str(job.id)}).sort("_id", 1)]
    # Field for field what Agenda's MongoJobLogger stores, so Agendash reads it.
    assert set(docs[0]) == {"_id", "timestamp", "level", "event", "jobId", "jobName", "message", "agendaName"}
    assert (
        docs[0]["jobName"] == "greet" and docs[0]["level"] == "info" and docs[0]["message"] == "job started"
    )
    assert docs[0]["agendaName"] == "logger-1"
    assert isinstance(docs[1]["duration"], int | float) and docs[1]["duration"] >= 0
    assert docs[1]["message"] == "job succeeded"
    assert docs[2]["message"] == "job complete"


async def test_a_failure_with_retry_then_exhausted_is_logged_in_order(make_agenda: Any) -> None:
    agenda = await make_agenda(logging=True)

    @agenda.define("flaky", backoff=backoff.constant(delay=0.05, max_retries=1))
    async def flaky(job: Job) -> None:
        raise RuntimeError("boom")

    events = EventLog(agenda, "retry exhausted")
    await agenda.start()
    job = await agenda.now("flaky")
    await events.wait("retry exhausted")
    await agenda.stop()

    result = await agenda.get_logs(job_id=job.id, sort="asc")
    events_seen = [entry.event for entry in result.entries]
    assert events_seen == [
        "start",
        "fail",
        "retry",
        "complete",
        "start",
        "fail",
        "retry:exhausted",
        "complete",
    ]
    fail, retry = result.entries[1], result.entries[2]
    assert fail.level == "error" and fail.error == "boom" and fail.message == "job failed: boom"
    assert fail.fail_count == 1
    assert (
        retry.retry_attempt == 1 and retry.retry_delay == 50 and retry.message == "retry #1 scheduled in 50ms"
    )
    exhausted = result.entries[6]
    assert exhausted.level == "warn" and exhausted.fail_count == 2
    assert exhausted.message == "retry exhausted after 2 failures: boom"

    errors = await agenda.get_logs(job_name="flaky", level="error")
    assert errors.total == 2 and {e.event for e in errors.entries} == {"fail"}
    newest_first = await agenda.get_logs(job_name="flaky", limit=2)
    assert [e.event for e in newest_first.entries] == ["complete", "retry:exhausted"]
    assert newest_first.total == 8

    assert await agenda.clear_logs(event=["retry", "retry:exhausted"]) == 2
    assert (await agenda.get_logs(job_id=job.id)).total == 6
    assert await agenda.clear_logs() == 6
    assert (await agenda.get_logs()).total == 0


async def test_logging_is_per_definition_and_off_by_default(make_agenda: Any) -> None:
    agenda = await make_agenda()

    @agenda.define("quiet")
    async def quiet(job: Job) -> None:
        return None

    @agenda.define("loud", logging=True)
    async def loud(job: Job) -> None:
        return None

    events = EventLog(agenda, "complete")
    await agenda.start()
    await agenda.now("quiet")
    await agenda.now("loud")
    await events.wait("complete", 2)
    names = {entry.job_name for entry in (await agenda.get_logs()).entries}
    assert names == {"loud"}

    muted = await make_agenda(logging=True)
    muted.define("quiet", quiet, logging=False)
    muted.define("loud", loud)
    events = EventLog(muted, "complete")
    await agenda.stop()
    await muted.start()
    await muted.now("quiet")
    await muted.now("loud")
    await events.wait("complete", 2)
    entries = (await muted.get_logs(job_name="quiet")).entries
    assert entries == []


async def test_logs_have_a_ttl_index(make_agenda: Any, client: Any, db_name: str) -> None:
    agenda = await make_agenda(logging=True, logs_ttl="2 days")

    @agenda.define("x")
    async def x(job: Job) -> None:
        return None

    events = EventLog(agenda, "complete")
    await agenda.start()
    await agenda.now("x")
    await events.wait("complete")
    await agenda.get_logs()  # writes what is buffered, indexes included
    indexes = await _logs(client, db_name).index_information()
    assert indexes["agendapy_logs_ttl"]["expireAfterSeconds"] == 2 * 86400
    assert "agenda_logs_job_name_idx" in indexes and "agenda_logs_job_id_idx" in indexes


async def test_get_logs_takes_plain_values_only(agenda: Agenda) -> None:
    with pytest.raises(InvalidInput, match="job_name"):
        await agenda.get_logs(job_name={"$ne": None})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="job_id"):
        await agenda.get_logs(job_id={"$gt": ""})
    with pytest.raises(InvalidInput, match="level"):
        await agenda.get_logs(level="fatal")
    with pytest.raises(InvalidInput, match="event"):
        await agenda.clear_logs(event={"$exists": True})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="sort"):
        await agenda.get_logs(sort="up")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="limit"):
        await agenda.get_logs(limit=-1)
    with pytest.raises(InvalidInput, match="logging"):
        agenda.define("x", lambda job: None, logging="yes")


async def test_since_and_until_filter_by_time(make_agenda: Any) -> None:
    agenda = await make_agenda(logging=True)
    agenda.define("t", lambda job: None)
    events = EventLog(agenda, "complete")
    await agenda.start()
    await agenda.now("t")
    await events.wait("complete")
    now = datetime.now(UTC)
    assert (await agenda.get_logs(since=now - timedelta(minutes=1))).total == 3
    assert (await agenda.get_logs(until=now - timedelta(minutes=1))).total == 0
    assert await agenda.clear_logs(until=now - timedelta(minutes=1)) == 0


async def test_the_memory_store_keeps_logs_too() -> None:
    agenda = Agenda(MemoryJobStore(), logging=True)

    @agenda.define("mem", backoff=backoff.constant(delay=60, max_retries=3))
    async def mem(job: Job) -> None:
        raise ValueError("nope")

    job = await agenda.now("mem")
    await run_until_idle(agenda)
    result = await agenda.get_logs(job_id=job.id, sort="asc")
    assert [e.event for e in result.entries] == ["start", "fail", "retry", "complete"]
    assert [e.event for e in (await agenda.get_logs(job_id=job.id)).entries] == [
        "complete",
        "retry",
        "fail",
        "start",
    ]
    assert await agenda.clear_logs(job_name="mem", level="error") == 1
    assert (await agenda.get_logs()).total == 3
    await agenda.close()


async def test_a_new_logs_ttl_replaces_the_old_one(make_agenda: Any, client: Any, db_name: str) -> None:
    for ttl, days in (("2 days", 2), ("3 days", 3)):
        agenda = await make_agenda(logging=True, logs_ttl=ttl)
        agenda.define("x", lambda job: None)
        events = EventLog(agenda, "complete")
        await agenda.start()
        await agenda.now("x")
        await events.wait("complete")
        await agenda.stop()
        indexes = await _logs(client, db_name).index_information()
        assert indexes["agendapy_logs_ttl"]["expireAfterSeconds"] == days * 86400


async def test_a_batch_retried_after_a_lost_reply_is_not_stored_twice(make_agenda: Any) -> None:
    agenda = await make_agenda()
    store = agenda._log_store()
    await store.create_indexes()
    docs = [
        {
            "_id": ObjectId(),
            "timestamp": datetime.now(UTC),
            "level": "info",
            "event": e,
            "jobName": "r",
            "message": e,
        }
        for e in ("start", "success", "complete")
    ]
    await store.write(docs[:2])  # stored; pretend the reply was lost
    await store.write(docs)  # the writer's retry of the whole batch
    result = await agenda.get_logs(job_name="r", sort="asc")
    assert [e.event for e in result.entries] == ["start", "success", "complete"]


async def test_logging_can_be_turned_on_after_construction(make_agenda: Any) -> None:
    agenda = await make_agenda()
    agenda.logging = True
    agenda.define("late", lambda job: None)
    events = EventLog(agenda, "complete")
    await agenda.start()
    await agenda.now("late")
    await events.wait("complete")
    assert (await agenda.get_logs(job_name="late")).total == 3


async def test_a_lock_taken_over_is_logged_as_expired(make_agenda: Any, jobs_collection: Any) -> None:
    agenda = await make_agenda(logging=True)
    finish = asyncio.Event()

    @agenda.define("victim", lock_lifetime=0.3)
    async def victim(job: Job) -> None:
        await asyncio.wait_for(finish.wait(), 10)

    events = EventLog(agenda, "start", "lock lost", "complete")
    job = await agenda.now("victim")
    await agenda.start()
    await events.wait("start")
    thief_lock = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    await jobs_collection.update_one({"_id": ObjectId(job.id)}, {"$set": {"lockedAt": thief_lock}})
    await events.wait("lock lost")
    finish.set()
    await events.wait("complete")
    entries = (await agenda.get_logs(job_id=job.id, sort="asc")).entries
    assert [e.event for e in entries] == ["start", "expired", "fail", "complete"]
    expired = entries[1]
    assert expired.level == "warn" and expired.message == "job expired (lock lifetime exceeded)"

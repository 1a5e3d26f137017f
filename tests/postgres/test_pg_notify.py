"""LISTEN/NOTIFY on PostgreSQL: wake-ups and run steps in Node Agenda's payload formats, both ways, on a
listening connection of its own that comes back after a connection loss."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pg_run_support
import psycopg
import pytest
from pg_run_support import add_jobs, execute, request_for
from psycopg.rows import tuple_row

from agendapy.errors import InvalidInput
from agendapy.fleet_events import _events_of
from agendapy.job import Job
from agendapy.schedule.timezones import utcnow
from agendapy.store.postgres import PostgresJobStore
from agendapy.store.postgres.announce import Announcements
from agendapy.store.postgres.claims import claim, release
from agendapy.store.postgres.notify import (
    change_of,
    due_changes,
    due_notes,
    publish,
    run_changes,
    state_payload,
)
from agendapy.store.postgres.state_writes import StateWrites

pg_store, writes = pg_run_support.pg_store, pg_run_support.writes

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NODE_JOB_KEYS = {"jobId", "jobName", "nextRunAt", "priority", "timestamp", "source"}
NODE_STATE_KEYS = {"type", "jobId", "jobName", "timestamp", "source", "progress", "error", "failCount",
                   "retryAt", "retryAttempt", "duration", "lastRunAt", "lastFinishedAt"}  # fmt: skip


class Listener:
    """A plain second connection listening on channels, as a Node worker's would."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.received: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def next(self, channel: str) -> dict[str, Any]:
        while True:
            got, payload = await asyncio.wait_for(self.received.get(), 10)
            if got == channel:
                return payload


async def listening(url: str, *channels: str) -> AsyncIterator[Listener]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for channel in channels:
            await conn.execute(f'LISTEN "{channel}"')
        listener = Listener(conn)

        async def pump() -> None:
            async for note in conn.notifies():
                await listener.received.put((note.channel, json.loads(note.payload)))

        task = asyncio.create_task(pump())
        try:
            yield listener
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def wait_for_listeners(store: PostgresJobStore, count: int) -> list[int]:
    """The backend pids of the sessions listening (their last statement was LISTEN), once ``count`` are."""
    for _ in range(200):
        async with store.pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'")
            pids = [pid for (pid,) in await cur.fetchall()]
        if len(pids) >= count:
            return pids
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} listening sessions never appeared")


async def collect(changes: AsyncIterator[Any], into: asyncio.Queue[Any]) -> None:
    async for change in changes:
        await into.put(change)


async def test_a_hand_back_wakes_us_and_a_node_worker_in_nodes_format(
    pg_url: str, pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    wakes: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(collect(due_changes(pg_store.pool, pg_store.channel), wakes))
    try:
        async for node in listening(pg_url, pg_store.channel):
            await wait_for_listeners(pg_store, 2)
            (added,) = await add_jobs(pg_store, "work", 1, priority=3)
            assert await asyncio.wait_for(wakes.get(), 10) == ("work", added.next_run_at)  # the insert
            assert (await node.next(pg_store.channel))["jobId"] == added.id
            (job,) = await claim(
                pg_store.pool, pg_store.table, request_for(["work"]), "tok", 1, writes=writes
            )
            later = utcnow() + timedelta(seconds=30)
            await release(writes, [job], reschedule_at=later)

            assert await asyncio.wait_for(wakes.get(), 10) == ("work", later)
            payload = await node.next(pg_store.channel)
            assert set(payload) == NODE_JOB_KEYS
            assert (payload["jobId"], payload["jobName"], payload["priority"]) == (job.id, "work", 3)
            assert payload["source"] == "test-worker"
            assert ISO.match(payload["nextRunAt"]) and ISO.match(payload["timestamp"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_node_notifications_wake_us_and_saves_announce_claimable_jobs_only(
    pg_store: PostgresJobStore,
) -> None:
    wakes: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(collect(due_changes(pg_store.pool, pg_store.channel), wakes))
    try:
        await wait_for_listeners(pg_store, 1)
        # What Node's PostgresNotificationChannel.publish sends after a save (a pool connection of its own).
        node_payload = json.dumps({"jobId": "6f1c2f4e-1111-4a4a-9999-000000000000", "jobName": "from-node",
                                   "nextRunAt": "2030-01-02T03:04:05.678Z", "priority": 0,
                                   "timestamp": "2030-01-01T00:00:00.000Z", "source": "node"})  # fmt: skip
        await execute(pg_store, "SELECT pg_notify(%s, %s)", [pg_store.channel, node_payload])
        name, next_run = await asyncio.wait_for(wakes.get(), 10)
        assert (
            name == "from-node"
            and next_run is not None
            and next_run.isoformat() == "2030-01-02T03:04:05.678000+00:00"
        )

        # A payload that is not Node's is ignored, not fatal.
        await execute(pg_store, "SELECT pg_notify(%s, 'not json')", [pg_store.channel])
        now = utcnow()
        docs = [
            {"_id": "a", "name": "due", "nextRunAt": now + timedelta(seconds=1), "priority": 1},
            {"_id": "a2", "name": "due", "nextRunAt": now, "priority": 1},  # one wake-up per name
            {"_id": "b", "name": "locked", "nextRunAt": now, "lockedAt": now},
            {"_id": "c", "name": "disabled", "nextRunAt": now, "disabled": True},
            {"_id": "d", "name": "done", "nextRunAt": None},
        ]
        async with pg_store.pool.connection() as conn:
            await publish(conn, due_notes(pg_store.channel, docs, "me"))
        assert await asyncio.wait_for(wakes.get(), 10) == ("due", now)
        await asyncio.sleep(0.2)
        assert wakes.empty()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_wake_ups_survive_the_loss_of_the_listening_connection(pg_store: PostgresJobStore) -> None:
    wakes: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(collect(due_changes(pg_store.pool, pg_store.channel), wakes))
    try:
        (pid,) = await wait_for_listeners(pg_store, 1)
        await execute(pg_store, "SELECT pg_terminate_backend(%s)", [pid])
        for _ in range(200):
            pids = await wait_for_listeners(pg_store, 1)
            if pid not in pids:
                break
            await asyncio.sleep(0.05)
        note = {"jobName": "again", "nextRunAt": None}
        await execute(pg_store, "SELECT pg_notify(%s, %s)", [pg_store.channel, json.dumps(note)])
        assert await asyncio.wait_for(wakes.get(), 10) == ("again", None)
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_run_steps_are_announced_as_node_announces_them_and_read_back_as_changes(
    pg_url: str, pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    state = f"{pg_store.channel}:state"
    changes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(collect(await run_changes(pg_store.pool, pg_store.channel), changes))
    try:
        async for node in listening(pg_url, state):
            ok, bad = await add_jobs(pg_store, "work", 2)
            jobs = await claim(pg_store.pool, pg_store.table, request_for(["work"]), "tok", 2, writes=writes)
            for job in jobs:
                job.last_run_at = utcnow()
            assert await asyncio.gather(*(writes.queue(job, ("last_run_at",)) for job in jobs)) == [
                True,
                True,
            ]
            ok_job, bad_job = jobs
            ok_job.progress = 50
            ok_job.locked_at = utcnow()
            assert await writes.save_state(ok_job, ["locked_at", "progress"])
            ok_job.locked_at, ok_job.last_finished_at = None, utcnow()
            _fail(bad_job, retry_in=timedelta(minutes=1))
            bad_job.locked_at = None
            assert await asyncio.gather(writes.queue(ok_job, ("last_finished_at",)), writes.queue(bad_job, ())) == [
                True, True]  # fmt: skip

            seen: dict[str, list[dict[str, Any]]] = {ok.id or "": [], bad.id or "": []}
            for _ in range(8):
                payload = await node.next(state)
                assert set(payload) <= NODE_STATE_KEYS and ISO.match(payload["timestamp"])
                seen[payload["jobId"]].append(payload)
            assert [p["type"] for p in seen[ok_job.id or ""]] == ["start", "progress", "success", "complete"]
            assert [p["type"] for p in seen[bad_job.id or ""]] == ["start", "fail", "retry", "complete"]
            fail = seen[bad_job.id or ""][1]
            assert (fail["error"], fail["failCount"], fail["source"]) == ("boom", 1, "test-worker")
            assert fail["retryAt"] == seen[bad_job.id or ""][2]["retryAt"]

            # The same steps read back as changes, which fleet events turn into Agenda's events.
            events: dict[str, list[str]] = {}
            for _ in range(5):
                change = await asyncio.wait_for(changes.get(), 10)
                updated = change["updateDescription"]["updatedFields"]
                key = change["documentKey"]["_id"]
                events.setdefault(key, []).extend(
                    _events_of(updated, change["fullDocument"], None, updated.get("lastRunAt"))
                )
            assert events[ok_job.id or ""] == ["start", "progress", "success", "complete"]
            assert events[bad_job.id or ""] == ["start", "fail", "complete"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _fail(job: Job, *, retry_in: timedelta) -> None:
    now = utcnow()
    job.fail_reason, job.fail_count = "boom", 1
    job.failed_at = job.last_finished_at = now
    job.next_run_at = now + retry_in


def test_node_state_notifications_become_changes_fleet_events_understand() -> None:
    base = {"jobId": "6f1c2f4e-1111-4a4a-9999-000000000000", "jobName": "n", "source": "node-1",
            "timestamp": "2030-01-01T00:00:01.000Z"}  # fmt: skip
    start = change_of(json.dumps({**base, "type": "start", "lastRunAt": "2030-01-01T00:00:00.000Z"}))
    fail = change_of(json.dumps({**base, "type": "fail", "error": "bad", "failCount": 2}))
    success = change_of(json.dumps({**base, "type": "success", "lastRunAt": "2030-01-01T00:00:00.000Z",
                                    "lastFinishedAt": "2030-01-01T00:00:01.000Z", "duration": 1000}))  # fmt: skip
    assert start and fail and success
    for change, expected in (
        (start, ["start"]),
        (fail, ["fail", "complete"]),
        (success, ["success", "complete"]),
    ):
        updated = change["updateDescription"]["updatedFields"]
        assert _events_of(updated, change["fullDocument"], None, updated.get("lastRunAt")) == expected
    assert fail["fullDocument"]["failReason"] == "bad" and fail["fullDocument"]["lastModifiedBy"] == "node-1"
    for ignored in ('{"type": "complete", "jobId": "x", "jobName": "n"}', "[]", "nope", '{"type": "start"}'):
        assert change_of(ignored) is None


async def test_handing_back_a_job_disabled_meanwhile_wakes_nobody(
    pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    wakes: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(collect(due_changes(pg_store.pool, pg_store.channel), wakes))
    try:
        await wait_for_listeners(pg_store, 1)
        (added,) = await add_jobs(pg_store, "quiet", 1)
        assert await asyncio.wait_for(wakes.get(), 10) == ("quiet", added.next_run_at)  # the insert
        (job,) = await claim(pg_store.pool, pg_store.table, request_for(["quiet"]), "tok", 1, writes=writes)
        await execute(pg_store, f'UPDATE "{pg_store.table}" SET disabled = TRUE WHERE id = %s', [job.id])
        await release(writes, [job])
        marker = utcnow()
        async with pg_store.pool.connection() as conn:  # notifications arrive in commit order
            await publish(
                conn, due_notes(pg_store.channel, [{"_id": "m", "name": "marker", "nextRunAt": marker}], None)
            )
        assert await asyncio.wait_for(wakes.get(), 10) == ("marker", marker)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_long_error_never_makes_a_payload_postgresql_refuses(
    pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    (job,) = await add_jobs(pg_store, "work", 1)
    (job,) = await claim(pg_store.pool, pg_store.table, request_for(["work"]), "tok", 1, writes=writes)
    job.last_run_at = utcnow()
    assert await writes.queue(job, ())
    _fail(job, retry_in=timedelta(minutes=1))
    job.fail_reason = "ünïcödé " * 2000  # 16,000 characters, most of them more than one byte
    job.locked_at = None
    assert await writes.queue(job, ()) is True  # the final write applies; its notification fits
    assert (await pg_run_support.row(pg_store, job.id))["fail_reason"] == job.fail_reason
    payload = state_payload("fail", "id", "n" * 255, "source", error="é" * 5000, failCount=1)
    assert len(payload.encode()) < 8000 and json.loads(payload)["error"].startswith("é")


def test_the_default_channel_is_node_backends_whatever_the_table() -> None:
    # Node's PostgresBackend leaves channelName unset, and its channel class then defaults to
    # 'agenda:jobs' (run steps on 'agenda:jobs:state'), whatever tableName is.
    for table in ("agenda_jobs", "billing_jobs"):
        assert PostgresJobStore("postgresql://127.0.0.1/x", table=table).channel == "agenda:jobs"
    assert PostgresJobStore("postgresql://127.0.0.1/x", channel="billing").channel == "billing"
    for bad in ("", "x" * 58, 7):
        with pytest.raises(InvalidInput) as refused:
            PostgresJobStore("postgresql://127.0.0.1/x", channel=bad)
        assert refused.value.field == "channel"


async def test_a_claim_announces_the_starts_it_writes_but_not_of_a_row_it_cannot_read(
    pg_url: str, pg_store: PostgresJobStore, writes: StateWrites
) -> None:
    good, bad = await add_jobs(pg_store, "work", 2)
    await execute(
        pg_store, f'UPDATE "{pg_store.table}" SET misfire = %s WHERE id = %s', ["sometimes", bad.id]
    )
    state = f"{pg_store.channel}:state"
    async for node in listening(pg_url, state):
        request = dataclasses.replace(request_for(["work"]), start_due=True)
        (job,) = await claim(pg_store.pool, pg_store.table, request, "tok", 5, writes=writes)
        assert job.id == good.id and job.lease is not None and job.lease.claimed_start is not None
        # A marker sent after the claim: notifications arrive in commit order, so whatever the claim
        # announced is read before it.
        await execute(pg_store, "SELECT pg_notify(%s, %s)", [state, json.dumps({"type": "marker"})])
        seen = []
        while (payload := await node.next(state))["type"] != "marker":
            seen.append(payload)
        assert [(p["type"], p["jobId"]) for p in seen] == [("start", good.id)]
        assert set(seen[0]) <= NODE_STATE_KEYS and ISO.match(seen[0]["lastRunAt"])


def test_a_start_whose_notification_was_lost_announces_no_end() -> None:
    announce = Announcements()
    started = utcnow().replace(microsecond=0)
    job = Job(name="work", id="00000000-0000-4000-8000-000000000001", last_modified_by="w1")
    _, steps = announce.notes(job, {"lockedAt": started, "lastRunAt": started})
    assert [json.loads(step)["type"] for step in steps] == ["start"]
    announce.forget([str(job.id)])
    ended = {"lockedAt": None, "lockToken": None, "lastFinishedAt": started + timedelta(seconds=1)}
    assert announce.notes(job, ended) == (None, [])

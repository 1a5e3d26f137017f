"""Beyond Agenda in the core: lock heartbeat, fenced writes, timeouts, graceful stop, checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from agendapy import Agenda, Job, JobTimeout, LockLost, backoff

from support import EventLog, wait_until


async def test_heartbeat_keeps_a_long_job_locked_so_no_other_worker_runs_it(
    make_agenda: Any, jobs_collection: Any
) -> None:
    first: Agenda = await make_agenda(name="first")
    second: Agenda = await make_agenda(name="second")
    runs: list[str] = []
    release = asyncio.Event()
    lock_times: list[datetime] = []

    async def long_job(job: Job) -> None:
        runs.append(job.agenda.name if job.agenda else "?")
        doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
        lock_times.append(doc["lockedAt"])
        await asyncio.wait_for(release.wait(), 10)

    for agenda in (first, second):
        agenda.define("long", long_job, lock_lifetime=0.3)
    job = await first.now("long")
    await first.start()
    await wait_until(lambda: len(lock_times) == 1)  # the handler has read its lock
    await second.start()

    async def lock_moved() -> bool:
        doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
        return doc["lockedAt"] is not None and doc["lockedAt"] > lock_times[0]

    await wait_until(lock_moved, timeout=5)
    await asyncio.sleep(0.8)  # more than two lock lifetimes: without renewal `second` would take it over
    assert runs == ["first"]
    release.set()
    log = EventLog(first, "complete")
    await log.wait("complete")
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["lockedAt"] is None and doc["lastFinishedAt"] is not None
    assert runs == ["first"]


async def test_a_worker_that_lost_its_lock_cannot_overwrite_the_new_owner(
    agenda: Agenda, jobs_collection: Any
) -> None:
    started = asyncio.Event()
    finish = asyncio.Event()
    seen: dict[str, Any] = {}

    @agenda.define("victim", lock_lifetime=0.3)
    async def victim(job: Job) -> None:
        started.set()
        await asyncio.wait_for(finish.wait(), 10)
        seen["lock_lost"] = job.lock_lost
        try:
            await job.touch()
        except LockLost as exc:
            seen["touch"] = exc

    lost = EventLog(agenda, "lock lost", "complete")
    job = await agenda.now("victim")
    await agenda.start()
    await asyncio.wait_for(started.wait(), 10)
    # Another worker (say Node Agenda after a network partition) takes the lock over. Its lockedAt is
    # ahead of our clock so that its lock does not expire during the test (the thief never renews).
    thief_lock = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    await jobs_collection.update_one(
        {"_id": ObjectId(job.id)}, {"$set": {"lockedAt": thief_lock, "lastModifiedBy": "thief"}}
    )
    await lost.wait("lock lost")
    finish.set()
    await lost.wait("complete")
    assert seen["lock_lost"] is True
    assert isinstance(seen["touch"], LockLost)
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["lockedAt"] == thief_lock, "the stale worker overwrote the new owner's lock"
    assert doc["lastModifiedBy"] == "thief"
    assert doc.get("lastFinishedAt") is None


async def test_async_handler_is_cancelled_at_its_timeout_and_retried(
    agenda: Agenda, jobs_collection: Any
) -> None:
    cancelled = asyncio.Event()

    @agenda.define("slow", timeout=0.2, backoff=backoff.constant(delay=30, max_retries=1))
    async def slow(job: Job) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    log = EventLog(agenda, "fail", "retry")
    job = await agenda.now("slow")
    await agenda.start()
    ((error, _failed_job),) = await log.wait("fail")
    await log.wait("retry")
    assert isinstance(error, JobTimeout)
    assert cancelled.is_set()
    assert "timed out after 0.2 s" in str(error)
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    await wait_until(lambda: _unlocked(jobs_collection, job.id))
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["failReason"] == "timed out after 0.2 s"
    assert doc["failCount"] == 1
    assert doc["nextRunAt"] > datetime.now(UTC)  # the backoff's retry, 30 s away


async def _unlocked(collection: Any, job_id: str | None) -> bool:
    doc = await collection.find_one({"_id": ObjectId(job_id)})
    return doc is not None and doc["lockedAt"] is None


async def test_sync_handler_is_asked_to_stop_at_its_timeout(agenda: Agenda) -> None:
    saw_stop = threading.Event()

    @agenda.define("blocking", timeout=0.2)
    def blocking(job: Job) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if job.stop_requested:
                saw_stop.set()
                return
            time.sleep(0.01)

    log = EventLog(agenda, "fail")
    await agenda.now("blocking")
    await agenda.start()
    ((error, _job),) = await log.wait("fail")
    assert isinstance(error, JobTimeout)
    assert await asyncio.to_thread(saw_stop.wait, 5)


async def test_stop_asks_handlers_to_stop_and_a_cooperative_job_finishes(
    agenda: Agenda, jobs_collection: Any
) -> None:
    started = asyncio.Event()

    @agenda.define("cooperative")
    async def cooperative(job: Job) -> None:
        started.set()
        await asyncio.wait_for(job.stopping(), 10)
        assert job.stop_requested

    log = EventLog(agenda, "success")
    job = await agenda.now("cooperative")
    await agenda.start()
    await asyncio.wait_for(started.wait(), 10)
    began = time.monotonic()
    await agenda.stop(grace=5)
    assert time.monotonic() - began < 4
    assert log.count("success") == 1
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["lockedAt"] is None and doc["lastFinishedAt"] is not None


async def test_interrupted_job_resumes_from_its_checkpoint_on_another_worker(
    make_agenda: Any, jobs_collection: Any
) -> None:
    first: Agenda = await make_agenda(name="first")
    second: Agenda = await make_agenda(name="second")
    processed: list[tuple[str, int]] = []
    resumed_from: list[Any] = []
    reached_three = asyncio.Event()

    async def chunks(job: Job) -> None:
        state = job.checkpoint_state or {"next": 0}
        resumed_from.append(job.checkpoint_state)
        for i in range(state["next"], 6):
            processed.append((job.agenda.name if job.agenda else "?", i))
            await job.checkpoint({"next": i + 1})
            if i == 2 and job.agenda is first:
                reached_three.set()
                await asyncio.sleep(30)  # ignores stop requests: cancelled after the grace period

    first.define("chunks", chunks)
    second.define("chunks", chunks)
    job = await first.now("chunks", {"items": 6})
    await first.start()
    await asyncio.wait_for(reached_three.wait(), 10)
    await first.stop(grace=0.2)
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["lockedAt"] is None, "an interrupted job must be unlocked at once"
    assert doc["checkpoint"] == {"next": 3}

    log = EventLog(second, "complete")
    await second.start()
    await log.wait("complete")
    assert resumed_from == [None, {"next": 3}]
    assert [i for _, i in processed] == [0, 1, 2, 3, 4, 5]
    assert {w for w, i in processed if i >= 3} == {"second"}
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc.get("checkpoint") is None, "a successful run clears the checkpoint"


async def test_checkpoint_rejects_state_bson_cannot_hold(agenda: Agenda) -> None:
    errors: list[BaseException] = []

    @agenda.define("bad checkpoint")
    async def bad(job: Job) -> None:
        try:
            await job.checkpoint({"a": {1, 2}})
        except ValueError as exc:
            errors.append(exc)

    log = EventLog(agenda, "complete")
    await agenda.now("bad checkpoint")
    await agenda.start()
    await log.wait("complete")
    assert errors and "checkpoint_state" in str(errors[0])


@pytest.mark.parametrize("grace", [0.3])
async def test_stop_cancels_after_grace_and_makes_the_job_due_now(
    agenda: Agenda, jobs_collection: Any, grace: float
) -> None:
    started = asyncio.Event()

    @agenda.define("stubborn")
    async def stubborn(job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    job = await agenda.now("stubborn")
    await agenda.start()
    await asyncio.wait_for(started.wait(), 10)
    began = time.monotonic()
    await agenda.stop(grace=grace)
    assert time.monotonic() - began < grace + 1
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["lockedAt"] is None
    assert doc["nextRunAt"] is not None and doc["nextRunAt"] <= datetime.now(UTC)


@pytest.mark.parametrize("final", [False, True])
async def test_batched_state_writes_are_fenced_one_by_one(
    agenda: Agenda, jobs_collection: Any, final: bool
) -> None:
    from agendapy.store.base import ClaimRequest

    agenda.define("batched", lambda job: None)
    for n in range(3):
        await agenda.now("batched", {"n": n})
    now = datetime.now(UTC).replace(microsecond=0)
    request = ClaimRequest(
        names=["batched"],
        now=now,
        next_scan_at=now + timedelta(minutes=1),
        lock_deadlines={"batched": now - timedelta(minutes=10)},
        owner="me",
    )
    jobs = await agenda.store.claim(request, "token-1", 3)
    assert len(jobs) == 3
    stolen = jobs[1]
    await jobs_collection.update_one(
        {"_id": ObjectId(stolen.id)}, {"$set": {"lockedAt": now + timedelta(hours=1), "lockToken": "thief"}}
    )
    for job in jobs:
        job.last_run_at = now
        job.progress = 42
        if final:
            job.locked_at = None
    results = await asyncio.gather(*(agenda.store.save_state_batched(job) for job in jobs))
    assert results == [True, False, True]
    docs = {str(d["_id"]): d async for d in jobs_collection.find({})}
    assert docs[stolen.id]["lockToken"] == "thief" and docs[stolen.id].get("progress") is None
    for job in (jobs[0], jobs[2]):
        assert docs[job.id]["progress"] == 42
        assert docs[job.id]["lockToken"] == (None if final else "token-1")


class _UpdateCommands(monitoring.CommandListener):
    """The update (and delete) commands a client sends: each as its list of statements."""

    def __init__(self) -> None:
        self.updates: list[list[dict[str, Any]]] = []
        self.deletes: list[list[dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            self.updates.append(list(event.command["updates"]))
        elif event.command_name == "delete" and event.command.get("delete") == "agendaJobs":
            self.deletes.append(list(event.command["deletes"]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def _claim_three(agenda: Agenda, name: str) -> list[Job]:
    from agendapy.store.base import ClaimRequest

    for n in range(3):
        await agenda.now(name, {"n": n})
    now = datetime.now(UTC).replace(microsecond=0)
    request = ClaimRequest(
        names=[name],
        now=now,
        next_scan_at=now + timedelta(minutes=1),
        lock_deadlines={name: now - timedelta(minutes=10)},
        owner="me",
    )
    jobs = await agenda.store.claim(request, "token-1", 3)
    assert len(jobs) == 3
    return jobs


async def test_finishes_within_the_write_window_go_out_as_one_fenced_update(
    make_agenda: Any, db_url: str, jobs_collection: Any
) -> None:
    updates = _UpdateCommands()
    client: AsyncMongoClient[Any] = AsyncMongoClient(db_url, event_listeners=[updates], tz_aware=True)
    try:
        agenda: Agenda = await make_agenda(db=client, state_write_window=0.5)
        agenda.define("windowed", lambda job: None)
        jobs = await _claim_three(agenda, "windowed")
        # A Node Agenda worker takes the middle job over: it moves lockedAt and knows no token.
        thief_lock = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        await jobs_collection.update_one({"_id": ObjectId(jobs[1].id)}, {"$set": {"lockedAt": thief_lock}})
        updates.updates.clear()
        writes = []
        for job in jobs:  # three runs finishing at different moments, well inside the window
            job.locked_at = job.next_run_at = None  # one-off runs: nothing scheduled after them
            job.last_finished_at = datetime.now(UTC)
            writes.append(
                asyncio.create_task(agenda.store.save_state_batched(job, stamp=("last_finished_at",)))
            )
            await asyncio.sleep(0.02)
        results = await asyncio.wait_for(asyncio.gather(*writes), 10)
    finally:
        await client.close()
    assert results == [True, False, True]
    assert len(updates.updates) == 1, f"expected one update command, got {updates.updates}"
    (statements,) = updates.updates
    assert len(statements) == 1 and statements[0].get("multi") is True
    docs = {str(d["_id"]): d async for d in jobs_collection.find({})}
    stolen = docs[jobs[1].id]
    assert stolen["lockedAt"] == thief_lock and stolen.get("lastFinishedAt") is None
    for job in (jobs[0], jobs[2]):
        assert docs[job.id]["lockedAt"] is None and docs[job.id]["lockToken"] is None
        # The job holds what was written: the moment of the batch's write.
        assert docs[job.id]["lastFinishedAt"] == job.last_finished_at
    assert jobs[0].last_finished_at == jobs[2].last_finished_at


async def test_removals_on_complete_within_the_write_window_go_out_as_one_delete(
    make_agenda: Any, db_url: str, jobs_collection: Any
) -> None:
    commands = _UpdateCommands()
    client: AsyncMongoClient[Any] = AsyncMongoClient(db_url, event_listeners=[commands], tz_aware=True)
    try:
        agenda: Agenda = await make_agenda(db=client, state_write_window=0.2, remove_on_complete=True)
        agenda.define("brief", lambda job: None, concurrency=10)
        events = EventLog(agenda, "complete:brief")
        await agenda.insert_many([agenda.create("brief", {"n": n}) for n in range(10)])
        await agenda.every("1 hour", "brief", {"kept": True})  # recurring: never removed
        await agenda.start()
        await events.wait("complete:brief", count=11)

        async def only_the_recurring_job_left() -> bool:
            return await jobs_collection.count_documents({}) == 1

        await wait_until(only_the_recurring_job_left)
    finally:
        await agenda.stop()
        await client.close()
    left = [doc["data"] async for doc in jobs_collection.find({})]
    assert left == [{"kept": True}]
    deleted = []
    for command in commands.deletes:
        for statement in command:
            target = statement["q"]["_id"]
            deleted.extend(target["$in"] if isinstance(target, dict) else [target])
    assert len(deleted) == len(set(deleted)) == 10
    # Ten runs that ended together: their deletions share a command or two, not one each.
    assert 1 <= len(commands.deletes) <= 3, commands.deletes


async def test_a_removal_that_fails_leaves_the_run_succeeded_and_the_job_stored(
    agenda: Agenda, jobs_collection: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agendapy.errors import DatabaseUnavailable

    async def unreachable(job_id: str) -> None:
        raise DatabaseUnavailable("cannot reach the database")

    monkeypatch.setattr(agenda.store, "remove_finished", unreachable)
    agenda.define("brief", lambda job: None, remove_on_complete=True)
    events = EventLog(agenda, "success:brief", "fail", "error")
    job = await agenda.now("brief")
    await agenda.start()
    [(error,)] = await events.wait("error", timeout=10)
    assert isinstance(error, DatabaseUnavailable)
    assert events.count("success:brief") == 1 and events.count("fail") == 0, events.calls
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["lastFinishedAt"] is not None and doc["lockedAt"] is None and doc["nextRunAt"] is None
    assert doc.get("failedAt") is None
    # A warning that names the job, not a crashed run (whose outcome would count as failed).
    assert "could not remove finished job brief" in caplog.text
    assert "crashed" not in caplog.text


async def test_a_job_taken_over_during_its_run_is_not_removed_by_the_old_holder(
    agenda: Agenda, jobs_collection: Any
) -> None:
    # Another worker took the job over (its lock expired meanwhile): it is that worker's now, so the
    # old holder's remove_on_complete must not delete it under it.
    taken_over = asyncio.Event()

    async def slow(job: Job) -> None:
        await asyncio.wait_for(taken_over.wait(), 10)

    agenda.define("slow", slow, remove_on_complete=True)
    events = EventLog(agenda, "complete:slow")
    job = await agenda.now("slow")
    await agenda.start()

    async def locked() -> bool:
        doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
        return doc is not None and doc.get("lockToken") is not None

    await wait_until(locked)
    thief = {"lockedAt": datetime.now(UTC).replace(microsecond=0), "lockToken": "another-worker"}
    await jobs_collection.update_one({"_id": ObjectId(job.id)}, {"$set": thief})
    taken_over.set()
    await events.wait("complete:slow", timeout=10)
    await agenda.stop()  # waits for the run's end, which would have sent a deletion
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc is not None and doc["lockToken"] == "another-worker", doc


async def test_run_writes_issued_while_a_batch_is_in_flight_go_out_together_after_it(
    make_agenda: Any, db_url: str, jobs_collection: Any
) -> None:
    updates = _UpdateCommands()
    client: AsyncMongoClient[Any] = AsyncMongoClient(db_url, event_listeners=[updates], tz_aware=True)
    try:
        agenda: Agenda = await make_agenda(db=client, state_write_window=0)
        agenda.define("grouped", lambda job: None)
        first, *later = await _claim_three(agenda, "grouped")
        for job in (first, *later):
            job.locked_at = job.next_run_at = None
        assert first.lease is not None
        updates.updates.clear()
        # The first batch waits for its lease (as behind a heartbeat): it is in flight meanwhile.
        async with first.lease.write_lock:
            writes = [asyncio.create_task(agenda.store.save_state_batched(first))]
            await asyncio.sleep(0.02)
            for job in later:  # two more finishes, in other event-loop turns
                writes.append(asyncio.create_task(agenda.store.save_state_batched(job)))
                await asyncio.sleep(0.02)
            assert updates.updates == []
        assert await asyncio.wait_for(asyncio.gather(*writes), 10) == [True, True, True]
    finally:
        await client.close()
    assert len(updates.updates) == 2, f"expected two update commands, got {updates.updates}"
    assert [len(statements) for statements in updates.updates] == [1, 1]
    assert updates.updates[1][0].get("multi") is True  # the two later finishes: one update_many
    async for doc in jobs_collection.find({}):
        assert doc["lockedAt"] is None and doc["lockToken"] is None


async def test_starts_within_the_write_window_renew_their_locks_to_one_instant(
    make_agenda: Any, jobs_collection: Any
) -> None:
    agenda: Agenda = await make_agenda(state_write_window=0.5)
    agenda.define("windowed", lambda job: None)
    jobs = await _claim_three(agenda, "windowed")
    claimed_at = jobs[0].lease.locked_at if jobs[0].lease else None
    await jobs_collection.update_one(
        {"_id": ObjectId(jobs[1].id)}, {"$set": {"lockedAt": claimed_at, "lockToken": "thief"}}
    )
    writes = []
    for job in jobs:
        job.last_run_at = job.locked_at = datetime.now(UTC)
        writes.append(asyncio.create_task(agenda.store.save_state_batched(job, stamp=("last_run_at",))))
        await asyncio.sleep(0.02)
    assert await asyncio.wait_for(asyncio.gather(*writes), 10) == [True, False, True]
    docs = {str(d["_id"]): d async for d in jobs_collection.find({})}
    assert docs[jobs[1].id]["lockToken"] == "thief" and docs[jobs[1].id].get("lastRunAt") is None
    held = [jobs[0], jobs[2]]
    assert {docs[j.id]["lockedAt"] for j in held} == {held[0].locked_at}
    assert all(j.lease is not None and j.lease.locked_at == held[0].locked_at for j in held)
    assert all(docs[j.id]["lastRunAt"] == j.last_run_at == held[0].locked_at for j in held)
    # The renewed lock is the one the next write is fenced by: the runs can still finish.
    for job in held:
        job.locked_at = None
    assert await asyncio.gather(*(agenda.store.save_state_batched(j) for j in held)) == [True, True]


class _GetMores(monitoring.CommandListener):
    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "getMore":
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def _until_heard(jobs_collection: Any, seen: list[tuple[str, Any]]) -> None:
    """Insert probes until the stream reports one: it is open then (late on a loaded machine; a write
    made before is not in it). A last probe, heard after the earlier ones, leaves ``seen`` empty."""
    far = datetime(2100, 1, 1, tzinfo=UTC)

    async def heard() -> bool:
        await jobs_collection.insert_one({"name": "probe", "nextRunAt": far, "lockedAt": None})
        return bool(seen)

    await wait_until(heard, timeout=30, interval=0.2)
    last = far + timedelta(seconds=1)
    await jobs_collection.insert_one({"name": "probe", "nextRunAt": last, "lockedAt": None})
    await wait_until(lambda: ("probe", last) in seen, timeout=30)
    seen.clear()


async def test_other_workers_writes_do_not_make_a_change_stream_spin(
    make_agenda: Any, db_url: str, jobs_collection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agendapy.store import streams
    from agendapy.store.mongo import MongoJobStore

    pause = 0.3  # longer than the default, so that the bound below holds on a loaded machine too
    monkeypatch.setattr(streams, "EMPTY_BATCH_PAUSE", pause)
    getmores = _GetMores()
    client: AsyncMongoClient[Any] = AsyncMongoClient(db_url, event_listeners=[getmores], tz_aware=True)
    store = MongoJobStore(client, collection=jobs_collection.name)
    seen: list[tuple[str, Any]] = []

    async def listen() -> None:
        async for change in store.due_changes():
            seen.append(change)

    try:
        await store.connect()
        busy = await jobs_collection.insert_one({"name": "busy", "lockedAt": datetime.now(UTC)})
        listener = asyncio.create_task(listen())
        await _until_heard(jobs_collection, seen)
        before, started = getmores.count, time.monotonic()
        for _ in range(60):  # another worker's heartbeats and claims: nothing to wake up for
            await jobs_collection.update_one(
                {"_id": busy.inserted_id}, {"$set": {"lockedAt": datetime.now(UTC)}}
            )
            await asyncio.sleep(0.01)
        spent, took = getmores.count - before, time.monotonic() - started
        due = datetime.now(UTC).replace(microsecond=0)
        await jobs_collection.insert_one({"name": "wanted", "nextRunAt": due, "lockedAt": None})
        await wait_until(lambda: bool(seen), timeout=10)
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    finally:
        await client.close()
    assert seen == [("wanted", due)]
    # Without the pause each write (or each few, as fast as getMores return) costs one getMore; with
    # it, after a few free ones, at most one early empty getMore per pause.
    bound = took / pause + streams.EMPTY_BATCHES_FREE + 2
    assert spent <= bound, f"{spent} getMores in {took:.2f} s of 60 writes"


def test_the_state_write_window_is_checked() -> None:
    with pytest.raises(ValueError, match="state_write_window"):
        Agenda("mongodb://127.0.0.1:1/x", state_write_window=5)
    assert Agenda("mongodb://127.0.0.1:1/x", state_write_window=0).state_write_window == timedelta(0)


async def test_a_stop_during_a_runs_start_hands_the_job_back() -> None:
    from agendapy.store.base import ClaimRequest
    from agendapy.testing import MemoryJobStore

    class SlowStart(MemoryJobStore):
        # Claims that lock only, as a store without the capability: the run writes its own start
        # (a claim that writes it leaves no start write to stop in).
        async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
            return await super().claim(dataclasses.replace(request, start_due=False), token, limit)

        async def save_state_batched(self, job: Job, *, stamp: Collection[str] = ()) -> bool:
            await asyncio.sleep(0.3)
            return await super().save_state_batched(job, stamp=stamp)

    store = SlowStart()
    agenda = Agenda(store, process_every=0.05)
    ran: list[str] = []
    agenda.define("work", lambda job: ran.append("ran"))
    job = await agenda.now("work")
    await agenda.start()
    await wait_until(lambda: bool(store.documents("work")[0].get("lockedAt")))
    await agenda.stop(grace=0)
    doc = store.documents("work")[0]
    assert doc["lockedAt"] is None, "a run cancelled before its handler must unlock its job"
    assert doc["nextRunAt"] is not None and ran == []
    await agenda.close()
    assert job.id == str(doc["_id"])


async def test_a_stop_during_a_claim_unlocks_what_the_claim_locked() -> None:
    from agendapy.store.base import ClaimRequest
    from agendapy.testing import MemoryJobStore

    claimed = asyncio.Event()

    class SlowClaim(MemoryJobStore):
        async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
            jobs = await super().claim(request, token, limit)
            claimed.set()
            await asyncio.sleep(0.3)  # the reply is slow to arrive
            return jobs

    store = SlowClaim()
    agenda = Agenda(store, process_every=0.05)
    agenda.define("work", lambda job: None)
    await agenda.start()
    await agenda.now("work")  # claimed by a pass after start() (start() waits for its own first pass)
    await asyncio.wait_for(claimed.wait(), 10)
    await agenda.stop(grace=1)
    assert store.documents("work")[0]["lockedAt"] is None, "the claimed job stayed locked after stop"
    await agenda.close()


async def test_start_returns_when_its_first_claim_fails_and_claiming_goes_on() -> None:
    from agendapy.errors import DatabaseUnavailable
    from agendapy.store.base import ClaimRequest
    from agendapy.testing import MemoryJobStore

    class Unreachable(MemoryJobStore):
        down = True

        async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
            if self.down:
                raise DatabaseUnavailable("cannot reach the database")
            return await super().claim(request, token, limit)

    store = Unreachable()
    agenda = Agenda(store, process_every=0.05)
    errors: list[BaseException] = []
    agenda.on("error", errors.append)
    ran = asyncio.Event()
    agenda.define("work", lambda job: ran.set())
    await agenda.now("work")
    await asyncio.wait_for(agenda.start(), 10)  # the failed first pass does not hold start() up
    try:
        assert errors and isinstance(errors[0], DatabaseUnavailable)
        store.down = False
        await asyncio.wait_for(ran.wait(), 20)
    finally:
        await agenda.stop(grace=1)
        await agenda.close()


class _HangingClaims:
    """A MemoryJobStore whose claims hang until ``answer`` is set (a database that does not answer)."""

    @staticmethod
    def make() -> Any:
        from agendapy.store.base import ClaimRequest
        from agendapy.testing import MemoryJobStore

        class Hanging(MemoryJobStore):
            answer = asyncio.Event()
            claiming = asyncio.Event()

            async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
                self.claiming.set()
                await self.answer.wait()
                return await super().claim(request, token, limit)

        return Hanging()


async def test_start_does_not_wait_long_for_a_first_claim_that_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    from agendapy import worker as worker_module

    monkeypatch.setattr(worker_module, "_FIRST_PASS_WAIT", 0.2)
    store = _HangingClaims.make()
    agenda = Agenda(store, process_every=0.05)
    ran = asyncio.Event()
    agenda.define("work", lambda job: ran.set())
    await agenda.now("work")
    try:
        await asyncio.wait_for(agenda.start(), 10)  # returns after the bound, the pass goes on behind it
        assert agenda.is_running and not ran.is_set()
        store.answer.set()
        await asyncio.wait_for(ran.wait(), 20)
    finally:
        await agenda.stop(grace=1)
        await agenda.close()


async def test_a_signal_during_a_worker_start_stops_it_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal

    from agendapy import worker as worker_module
    from agendapy.cli import run_worker

    monkeypatch.setattr(worker_module, "_FIRST_PASS_WAIT", 60.0)  # only the signal can end the start
    store = _HangingClaims.make()
    agenda = Agenda(store, process_every=0.05)
    agenda.define("work", lambda job: None)
    worker = asyncio.ensure_future(run_worker(agenda, grace=2.0))
    await asyncio.wait_for(store.claiming.wait(), 10)
    os.kill(os.getpid(), signal.SIGTERM)  # run_worker's handler takes it, not the default action
    await asyncio.wait_for(worker, 5)
    assert not agenda.is_running


def _slow_saves() -> Any:
    """A MemoryJobStore whose saves wait for ``gate`` (a slow insert), announcing it with ``saving``."""
    from datetime import datetime as _datetime

    from agendapy.testing import MemoryJobStore

    class SlowSaves(MemoryJobStore):
        gate = asyncio.Event()
        saving = asyncio.Event()

        async def save_job(
            self, job: Job, *, now: _datetime, last_modified_by: str | None, lock_token: str | None = None
        ) -> Job | None:
            self.saving.set()
            await self.gate.wait()
            return await super().save_job(
                job, now=now, last_modified_by=last_modified_by, lock_token=lock_token
            )

    return SlowSaves()


async def test_a_drain_during_a_save_locked_on_the_fly_hands_the_job_back() -> None:
    store = _slow_saves()
    agenda = Agenda(store, process_every=0.05)
    ran: list[str | None] = []
    agenda.define("work", lambda job: ran.append(job.id))
    await agenda.start()
    saving = asyncio.ensure_future(agenda.now("work"))
    await asyncio.wait_for(store.saving.wait(), 10)
    result = await agenda.drain(timeout=5)
    store.gate.set()
    job = await asyncio.wait_for(saving, 10)
    try:
        assert result.completed == 0 and not ran
        (doc,) = store.documents("work")
        assert str(doc["_id"]) == job.id
        assert doc["lockedAt"] is None, "a drained worker kept the lock of a job it will never run"
    finally:
        await agenda.close()


async def test_a_now_cancelled_mid_save_leaves_the_job_to_run() -> None:
    store = _slow_saves()
    agenda = Agenda(store, process_every=0.05)
    ran: list[str | None] = []
    agenda.define("work", lambda job: ran.append(job.id))
    await agenda.start()
    try:
        saving = asyncio.ensure_future(agenda.now("work"))
        await asyncio.wait_for(store.saving.wait(), 10)
        saving.cancel()
        store.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await saving
        # The insert went through, locked for a run that was abandoned: it is unlocked and claimed.
        await wait_until(lambda: len(ran) == 1, timeout=15)
        (doc,) = store.documents("work")
        assert ran == [str(doc["_id"])]
    finally:
        await agenda.stop(grace=1)
        await agenda.close()


async def test_locking_on_the_fly_keeps_a_lock_limit_while_a_claim_is_under_way() -> None:
    from agendapy.store.base import ClaimRequest
    from agendapy.testing import MemoryJobStore

    class HeldClaims(MemoryJobStore):
        hold = False
        gate = asyncio.Event()
        claiming = asyncio.Event()

        async def claim(self, request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
            if self.hold:
                self.claiming.set()
                await self.gate.wait()
            return await super().claim(request, token, limit)

    store = HeldClaims()
    worker = Agenda(store, name="worker", process_every=0.05)
    producer = Agenda(store, name="producer")
    release = asyncio.Event()

    async def work(job: Job) -> None:
        await release.wait()

    worker.define("work", work, lock_limit=1)
    await worker.start()
    try:
        store.hold = True
        await producer.now("work", "from the producer")
        await asyncio.wait_for(store.claiming.wait(), 10)  # a claim that may take it is under way
        mine = await worker.now("work", "mine")
        store.gate.set()
        processor = worker._processor
        assert processor is not None
        await wait_until(lambda: processor.running_count("work") == 1, timeout=10)
        stats = await worker.running_stats()
        assert stats.job_status["work"]["locked"] == 1, "the lock limit was passed"
        stored = await worker.get_job(mine.id)
        assert stored is not None and stored.locked_at is None
    finally:
        release.set()
        await worker.stop(grace=1)
        await worker.close()
        await producer.close()


async def test_a_next_run_claimed_while_the_final_write_is_answered_slowly_still_runs() -> None:
    """The final write of a failed run (unlocked, its retry due in 50 ms) is stored, but its reply is
    slow: meanwhile the wake-up it caused claims the retry while the run still holds the job. That
    lock must not outlive the run (before: held by no one until it expired, 10 minutes later)."""
    from agendapy.testing import MemoryJobStore

    class SlowFinalReply(MemoryJobStore):
        async def save_state_batched(self, job: Job, *, stamp: Collection[str] = ()) -> bool:
            saved = await super().save_state_batched(job, stamp=stamp)
            if job.lease is not None and job.lease.finishing:
                await asyncio.sleep(0.5)  # stored; the reply is slow to arrive
            return saved

    store = SlowFinalReply()
    agenda = Agenda(store, process_every=0.05)
    attempts: list[int] = []

    @agenda.define("flaky", backoff=backoff.constant(delay=0.05, max_retries=1))
    async def flaky(job: Job) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("once")

    log = EventLog(agenda, "success:flaky", "retry:flaky")
    await agenda.now("flaky")
    await agenda.start()
    try:
        await log.wait("success:flaky", timeout=15)
        assert attempts == [1, 1]
        await wait_until(lambda: store.documents("flaky")[0]["lockedAt"] is None, timeout=15)
    finally:
        await agenda.stop(grace=1)
        await agenda.close()


async def test_a_lock_that_expires_unrenewed_asks_its_run_to_stop(agenda: Agenda) -> None:
    # The database stops answering renewals (an outage): once the lock has outlived its lifetime another
    # worker may own the job, so the run is asked to stop instead of running on beside the new owner's.
    started = asyncio.Event()
    seen: dict[str, Any] = {}

    @agenda.define("long", lock_lifetime=0.4)
    async def long_job(job: Job) -> None:
        started.set()
        await asyncio.wait_for(job.stopping(), 10)
        seen["lock_lost"] = job.lock_lost

    async def unreachable(jobs: Any, now: datetime) -> list[Job]:
        raise ConnectionError("the database is unreachable")

    events = EventLog(agenda, "lock lost", "complete")
    await agenda.now("long")
    await agenda.start()
    await asyncio.wait_for(started.wait(), 10)
    agenda.store.renew_locks = unreachable  # type: ignore[method-assign]
    await events.wait("lock lost", timeout=10)
    await events.wait("complete", timeout=10)
    assert seen["lock_lost"] is True


async def test_a_worker_whose_own_lock_looks_expired_keeps_its_one_run(
    make_agenda: Any, jobs_collection: Any
) -> None:
    # A late heartbeat (a loaded machine) leaves a running job's lock older than its lifetime. The
    # worker's next claim pass must not take the job again: a second lock token would fence the run's
    # own renewal, and the job would run twice in the same worker.
    worker: Agenda = await make_agenda(name="worker")
    feeder: Agenda = await make_agenda(name="feeder")
    started: dict[str, asyncio.Event] = {"long": asyncio.Event(), "next": asyncio.Event()}
    release = asyncio.Event()
    runs: list[str] = []

    @worker.define("work", lock_lifetime=60, concurrency=5)
    async def work(job: Job) -> None:
        runs.append(job.data["step"])
        started[job.data["step"]].set()
        if job.data["step"] == "long":
            await asyncio.wait_for(release.wait(), 15)

    events = EventLog(worker, "lock lost", "complete", "fail")
    long_job = await worker.now("work", {"step": "long"})
    await worker.start()
    await asyncio.wait_for(started["long"].wait(), 10)
    before = await jobs_collection.find_one({"_id": ObjectId(long_job.id)})
    expired = before["lockedAt"] - timedelta(hours=1)
    await jobs_collection.update_one({"_id": ObjectId(long_job.id)}, {"$set": {"lockedAt": expired}})

    # A second job of the name, saved elsewhere, makes the worker claim with room for both.
    await feeder.now("work", {"step": "next"})
    await asyncio.wait_for(started["next"].wait(), 10)
    await events.wait("complete", timeout=10)
    doc = await jobs_collection.find_one({"_id": ObjectId(long_job.id)})
    assert doc["lockToken"] == before["lockToken"], doc
    assert doc["lockedAt"] == expired, doc

    release.set()
    await events.wait("complete", count=2, timeout=10)
    assert runs == ["long", "next"]
    assert events.count("lock lost") == 0 and events.count("fail") == 0, events.calls

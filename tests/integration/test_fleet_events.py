"""Fleet-wide events and ``wait_for``: one Agenda runs jobs, another (defining nothing) hears of them.

Two Agendas in one test process stand for two processes: "remote" means run by another Agenda. The
acceptance suite does the same with a real worker process (tests/acceptance/test_fleet_processes.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId

from agendapy import Agenda, Job, JobFailed, JobNotFound, RemoteFailure, backoff

from support import EventLog


@pytest.fixture
async def watcher(make_agenda: Any) -> Agenda:
    """A web process: defines nothing, listens to the fleet."""
    agenda: Agenda = await make_agenda(process_every=0.05, fleet_events=True, name="web")
    await agenda.start()
    return agenda


@pytest.fixture
async def worker(make_agenda: Any) -> Agenda:
    agenda: Agenda = await make_agenda(process_every=0.05, name="worker-1")
    return agenda


async def test_a_remote_success_reaches_a_process_that_defines_nothing(
    watcher: Agenda, worker: Agenda
) -> None:
    events = EventLog(watcher, "start", "success", "complete", "fail", "success:greet")
    ran = asyncio.Event()

    async def greet(job: Job) -> None:
        ran.set()

    worker.define("greet", greet)
    await worker.start()
    job = await watcher.now("greet", {"to": "ada"})
    await events.wait("complete", timeout=30)
    assert ran.is_set()
    assert events.names() == ["start", "success", "success:greet", "complete"]
    for (seen,) in events.args("success") + events.args("start") + events.args("complete"):
        assert seen.remote is True
        assert seen.worker == "worker-1"
        assert seen.id == job.id
        assert seen.data == {"to": "ada"}
    assert watcher.definitions == {}


async def test_remote_runs_are_neither_logged_nor_counted_as_this_processs_own(make_agenda: Any) -> None:
    # Both write job logs: the worker logs its run once; the listening process must not log it again.
    watcher: Agenda = await make_agenda(fleet_events=True, logging=True, name="web")
    worker: Agenda = await make_agenda(logging=True, name="worker-1")
    await watcher.start()
    events = EventLog(watcher, "complete")

    async def greet(job: Job) -> None:
        return None

    worker.define("greet", greet)
    await worker.start()
    job = await watcher.now("greet")
    await events.wait("complete", timeout=30)
    await watcher.stop()  # flushes the watcher's log writer, so anything it would write is written
    await worker.stop()
    result = await worker.get_logs(job_id=job.id, sort="asc")
    assert [entry.event for entry in result.entries] == ["start", "success", "complete"]
    assert {entry.agenda_name for entry in result.entries} == {"worker-1"}


async def test_each_run_of_a_job_is_heard_once(watcher: Agenda, worker: Agenda) -> None:
    """A second run writes the first run's end fields again: they must not count as a new end."""
    events = EventLog(watcher, "start:twice", "success:twice", "complete:twice", "complete:after")
    worker.define("twice", _nothing)
    worker.define("after", _nothing)
    await worker.start()
    job = await watcher.now("twice")
    await events.wait("complete:twice", timeout=30)
    fresh = await watcher.get_job(job.id or "")
    assert fresh is not None
    await fresh.schedule("now").save()
    await events.wait("complete:twice", count=2, timeout=30)
    # The stream is in order: once a later job's end is heard, a duplicate would have been too.
    await watcher.now("after")
    await events.wait("complete:after", timeout=30)
    assert events.names() == ["start:twice", "success:twice", "complete:twice"] * 2 + ["complete:after"]


async def test_a_remote_failure_and_its_retry(watcher: Agenda, worker: Agenda) -> None:
    events = EventLog(watcher, "fail", "retry", "complete")

    async def broken(job: Job) -> None:
        raise RuntimeError("disk full")

    worker.define("broken", broken, backoff=backoff.constant(delay=60, max_retries=1))
    await worker.start()
    await watcher.now("broken")
    await events.wait("complete", timeout=30)
    assert events.names() == ["fail", "retry", "complete"]
    ((error, failed),) = events.args("fail")
    assert isinstance(error, RemoteFailure)
    assert str(error) == "disk full"
    assert failed.remote is True
    ((retried, details),) = events.args("retry")
    assert details.attempt == 1
    assert 59 <= details.delay <= 61  # the backoff said 60 s; dates are stored in ms
    assert details["next_run_at"] == retried.next_run_at


async def test_remote_progress(watcher: Agenda, worker: Agenda) -> None:
    events = EventLog(watcher, "progress", "complete")

    async def steps(job: Job) -> None:
        for percent in (25, 50, 75):
            await job.touch(percent)

    worker.define("steps", steps)
    await worker.start()
    await watcher.now("steps")
    await events.wait("complete", timeout=30)
    assert [job.progress for (job,) in events.args("progress")] == [25, 50, 75]


async def test_a_process_does_not_hear_its_own_runs_twice(watcher: Agenda) -> None:
    events = EventLog(watcher, "start", "success", "complete")

    async def local(job: Job) -> None:
        pass

    watcher.define("local", local)
    job = await watcher.now("local")
    await watcher.wait_for(job, timeout=30)
    # An event of another job after it: when it arrives, the stream has passed the local run's.
    worker_done = EventLog(watcher, "complete:marker")
    other = await _start_marker_worker(watcher)
    await worker_done.wait("complete:marker", timeout=30)
    await other.stop()
    assert [seen.remote for (seen,) in events.args("success")] == [False, True]


async def _start_marker_worker(watcher: Agenda) -> Agenda:
    other = Agenda(watcher._store, name="marker-worker", process_every=0.05)
    other.define("marker", _nothing)
    await other.start()
    await watcher.now("marker")
    return other


async def _nothing(job: Job) -> None:
    pass


async def test_a_run_that_removes_its_job_still_reports_its_end(watcher: Agenda, worker: Agenda) -> None:
    events = EventLog(watcher, "success", "complete")
    worker.define("once", _nothing, remove_on_complete=True)
    await worker.start()
    job = await watcher.now("once", {"k": 1})
    await events.wait("complete", timeout=30)
    ((seen,),) = events.args("success")
    assert (seen.id, seen.name, seen.data, seen.remote) == (job.id, "once", {"k": 1}, True)


async def test_runs_of_a_node_agenda_worker_are_heard(watcher: Agenda, jobs_collection: Any) -> None:
    """Node Agenda 6 on MongoDB publishes no state notifications; its document writes are the events."""
    events = EventLog(watcher, "start", "success", "complete")
    job = await watcher.now("node job", {"from": "node"})
    oid = ObjectId(job.id)
    now = datetime.now(UTC)
    # Node's claim, its saveJobState at start, and at the end (no lockToken: Node has none).
    await jobs_collection.update_one({"_id": oid}, {"$set": {"lockedAt": now, "lastModifiedBy": "node-1"}})
    await jobs_collection.update_one({"_id": oid}, {"$set": {"lastRunAt": now, "nextRunAt": None}})
    await jobs_collection.update_one(
        {"_id": oid}, {"$set": {"lastFinishedAt": datetime.now(UTC), "lockedAt": None}}
    )
    await events.wait("complete", timeout=30)
    assert events.names() == ["start", "success", "complete"]
    assert {(j.worker, j.remote) for (j,) in events.args("success")} == {("node-1", True)}
    assert (await watcher.wait_for(job, timeout=5)).id == job.id


async def test_wait_for_returns_the_finished_job(watcher: Agenda, worker: Agenda) -> None:
    async def compute(job: Job) -> None:
        await asyncio.sleep(0.2)

    worker.define("compute", compute)
    await worker.start()
    job = await watcher.now("compute", {"n": 1})
    finished = await watcher.wait_for(job, timeout=30)
    assert finished.id == job.id
    assert finished.last_finished_at is not None
    assert finished.fail_reason is None


async def test_wait_for_raises_the_failure(watcher: Agenda, worker: Agenda) -> None:
    async def broken(job: Job) -> None:
        raise ValueError("no such customer")

    worker.define("broken", broken)
    await worker.start()
    job = await watcher.now("broken")
    with pytest.raises(JobFailed, match="no such customer") as caught:
        await watcher.wait_for(job, timeout=30)
    assert caught.value.reason == "no such customer"
    assert caught.value.job.id == job.id


async def test_wait_for_a_job_that_already_finished(watcher: Agenda, worker: Agenda) -> None:
    worker.define("quick", _nothing)
    await worker.start()
    job = await watcher.now("quick")
    await watcher.wait_for(job, timeout=30)
    await worker.stop()
    again = await watcher.wait_for(job.id or "", timeout=5)  # nothing runs any more: read, not waited
    assert again.last_finished_at is not None


async def test_wait_for_without_fleet_events_reads_the_document(make_agenda: Any, worker: Agenda) -> None:
    quiet: Agenda = await make_agenda(process_every=0.1)
    worker.define("quick", _nothing)
    await worker.start()
    job = await quiet.now("quick")
    finished = await quiet.wait_for(job, timeout=30)
    assert finished.last_finished_at is not None


async def test_wait_for_times_out_and_checks_its_input(watcher: Agenda) -> None:
    job = await watcher.now("nobody-runs-this")
    with pytest.raises(TimeoutError):
        await watcher.wait_for(job, timeout=0.3)
    with pytest.raises(JobNotFound):
        await watcher.wait_for("0123456789abcdef01234567", timeout=5)
    with pytest.raises(ValueError, match="job"):
        await watcher.wait_for({"$ne": None}, timeout=5)  # type: ignore[arg-type]


async def test_wait_for_a_job_removed_while_waiting(watcher: Agenda) -> None:
    job = await watcher.now("nobody-runs-this")
    waiting = asyncio.ensure_future(watcher.wait_for(job, timeout=30))
    assert await job.remove() == 1
    # Whether its first read or a later one misses the document, it says so instead of waiting on.
    with pytest.raises(JobNotFound):
        await waiting


async def test_progress_is_heard_when_the_looked_up_document_is_already_newer(make_agenda: Any) -> None:
    # A change stream's fullDocument is looked up when the change is read: under load the start's
    # lookup already shows progress 25 written after it. The change that wrote 25 is still progress.
    from agendapy.fleet_events import FleetEvents

    agenda: Agenda = await make_agenda(name="web")
    fleet = FleetEvents(agenda.worker_context(), lambda: [])
    events = EventLog(agenda, "start", "progress")
    job_id = ObjectId()
    started = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    newer = {"_id": job_id, "name": "steps", "lockedAt": started, "lastRunAt": started, "progress": 25}
    await fleet._on_change(
        {
            "operationType": "update",
            "documentKey": {"_id": job_id},
            "updateDescription": {"updatedFields": {"lockedAt": started, "lastRunAt": started}},
            "fullDocument": newer,
        }
    )
    for percent in (25, 50):
        await fleet._on_change(
            {
                "operationType": "update",
                "documentKey": {"_id": job_id},
                "updateDescription": {"updatedFields": {"progress": percent}},
                "fullDocument": {**newer, "progress": 50},
            }
        )
    assert events.names() == ["start", "progress", "progress"]
    assert [job.progress for (job,) in events.args("progress")] == [25, 50]


async def test_a_run_whose_start_its_claim_wrote_is_not_heard_as_another_processs(
    make_agenda: Any, db_url: str
) -> None:
    # The claim writes the start of a one-off job due now; its read-back is slowed here, so the
    # stream reports that start before the claim has returned to the worker that made it.
    from agendapy.store.mongo import MongoJobStore

    class SlowReadBack(MongoJobStore):
        async def _lock(self, writes: Any) -> int:
            locked = await super()._lock(writes)
            await asyncio.sleep(0.5)
            return locked

    store = SlowReadBack(db_url)
    watcher: Agenda = await make_agenda(db=store, process_every=0.05, fleet_events=True, name="web")
    events = EventLog(watcher, "start", "success")
    watcher.define("local", _nothing)
    await watcher.start()
    producer: Agenda = await make_agenda(process_every=0.05)
    job = await producer.now("local")  # saved by a process that does not run it: claimed, not on the fly
    await watcher.wait_for(job, timeout=30)
    worker_done = EventLog(watcher, "complete:marker")
    other = await _start_marker_worker(watcher)
    await worker_done.wait("complete:marker", timeout=30)
    await other.stop()
    starts = [(seen.name, seen.remote) for (seen,) in events.args("start")]
    assert starts == [("local", False), ("marker", True)], "the claim's start was heard as a remote run"

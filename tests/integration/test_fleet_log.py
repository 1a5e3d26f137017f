"""Fleet events without change streams: runs published to a capped collection and read by tailing it.

``change_streams=False`` forces the path a server without change streams takes (a standalone mongod).
Two Agendas in one test process stand for two processes; tests/acceptance/test_fleet_processes.py
does the same with a real worker process.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from agendapy import Agenda, Job, JobFailed, RemoteFailure, backoff
from agendapy.fleet_log import EVENTS_MAX, EVENTS_SIZE
from agendapy.store.base import WakeUpsUnavailable
from agendapy.store.mongo import MongoJobStore

from support import EventLog, wait_until

EVENTS = "agendaJobs.events"


@pytest.fixture(autouse=True, params=["forced", "detected"])
def no_change_streams(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Either every Agenda is told ``change_streams=False`` (and must not open a stream), or the server
    answers as one without change streams does, and the Agendas find out."""
    if request.param == "forced":

        async def forbidden(self: MongoJobStore) -> Any:
            raise RuntimeError("change_streams=False, yet a change stream was opened")

        monkeypatch.setattr(MongoJobStore, "run_changes", forbidden)
    else:

        async def unavailable(self: MongoJobStore) -> Any:
            raise WakeUpsUnavailable("the server has no change streams: (test)")

        def no_wake_ups(self: MongoJobStore) -> Any:
            raise WakeUpsUnavailable("the server has no change streams: (test)")

        monkeypatch.setattr(MongoJobStore, "run_changes", unavailable)
        monkeypatch.setattr(MongoJobStore, "due_changes", no_wake_ups)
    return str(request.param)


@pytest.fixture
def make(make_agenda: Any, no_change_streams: str) -> Any:
    """``make_agenda`` with fleet events on and, in the forced variant, ``change_streams=False``."""

    async def build(**options: Any) -> Agenda:
        options.setdefault("fleet_events", True)
        if no_change_streams == "forced":
            options["change_streams"] = False
        agenda: Agenda = await make_agenda(**options)
        return agenda

    return build


@pytest.fixture
async def watcher(make: Any) -> Agenda:
    """A web process on a server without change streams: defines nothing, listens to the fleet."""
    agenda: Agenda = await make(name="web")
    await agenda.start()
    return agenda


@pytest.fixture
async def worker(make: Any) -> Agenda:
    agenda: Agenda = await make(name="worker-1")
    return agenda


async def _nothing(job: Job) -> None:
    pass


async def test_a_remote_success_is_heard_through_the_events_collection(
    watcher: Agenda, worker: Agenda, client: AsyncMongoClient[Any], db_name: str
) -> None:
    events = EventLog(watcher, "start", "success", "complete", "fail", "success:greet")
    worker.define("greet", _nothing)
    await worker.start()
    job = await watcher.now("greet", {"to": "ada"})
    await events.wait("complete", timeout=30)
    assert events.names() == ["start", "success", "success:greet", "complete"]
    for (seen,) in events.args("start") + events.args("success") + events.args("complete"):
        assert (seen.id, seen.remote, seen.worker, seen.data) == (job.id, True, "worker-1", {"to": "ada"})
        assert seen.agenda is watcher
    (started,) = events.args("start")[0]
    assert started.last_run_at is not None
    # They came through the collection: the worker's entries are there, in order.
    entries = [e async for e in client[db_name][EVENTS].find({"worker": "worker-1"})]
    # One at the start of the run, one at its end, with the outcome.
    assert [(e["event"], e.get("outcome")) for e in entries] == [("start", None), ("end", "success")]


async def test_a_remote_failure_and_its_retry(watcher: Agenda, worker: Agenda) -> None:
    events = EventLog(watcher, "fail", "retry", "complete", "fail:broken")

    async def broken(job: Job) -> None:
        raise RuntimeError("disk full")

    worker.define("broken", broken, backoff=backoff.constant(delay=60, max_retries=1))
    await worker.start()
    await watcher.now("broken")
    await events.wait("complete", timeout=30)
    assert events.names() == ["fail", "fail:broken", "retry", "complete"]
    ((error, failed),) = events.args("fail")
    assert isinstance(error, RemoteFailure)
    assert str(error) == "disk full"
    assert (failed.remote, failed.fail_reason) == (True, "disk full")
    ((retried, details),) = events.args("retry")
    assert retried.remote is True
    assert details.attempt == 1
    assert 59 <= details.delay <= 61
    assert details["next_run_at"] == retried.next_run_at
    assert str(details.error) == "disk full"


async def test_wait_for_returns_and_raises_on_the_remote_event(make: Any, worker: Agenda) -> None:
    # Reading the document every 5 s would answer too; the remote event answers first, with the
    # job it carries (a remote one).
    watcher: Agenda = await make(name="web", process_every=5)
    await watcher.start()

    async def maybe(job: Job) -> None:
        if job.data["fail"]:
            raise ValueError("no such customer")

    worker.define("maybe", maybe)
    await worker.start()
    good = await watcher.now("maybe", {"fail": False})
    finished = await watcher.wait_for(good, timeout=30)
    assert (finished.id, finished.fail_reason, finished.remote) == (good.id, None, True)
    bad = await watcher.now("maybe", {"fail": True})
    with pytest.raises(JobFailed) as caught:
        await watcher.wait_for(bad, timeout=30)
    assert caught.value.reason == "no such customer"
    assert caught.value.job.remote is True


async def test_a_process_does_not_hear_its_own_runs_twice(watcher: Agenda, worker: Agenda) -> None:
    events = EventLog(watcher, "start", "success", "complete", "complete:marker")
    watcher.define("local", _nothing)
    job = await watcher.now("local")
    await watcher.wait_for(job, timeout=30)
    # Entries are read in the order they were written: once another process's later run is heard,
    # the local run's entries have been read (and skipped).
    worker.define("marker", _nothing)
    await worker.start()
    await watcher.now("marker")
    await events.wait("complete:marker", timeout=30)
    assert [(seen.name, seen.remote) for (seen,) in events.args("success")] == [
        ("local", False),
        ("marker", True),
    ]
    assert events.count("start") == 2
    assert events.count("complete") == 2


async def test_remote_events_are_not_published_again(
    watcher: Agenda, worker: Agenda, client: AsyncMongoClient[Any], db_name: str
) -> None:
    events = EventLog(watcher, "complete")
    worker.define("greet", _nothing)
    await worker.start()
    await watcher.now("greet")
    await events.wait("complete", timeout=30)
    watcher_entries = client[db_name][EVENTS].find({"worker": "web"})
    assert [e async for e in watcher_entries] == []


async def test_entries_written_before_a_listener_starts_are_not_replayed(make: Any, worker: Agenda) -> None:
    first: Agenda = await make(name="first")
    await first.start()
    heard_first = EventLog(first, "complete")
    worker.define("early", _nothing)
    worker.define("late", _nothing)
    await worker.start()
    await first.now("early")
    await heard_first.wait("complete", timeout=30)  # the entries of "early" are in the collection
    late_listener: Agenda = await make(name="late")
    await late_listener.start()
    heard = EventLog(late_listener, "complete")
    await late_listener.now("late")
    await heard.wait("complete", timeout=30)
    assert [job.name for (job,) in heard.args("complete")] == ["late"]


async def test_the_events_collection_is_capped(
    watcher: Agenda, client: AsyncMongoClient[Any], db_name: str
) -> None:
    options = await client[db_name][EVENTS].options()
    assert options["capped"] is True
    assert options["size"] == EVENTS_SIZE
    assert options["max"] == EVENTS_MAX


async def test_an_events_collection_that_is_not_capped_turns_fleet_events_off(
    make: Any, client: AsyncMongoClient[Any], db_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    await client[db_name].create_collection(EVENTS)
    agenda: Agenda = await make()
    with caplog.at_level(logging.WARNING, logger="agendapy"):
        await agenda.start()
    assert "fleet events are off" in caplog.text
    assert "is not a capped collection" in caplog.text
    # The worker still runs jobs and wait_for still answers (it reads the document).
    agenda.define("quick", _nothing)
    job = await agenda.now("quick")
    assert (await agenda.wait_for(job, timeout=30)).last_finished_at is not None


async def test_a_worker_publishes_in_order_across_many_runs(watcher: Agenda, worker: Agenda) -> None:
    events = EventLog(watcher, "start", "complete")
    worker.define("many", _nothing, concurrency=5)
    await worker.start()
    await watcher.now_many("many", [{"n": n} for n in range(30)])
    await events.wait("complete", count=30, timeout=60)
    order: dict[str, list[str]] = {}
    for name, (job,) in events.calls:
        order.setdefault(job.id, []).append(name)
    assert len(order) == 30
    assert all(seen == ["start", "complete"] for seen in order.values())


async def test_entries_a_reader_cannot_use_are_skipped(
    watcher: Agenda, worker: Agenda, client: AsyncMongoClient[Any], db_name: str
) -> None:
    """Whatever else writes to the collection (an older or newer version, a person) stops nothing."""
    events = EventLog(watcher, "start", "success", "fail", "retry", "complete")
    await client[db_name][EVENTS].insert_many(
        [
            {
                "event": "end",
                "outcome": "success",
                "origin": "o",
                "seq": 1,
                "job": {"name": 5, "nextRunAt": 1},
            },
            {"event": "end", "outcome": "success", "origin": "o", "seq": 2, "job": "not a document"},
            {"event": "start", "origin": "o", "seq": 3, "job": {"name": "no id"}},
            {"event": "explode", "origin": "o", "seq": 4, "job": {"_id": ObjectId(), "name": "x"}},
            {
                "event": "end",
                "outcome": "success",
                "origin": 7,
                "seq": 5,
                "job": {"_id": ObjectId(), "name": "x"},
            },
            {
                "event": "end",
                "outcome": "success",
                "origin": "o",
                "seq": "6",
                "job": {"_id": ObjectId(), "name": "x"},
            },
            {"event": "end"},
            {},
        ]
    )
    worker.define("greet", _nothing)
    await worker.start()
    job = await watcher.now("greet")
    await events.wait("complete", timeout=30)
    assert [(name, args[-1].id) for name, args in events.calls] == [
        ("start", job.id),
        ("success", job.id),
        ("complete", job.id),
    ]


async def test_an_entry_older_than_one_already_emitted_is_dropped(
    watcher: Agenda, worker: Agenda, client: AsyncMongoClient[Any], db_name: str
) -> None:
    """In order per job: an entry that arrives after a later one of the same worker is not emitted."""
    events = EventLog(watcher, "success")
    job = {"_id": ObjectId(), "name": "ordered", "data": {}}
    await client[db_name][EVENTS].insert_many(
        [
            {
                "event": "end",
                "outcome": "success",
                "origin": "w",
                "seq": n,
                "worker": "w",
                "job": {**job, "data": {"n": n}},
            }
            for n in (2, 1, 3)
        ]
    )
    await events.wait("success", count=2, timeout=30)
    worker.define("after", _nothing)
    await worker.start()
    done = EventLog(watcher, "complete:after")
    await watcher.now("after")
    await done.wait("complete:after", timeout=30)
    assert [seen.data for (seen,) in events.args("success") if seen.name == "ordered"] == [{"n": 2}, {"n": 3}]


async def test_the_reader_recovers_when_its_cursor_dies(
    watcher: Agenda, worker: Agenda, client: AsyncMongoClient[Any], db_name: str
) -> None:
    events = EventLog(watcher, "complete")
    collection = client[db_name][EVENTS]
    await collection.drop()  # kills the tailing cursor; the reader makes the collection again

    async def capped_again() -> bool:
        return bool((await collection.options()).get("capped"))

    await wait_until(capped_again, timeout=30)
    # The reader has written its new marker before it reads on.
    await wait_until(lambda: collection.count_documents({"event": "marker"}), timeout=30)
    worker.define("greet", _nothing)
    await worker.start()
    job = await watcher.now("greet")
    await events.wait("complete", timeout=30)
    assert [(seen.id, seen.remote) for (seen,) in events.args("complete")] == [(job.id, True)]


async def test_an_end_without_an_outcome_is_only_a_complete(
    watcher: Agenda, client: AsyncMongoClient[Any], db_name: str
) -> None:
    """An interrupted run (its worker stopped, or cancelled it) completes with no success or fail."""
    events = EventLog(watcher, "success", "fail", "complete")
    job = {"_id": ObjectId(), "name": "cut short", "data": {}}
    await client[db_name][EVENTS].insert_one(
        {"event": "end", "outcome": None, "origin": "w", "seq": 1, "worker": "w", "job": job}
    )
    await events.wait("complete", timeout=30)
    assert events.names() == ["complete"]
    ((seen,),) = events.args("complete")
    assert (seen.name, seen.remote, seen.worker) == ("cut short", True, "w")

"""The worker: processing, events, locking, concurrency, priority, lock limits, stats, drain, stop,
recurring jobs, errors, restarts and several workers on one collection.

agendapy's own tests (the heartbeat that replaces lock expiry, fencing, stop, several workers) and the v5
processor tests 211-223. Agenda 6's agenda and jobprocessor suites are ported test for test in
tests/agenda/.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agendapy import Agenda, DrainResult, Job, NotRunning

from support import EventLog, wait_until


def utcnow() -> datetime:
    return datetime.now(UTC)


async def hold(job: Job, release: asyncio.Event) -> None:
    """Block a handler until the test releases it or the worker asks it to stop (so teardown is quick)."""
    waiters = {asyncio.ensure_future(release.wait()), asyncio.ensure_future(job.stopping())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class Gauge:
    """Counts handlers running at once, overall and per name, and remembers the peaks."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.by_name: Counter[str] = Counter()
        self.peak_by_name: Counter[str] = Counter()
        self.order: list[Any] = []

    def enter(self, job: Job) -> None:
        self.now += 1
        self.by_name[job.name] += 1
        self.peak = max(self.peak, self.now)
        self.peak_by_name[job.name] = max(self.peak_by_name[job.name], self.by_name[job.name])
        self.order.append(job.data)

    def leave(self, job: Job) -> None:
        self.now -= 1
        self.by_name[job.name] -= 1


# -- processing and events -------------------------------------------------------------------------


async def test_now_job_is_processed_with_name_and_data(agenda: Agenda, jobs_collection: Any) -> None:
    seen: list[tuple[str, Any, bool]] = []

    async def handler(job: Job) -> None:
        seen.append((job.name, job.data, isinstance(job, Job)))

    agenda.define("process me", handler)
    log = EventLog(agenda, "complete:process me", "success:process me")
    await agenda.now("process me", {"hello": "world"})
    await agenda.start()
    await log.wait("complete:process me")
    assert seen == [("process me", {"hello": "world"}, True)]
    assert log.count("success:process me") == 1
    doc = await jobs_collection.find_one({"name": "process me"})
    assert doc["lockedAt"] is None
    assert doc["lastRunAt"] is not None
    assert doc["lastFinishedAt"] >= doc["lastRunAt"]
    assert doc["nextRunAt"] is None
    assert not doc.get("failReason")


async def test_sync_handler_runs_in_a_thread(agenda: Agenda) -> None:
    threads: list[threading.Thread] = []
    agenda.define("sync", lambda job: threads.append(threading.current_thread()))
    log = EventLog(agenda, "success:sync")
    await agenda.now("sync")
    await agenda.start()
    await log.wait("success:sync")
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()


async def test_fail_event_carries_the_error_and_job(agenda: Agenda, jobs_collection: Any) -> None:
    async def handler(job: Job) -> None:
        raise ValueError("broken on purpose")

    agenda.define("broken", handler)
    log = EventLog(agenda, "fail:broken", "fail", "success", "complete")
    await agenda.now("broken")
    await agenda.start()
    await log.wait("complete")
    ((error, job),) = log.args("fail:broken")
    assert isinstance(error, ValueError)
    assert str(error) == "broken on purpose"
    assert isinstance(job, Job)
    assert job.name == "broken"
    assert log.count("fail") == 1
    assert log.count("success") == 0
    doc = await jobs_collection.find_one({"name": "broken"})
    assert doc["failReason"] == "broken on purpose"
    assert doc["failCount"] == 1
    assert doc["failedAt"] is not None
    assert doc["lockedAt"] is None


async def test_event_order_and_named_variants(agenda: Agenda) -> None:
    agenda.define("ok", lambda job: None)
    agenda.define("ko", lambda job: 1 / 0)
    names = ("start", "success", "fail", "complete")
    log = EventLog(agenda, *names, *(f"{e}:ok" for e in names), *(f"{e}:ko" for e in names))
    await agenda.now("ok")
    await agenda.start()
    await log.wait("complete:ok")
    await agenda.now("ko")
    await log.wait("complete:ko")
    assert [n for n in log.names() if n.endswith(":ok")] == ["start:ok", "success:ok", "complete:ok"]
    assert [n for n in log.names() if n.endswith(":ko")] == ["start:ko", "fail:ko", "complete:ko"]
    generic = [n for n in log.names() if ":" not in n]
    assert generic == ["start", "success", "complete", "start", "fail", "complete"]
    ((started,),) = log.args("start:ok")
    assert isinstance(started, Job)
    assert started.name == "ok"


async def test_async_listeners_are_awaited_before_the_handler(agenda: Agenda) -> None:
    order: list[str] = []

    async def on_start(job: Job) -> None:
        await asyncio.sleep(0.1)
        order.append("listener")

    async def handler(job: Job) -> None:
        order.append("handler")

    agenda.define("awaited", handler)
    agenda.on("start:awaited", on_start)
    log = EventLog(agenda, "complete:awaited")
    await agenda.now("awaited")
    await agenda.start()
    await log.wait("complete:awaited")
    assert order == ["listener", "handler"]


async def test_on_works_as_a_decorator(agenda: Agenda) -> None:
    seen: list[str] = []
    agenda.define("decorated", lambda job: None)

    @agenda.on("success:decorated")
    def listener(job: Job) -> None:
        seen.append(job.name)

    log = EventLog(agenda, "complete:decorated")
    await agenda.now("decorated")
    await agenda.start()
    await log.wait("complete:decorated")
    assert seen == ["decorated"]


async def test_handler_timeout_fails_the_run(agenda: Agenda, jobs_collection: Any) -> None:
    async def handler(job: Job) -> None:
        await asyncio.sleep(30)

    agenda.define("too slow", handler, timeout=0.2)
    log = EventLog(agenda, "fail:too slow", "complete:too slow")
    await agenda.now("too slow")
    await agenda.start()
    await log.wait("complete:too slow")
    ((error, _),) = log.args("fail:too slow")
    assert isinstance(error, TimeoutError)
    doc = await jobs_collection.find_one({"name": "too slow"})
    assert "time" in doc["failReason"].lower()
    assert doc["lockedAt"] is None


async def test_undefined_names_are_never_locked(agenda: Agenda, jobs_collection: Any) -> None:
    agenda.define("mine", lambda job: None)
    log = EventLog(agenda, "complete:mine")
    await agenda.now("not mine")
    await agenda.now("mine")
    await agenda.start()
    await log.wait("complete:mine")
    await asyncio.sleep(0.2)
    doc = await jobs_collection.find_one({"name": "not mine"})
    assert doc.get("lockedAt") is None
    assert doc.get("lastRunAt") is None


async def test_last_modified_by_is_the_worker_name(make_agenda: Any, jobs_collection: Any) -> None:
    agenda = await make_agenda(name="worker-a")
    agenda.define("named", lambda job: None)
    log = EventLog(agenda, "complete:named")
    await agenda.now("named")
    await agenda.start()
    await log.wait("complete:named")
    doc = await jobs_collection.find_one({"name": "named"})
    assert doc["lastModifiedBy"] == "worker-a"


# -- locking ---------------------------------------------------------------------------------------


async def test_stop_lets_a_cooperative_handler_finish(agenda: Agenda, jobs_collection: Any) -> None:
    started = asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await job.stopping()
        assert job.stop_requested

    agenda.define("cooperative", handler)
    log = EventLog(agenda, "success:cooperative", "complete:cooperative")
    await agenda.now("cooperative")
    await agenda.start()
    await asyncio.wait_for(started.wait(), 15)
    await asyncio.wait_for(agenda.stop(grace=5), 10)
    assert log.count("success:cooperative") == 1
    assert log.count("complete:cooperative") == 1
    doc = await jobs_collection.find_one({"name": "cooperative"})
    assert doc["lockedAt"] is None
    assert doc["lastFinishedAt"] is not None


async def test_stop_after_grace_cancels_and_unlocks_for_another_worker(
    make_agenda: Any, jobs_collection: Any
) -> None:
    first = await make_agenda()
    started = asyncio.Event()
    runs: list[str] = []

    async def stubborn(job: Job) -> None:
        runs.append("first")
        started.set()
        await asyncio.sleep(30)

    first.define("stubborn", stubborn)
    job = await first.now("stubborn")
    await first.start()
    await asyncio.wait_for(started.wait(), 15)
    await asyncio.wait_for(first.stop(grace=0.2), 10)
    doc = await jobs_collection.find_one({"name": "stubborn"})
    assert doc["lockedAt"] is None
    assert doc["nextRunAt"] is not None
    assert doc["nextRunAt"] <= utcnow()

    second = await make_agenda()
    second.define("stubborn", lambda job: runs.append("second"))
    log = EventLog(second, "success:stubborn")
    await second.start()
    await log.wait("success:stubborn")
    assert runs == ["first", "second"]
    assert job.id == str(doc["_id"])


async def test_stop_unlocks_locked_jobs_that_are_not_running(agenda: Agenda, jobs_collection: Any) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await hold(job, release)

    agenda.define("one at a time", handler, concurrency=1)
    for i in range(3):
        await agenda.now("one at a time", {"i": i})
    await agenda.start()
    await asyncio.wait_for(started.wait(), 15)
    await wait_until(lambda: agenda_locked(agenda, 2))  # one running, one locked ahead
    await agenda.stop(grace=5)  # the running one stops cooperatively (hold), the waiting one is unlocked
    assert await jobs_collection.count_documents({"lockedAt": {"$ne": None}}) == 0
    assert release is not None


async def test_stop_and_drain_on_a_never_started_agenda(agenda: Agenda) -> None:
    await agenda.stop()
    assert await agenda.drain() == DrainResult(completed=0, running=0, timed_out=False)


async def test_job_removed_while_running_is_not_recreated(agenda: Agenda, jobs_collection: Any) -> None:
    async def handler(job: Job) -> None:
        await job.remove()

    agenda.define("self removing", handler)
    log = EventLog(agenda, "complete:self removing")
    await agenda.now("self removing")
    await agenda.start()
    await log.wait("complete:self removing")
    await asyncio.sleep(0.1)
    assert await jobs_collection.count_documents({}) == 0


async def test_job_cancelled_while_locked_ahead_is_not_run(make_agenda: Any, jobs_collection: Any) -> None:
    # Locked ahead (the poll looks 5 s ahead) and due in 3 s: time for a loaded machine to lock and
    # cancel it before it is due (0.4 s was not always).
    agenda = await make_agenda(process_every=5)
    ran: list[int] = []
    agenda.define("cancelled", lambda job: ran.append(1))
    await agenda.start()
    due = utcnow() + timedelta(seconds=3)
    job = await agenda.schedule(due, "cancelled")
    await wait_until(lambda: agenda_locked(agenda, 1))
    assert await agenda.cancel(id=job.id) == 1
    await asyncio.sleep((due - utcnow()).total_seconds() + 0.5)  # past its time: it did not run
    assert ran == []
    assert await jobs_collection.count_documents({}) == 0


async def agenda_locked(agenda: Agenda, count: int) -> bool:
    return (await agenda.running_stats()).locked_jobs >= count


async def test_is_running_reads_the_database(agenda: Agenda) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await hold(job, release)

    agenda.define("observed", handler)
    log = EventLog(agenda, "complete:observed")
    job = await agenda.now("observed")
    assert await job.is_running() is False
    await agenda.start()
    await asyncio.wait_for(started.wait(), 15)
    client_side = (await agenda.query_jobs(id=job.id)).jobs[0]
    assert await job.is_running() is True
    assert await client_side.is_running() is True
    release.set()
    await log.wait("complete:observed")
    assert await job.is_running() is False


async def test_expired_lock_of_a_dead_worker_is_recovered(make_agenda: Any, jobs_collection: Any) -> None:
    agenda = await make_agenda()
    agenda.define("orphaned", lambda job: None, lock_lifetime=1)
    log = EventLog(agenda, "complete:orphaned", "success:orphaned")
    job = await agenda.now("orphaned")
    # the worker that locked it died a minute ago
    await jobs_collection.update_one(
        {"name": "orphaned"}, {"$set": {"lockedAt": utcnow() - timedelta(minutes=1), "nextRunAt": None}}
    )
    await agenda.start()
    await log.wait("complete:orphaned")
    assert log.count("success:orphaned") == 1
    doc = await jobs_collection.find_one({"name": "orphaned"})
    assert str(doc["_id"]) == job.id
    assert doc["lockedAt"] is None


async def test_fresh_lock_of_another_worker_is_respected(make_agenda: Any, jobs_collection: Any) -> None:
    agenda = await make_agenda()
    ran: list[int] = []
    agenda.define("taken", lambda job: ran.append(1), lock_lifetime=60)
    agenda.define("free", lambda job: None, lock_lifetime=60)
    log = EventLog(agenda, "complete:free")
    await agenda.now("taken")
    await jobs_collection.update_one({"name": "taken"}, {"$set": {"lockedAt": utcnow()}})
    await agenda.now("free")
    await agenda.start()
    # A free job beside it runs, so the worker does claim: without it, a worker that never polled passed.
    await log.wait("complete:free", timeout=30)
    await asyncio.sleep(0.5)  # several more polls
    assert ran == []


# -- heartbeat instead of lock expiry (intended deviation from Agenda 93/215) ----------------------


async def test_long_job_keeps_its_lock_without_touch(make_agenda: Any) -> None:
    workers = [await make_agenda(), await make_agenda()]
    runs: list[int] = []
    errors: list[Any] = []

    async def long_job(job: Job) -> None:
        runs.append(1)
        await asyncio.sleep(1.5)

    for worker in workers:
        worker.define("long", long_job, lock_lifetime=0.5)
        worker.on("error", errors.append)
    log0, log1 = (EventLog(w, "success:long") for w in workers)
    await workers[0].now("long")
    for worker in workers:
        await worker.start()
    await wait_until(lambda: log0.count("success:long") + log1.count("success:long") >= 1)
    await asyncio.sleep(0.7)  # longer than the lock lifetime: nobody picks it up again
    assert runs == [1]
    assert errors == []


async def test_short_jobs_with_short_locks_run_once_each(make_agenda: Any) -> None:
    workers = [await make_agenda(), await make_agenda()]
    runs: Counter[int] = Counter()

    async def handler(job: Job) -> None:
        runs[job.data["i"]] += 1
        await asyncio.sleep(0.15)

    logs = []
    for worker in workers:
        worker.define("brief", handler, lock_lifetime=0.3)
        logs.append(EventLog(worker, "complete:brief"))
    for i in range(3):
        await workers[0].now("brief", {"i": i})
    for worker in workers:
        await worker.start()
    await wait_until(lambda: sum(log.count("complete:brief") for log in logs) >= 3)
    await asyncio.sleep(0.5)
    assert runs == Counter({0: 1, 1: 1, 2: 1})


async def test_two_workers_run_each_job_exactly_once(make_agenda: Any) -> None:
    workers = [await make_agenda(name="w1"), await make_agenda(name="w2")]
    runs: Counter[int] = Counter()

    async def handler(job: Job) -> None:
        runs[job.data["i"]] += 1
        await asyncio.sleep(0.01)

    logs = []
    for worker in workers:
        worker.define("shared", handler)
        logs.append(EventLog(worker, "complete:shared"))
    for i in range(20):
        await workers[0].now("shared", {"i": i})
    for worker in workers:
        await worker.start()
    await wait_until(lambda: sum(log.count("complete:shared") for log in logs) >= 20)
    await asyncio.sleep(0.3)
    assert runs == Counter(dict.fromkeys(range(20), 1))


async def test_workers_that_save_jobs_too_run_each_job_exactly_once(make_agenda: Any) -> None:
    # Saves by a started worker are locked on the fly when it has a free slot, the rest are claimed:
    # by this worker's look-ahead or by the other one. Either way each job runs once.
    workers = [await make_agenda(name="w1"), await make_agenda(name="w2")]
    producer = await make_agenda(name="producer")
    runs: Counter[int] = Counter()
    ran_by: Counter[str] = Counter()

    async def handler(job: Job) -> None:
        runs[job.data["i"]] += 1
        ran_by[job.agenda.name if job.agenda else "?"] += 1
        await asyncio.sleep(0.01)

    for worker in workers:
        worker.define("shared", handler, concurrency=2)
        await worker.start()

    async def produce(agenda: Agenda, first: int) -> None:
        for i in range(first, 90, 3):
            await agenda.now("shared", {"i": i})

    await asyncio.gather(produce(workers[0], 0), produce(workers[1], 1), produce(producer, 2))
    await wait_until(lambda: sum(runs.values()) >= 90, timeout=60)
    await asyncio.sleep(0.3)  # a duplicate run would show up here
    assert runs == Counter(dict.fromkeys(range(90), 1))
    assert ran_by["w1"] and ran_by["w2"], ran_by


# -- concurrency and priority ----------------------------------------------------------------------


async def test_max_concurrency_limits_simultaneous_runs(make_agenda: Any) -> None:
    agenda = await make_agenda(max_concurrency=2)
    gauge = Gauge()

    async def handler(job: Job) -> None:
        gauge.enter(job)
        await asyncio.sleep(0.15)
        gauge.leave(job)

    agenda.define("limited", handler)
    log = EventLog(agenda, "complete:limited")
    for i in range(5):
        await agenda.now("limited", {"i": i})
    await agenda.start()
    await log.wait("complete:limited", 5)
    assert gauge.peak == 2


async def test_blocked_name_does_not_block_another(agenda: Agenda) -> None:
    release = asyncio.Event()

    async def blocker(job: Job) -> None:
        await hold(job, release)

    agenda.define("blocked", blocker, concurrency=1)
    agenda.define("free", lambda job: None)
    log = EventLog(agenda, "complete:free", "start:blocked")
    await agenda.now("blocked")
    await agenda.now("blocked")
    await agenda.start()
    await log.wait("start:blocked")
    await agenda.now("free")
    await log.wait("complete:free")
    assert log.count("start:blocked") == 1
    release.set()


async def test_higher_priority_runs_first(make_agenda: Any) -> None:
    agenda = await make_agenda(max_concurrency=1)
    order: list[int] = []
    agenda.define("prioritised", lambda job: order.append(job.priority))
    log = EventLog(agenda, "complete:prioritised")
    when = utcnow() - timedelta(seconds=1)
    for priority in (-10, 10, 0):
        await agenda.create("prioritised").schedule(when).set_priority(priority).save()
    await agenda.start()
    await log.wait("complete:prioritised", 3)
    assert order == [10, 0, -10]


async def test_order_is_next_run_then_priority(agenda: Agenda) -> None:
    order: list[str] = []
    agenda.define("ordered", lambda job: order.append(job.data), concurrency=1)
    log = EventLog(agenda, "complete:ordered")
    t = utcnow() - timedelta(seconds=1)
    await agenda.create("ordered", "high@t").schedule(t).set_priority("high").save()
    await (
        agenda.create("ordered", "low@t+0.1").schedule(t + timedelta(seconds=0.1)).set_priority("low").save()
    )
    await (
        agenda.create("ordered", "high@t+0.1")
        .schedule(t + timedelta(seconds=0.1))
        .set_priority("high")
        .save()
    )
    await agenda.start()
    await log.wait("complete:ordered", 3)
    assert order == ["high@t", "high@t+0.1", "low@t+0.1"]


async def test_same_name_jobs_run_in_creation_order(agenda: Agenda) -> None:
    order: list[int] = []
    agenda.define("fifo", lambda job: order.append(job.data["i"]), concurrency=1)
    log = EventLog(agenda, "complete:fifo")
    for i in range(5):
        await agenda.now("fifo", {"i": i})
        await asyncio.sleep(0.002)  # distinct creation times (BSON dates are milliseconds)
    await agenda.start()
    await log.wait("complete:fifo", 5)
    assert order == [0, 1, 2, 3, 4]


async def test_concurrency_fills_up_across_names(make_agenda: Any) -> None:
    agenda = await make_agenda(max_concurrency=20, default_concurrency=5)
    gauge = Gauge()
    release = asyncio.Event()

    async def handler(job: Job) -> None:
        gauge.enter(job)
        try:
            await hold(job, release)
        finally:
            gauge.leave(job)

    names = [f"name {n}" for n in range(5)]
    for name in names:
        agenda.define(name, handler)
        for i in range(6):
            await agenda.now(name, {"i": i})
    await agenda.start()
    await wait_until(lambda: gauge.now >= 20)
    await asyncio.sleep(0.2)
    assert gauge.peak == 20
    assert max(gauge.peak_by_name.values()) == 5
    release.set()


async def test_short_jobs_are_not_starved_by_long_ones(make_agenda: Any) -> None:
    agenda = await make_agenda(max_concurrency=4, default_concurrency=1, lock_limit=15, default_lock_limit=6)
    release = asyncio.Event()

    async def long_job(job: Job) -> None:
        await hold(job, release)

    agenda.define("long", long_job)
    agenda.define("short", lambda job: None)
    log = EventLog(agenda, "complete:short", "complete:long")
    for i in range(20):
        await agenda.now("long", {"i": i})
    for i in range(5):
        await agenda.now("short", {"i": i})
    await agenda.start()
    await log.wait("complete:short")
    assert log.count("complete:long") == 0
    release.set()


# -- lock limits and running_stats -----------------------------------------------------------------


async def test_running_stats_fields(make_agenda: Any) -> None:
    agenda = await make_agenda(
        name="agendaTest", max_concurrency=4, default_concurrency=1, lock_limit=15, default_lock_limit=6
    )
    started = asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await job.stopping()

    agenda.define("test", handler)
    await agenda.start()
    stats = await agenda.running_stats()
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", stats.version)
    assert stats.queue_name == "agendaTest"
    assert stats.total_queue_size_db == 0
    assert stats.running_jobs == 0

    await agenda.now("test")
    await asyncio.wait_for(started.wait(), 15)
    stats = await agenda.running_stats()
    status = stats.job_status["test"]
    assert status["locked"] == 1
    assert status["running"] == 1
    config = status["config"]
    assert config["concurrency"] == 1
    assert config["lock_limit"] == 6
    assert config["priority"] == 0
    assert config["lock_lifetime"] in (timedelta(minutes=10), 600, 600.0)
    assert stats.running_jobs == 1
    assert stats.locked_jobs == 1

    full = await agenda.running_stats(full=True)
    assert isinstance(full.running_jobs, list)
    assert len(full.running_jobs) == 1


# -- drain -----------------------------------------------------------------------------------------


async def test_drain_stops_claiming(agenda: Agenda) -> None:
    ran: list[int] = []
    agenda.define("after drain", lambda job: ran.append(1))
    await agenda.start()
    await agenda.drain()
    await agenda.now("after drain")
    await asyncio.sleep(0.4)
    assert ran == []


# -- recurring jobs --------------------------------------------------------------------------------


async def test_every_runs_repeatedly_on_one_document(agenda: Agenda, jobs_collection: Any) -> None:
    agenda.define("often", lambda job: None)
    log = EventLog(agenda, "complete:often")
    await agenda.every(0.2, "often")
    await agenda.start()
    await log.wait("complete:often", 3)
    docs = await jobs_collection.find({"name": "often"}).to_list()
    assert len(docs) == 1
    assert docs[0]["repeatInterval"] == 200
    assert docs[0]["type"] == "single"


async def test_recurring_job_state_after_a_run(agenda: Agenda, jobs_collection: Any) -> None:
    agenda.define("hourly", lambda job: None)
    log = EventLog(agenda, "complete:hourly")
    await agenda.every("1 hour", "hourly")
    await agenda.start()
    await log.wait("complete:hourly")
    doc = await jobs_collection.find_one({"name": "hourly"})
    assert doc["lockedAt"] is None
    assert doc["lastFinishedAt"] is not None
    assert abs(doc["nextRunAt"] - (doc["lastRunAt"] + timedelta(hours=1))) < timedelta(seconds=1)
    await asyncio.sleep(0.3)
    assert log.count("complete:hourly") == 1


# -- restarts --------------------------------------------------------------------------------------


async def test_completed_every_job_is_not_rerun_after_restart(make_agenda: Any) -> None:
    runs: list[str] = []
    first = await make_agenda()
    first.define("boot job", lambda job: runs.append("first"))
    log = EventLog(first, "complete:boot job")
    await first.every("1 hour", "boot job")
    await first.start()
    await log.wait("complete:boot job")
    await first.stop()

    second = await make_agenda()
    second.define("boot job", lambda job: runs.append("second"))
    second.define("control", lambda job: None)
    second_log = EventLog(second, "complete:control")
    await second.every("1 hour", "boot job")  # as every service does at boot
    await second.now("control")
    await second.start()
    # The second worker does claim (a job beside it runs): without that, one that never polled passed.
    await second_log.wait("complete:control", timeout=30)
    await asyncio.sleep(0.5)  # several more polls
    assert runs == ["first"]


async def test_restart_runs_past_due_and_not_future_jobs(make_agenda: Any) -> None:
    writer = await make_agenda()
    await writer.schedule(utcnow() - timedelta(minutes=5), "restart", {"which": "past"})
    await writer.schedule("in 1 hour", "restart", {"which": "future"})
    await writer.now("restart", {"which": "now"})

    runs: list[str] = []
    worker = await make_agenda()
    worker.define("restart", lambda job: runs.append(job.data["which"]))
    log = EventLog(worker, "complete:restart")
    await worker.start()
    await log.wait("complete:restart", 2)
    await asyncio.sleep(0.4)
    assert sorted(runs) == ["now", "past"]


async def test_ten_now_jobs_each_run_once(agenda: Agenda) -> None:
    runs: Counter[int] = Counter()
    agenda.define("ten", lambda job: runs.update([job.data["i"]]))
    log = EventLog(agenda, "complete:ten")
    await agenda.start()
    for i in range(10):
        await agenda.now("ten", {"i": i})
    await log.wait("complete:ten", 10)
    await asyncio.sleep(0.3)
    assert runs == Counter(dict.fromkeys(range(10), 1))


async def test_context_manager_starts_and_closes(make_agenda: Any) -> None:
    agenda = await make_agenda()
    agenda.define("ctx", lambda job: None)
    log = EventLog(agenda, "complete:ctx")
    async with agenda:
        await agenda.running_stats()  # started
        await agenda.now("ctx")
        await log.wait("complete:ctx")
    with pytest.raises(NotRunning):
        await agenda.running_stats()


async def test_now_wakes_an_idle_worker_before_the_next_poll(make_agenda: Any) -> None:
    agenda = await make_agenda(process_every=60)
    agenda.define("prompt", lambda job: None)
    log = EventLog(agenda, "complete:prompt")
    await agenda.start()  # returns after the first poll; the next one is a minute away
    await agenda.now("prompt")
    await log.wait("complete:prompt", timeout=30)


async def test_worker_that_lost_its_lock_cannot_write(agenda: Agenda, jobs_collection: Any) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await hold(job, release)

    agenda.define("taken over", handler, lock_lifetime=60)
    log = EventLog(agenda, "complete:taken over")
    await agenda.now("taken over")
    await agenda.start()
    await asyncio.wait_for(started.wait(), 15)
    # another worker (e.g. Node Agenda after a lock expiry) takes the job over
    takeover = utcnow().replace(microsecond=0) + timedelta(seconds=1)
    await jobs_collection.update_one(
        {"name": "taken over"}, {"$set": {"lockedAt": takeover, "lastModifiedBy": "node-worker"}}
    )
    release.set()
    await log.wait("complete:taken over")
    doc = await jobs_collection.find_one({"name": "taken over"})
    assert doc["lockedAt"] == takeover
    assert doc["lastModifiedBy"] == "node-worker"
    assert doc.get("lastFinishedAt") is None


async def test_change_streams_wake_an_idle_worker_long_before_its_next_poll(make_agenda: Any) -> None:
    worker = await make_agenda(name="idle", process_every=60)
    producer = await make_agenda(name="producer")
    started = asyncio.Event()

    async def instant(job: Any) -> None:
        started.set()

    worker.define("instant", instant)
    await worker.start()  # returns after the first poll: the next is a minute away

    async def woken() -> bool:
        # Another Agenda (no in-process wake-up): only the stream can tell. It opens in the background,
        # late on a loaded machine, and a save made before is not in it: save until one is heard.
        await producer.now("instant")
        return started.is_set()

    await wait_until(woken, timeout=30, interval=0.5)


async def test_without_change_streams_the_worker_still_polls(make_agenda: Any) -> None:
    worker = await make_agenda(name="polling", process_every=0.1, change_streams=False)
    producer = await make_agenda(name="producer")
    started = asyncio.Event()

    async def polled(job: Any) -> None:
        started.set()

    worker.define("polled", polled)
    await worker.start()
    await producer.now("polled")
    await asyncio.wait_for(started.wait(), 10)

"""The worker registry in one process: registration, refresh, goodbye, names, activity counters, and
entries written by other tools that agendapy cannot read."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from agendapy import Agenda, Job

from support import EventLog, wait_until


async def _mine(agenda: Agenda, **options: Any) -> Any:
    found = [w for w in await agenda.workers(**options) if w.pid == os.getpid() and w.name == agenda.name]
    return found[0] if found else None


async def test_a_started_agenda_registers_refreshes_and_says_goodbye(make_agenda: Any) -> None:
    agenda = await make_agenda(heartbeat_every=0.1)
    agenda.define("tick", lambda job: None)
    assert await agenda.workers() == []  # connected, not started: not a worker
    await agenda.start()
    assert agenda.name == f"{socket.gethostname()}-{os.getpid()}"  # no name given: host-pid
    first = await _mine(agenda)
    assert first is not None and first.state == "live" and first.definitions == ["tick"]
    assert first.host == socket.gethostname() and first.version

    events = EventLog(agenda, "complete")
    await agenda.now("tick")
    await events.wait("complete")

    async def refreshed() -> bool:
        now = await _mine(agenda)
        return bool(now is not None and now.done == 1 and now.last_seen > first.last_seen)

    await wait_until(refreshed)
    await agenda.stop()
    assert await _mine(agenda) is None
    gone = await _mine(agenda, include_stopped=True)
    assert gone is not None and gone.state == "stopped" and gone.done == 1


async def test_an_explicit_name_is_kept(make_agenda: Any) -> None:
    agenda = await make_agenda(name="billing-1", heartbeat_every=0.1)
    await agenda.start()
    assert agenda.name == "billing-1"
    assert (await _mine(agenda)) is not None


async def test_entries_other_tools_wrote_do_not_break_the_listing(make_agenda: Any) -> None:
    agenda = await make_agenda()
    workers = agenda.store.database["agendaWorkers"]  # type: ignore[attr-defined]
    await workers.insert_many(
        [
            {"name": {"$ne": None}, "pid": "x", "heartbeatEvery": "soon", "lastSeen": "yesterday"},
            {"host": 5, "definitions": "all", "running": None, "lastSeen": datetime.now(UTC)},
            {},
        ]
    )
    listed = await agenda.workers()
    assert len(listed) == 3
    assert {w.state for w in listed} == {"lost", "live"}
    odd = next(w for w in listed if w.name.startswith("{"))
    assert odd.pid == 0 and odd.heartbeat_every == 5.0 and odd.held_jobs == []


async def test_corrupt_log_entries_are_read_safely(make_agenda: Any) -> None:
    agenda = await make_agenda()
    logs = agenda.store.database["agenda_logs"]  # type: ignore[attr-defined]
    await logs.insert_one(
        {"timestamp": datetime.now(UTC), "jobName": "x", "failCount": "many", "duration": "long", "meta": 3}
    )
    [entry] = (await agenda.get_logs()).entries
    assert (
        entry.job_name == "x" and entry.fail_count is None and entry.duration is None and entry.meta is None
    )


async def test_heartbeats_count_the_fleets_activity_per_minute(make_agenda: Any) -> None:
    agenda = await make_agenda(heartbeat_every=0.1)

    @agenda.define("ok")
    async def ok(job: Job) -> None:
        return None

    @agenda.define("bad")
    async def bad(job: Job) -> None:
        raise RuntimeError("no")

    await agenda.schedule(datetime.now(UTC) + timedelta(hours=1), "later")  # not due: not queued
    events = EventLog(agenda, "complete")
    await agenda.start()
    for _ in range(2):
        await agenda.now("ok")
    await agenda.now("bad")
    await events.wait("complete", 3)

    async def counted() -> bool:
        minutes = await agenda.activity(3)
        return sum(m["done"] for m in minutes) == 2 and sum(m["failed"] for m in minutes) == 1

    await wait_until(counted)
    minutes = await agenda.activity(3)
    assert len(minutes) == 3 and minutes[0]["minute"] < minutes[-1]["minute"]
    assert any(m["queued"] is not None for m in minutes)


async def test_a_failed_registration_never_fails_start_and_the_heartbeat_retries(
    make_agenda: Any, monkeypatch: Any
) -> None:
    from pymongo.errors import AutoReconnect

    import agendapy.workers as workers_module

    real_indexes = workers_module.ensure_worker_indexes
    failures = [1]

    async def flaky_indexes(collection: Any) -> None:
        if failures:
            failures.pop()
            raise AutoReconnect("database away")
        await real_indexes(collection)

    monkeypatch.setattr(workers_module, "ensure_worker_indexes", flaky_indexes)
    agenda = await make_agenda(name="late-1", heartbeat_every=0.1)
    await agenda.start()  # must not raise
    assert agenda.is_running

    async def registered() -> bool:
        return await _mine(agenda) is not None

    await wait_until(registered)

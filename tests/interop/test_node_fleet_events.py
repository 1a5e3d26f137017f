"""Fleet events from Node Agenda 6 workers: on MongoDB, Node publishes no state notifications (its
``MongoChangeStreamNotificationChannel`` only wakes workers), but it writes each step of a run to the
job's document, and agendapy's fleet events are read from those writes."""

from __future__ import annotations

from typing import Any

import pytest

from agendapy import Agenda, Job

from support import EventLog

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]


async def test_runs_of_a_node_worker_are_heard_and_awaited(node: Any, make_agenda: Any) -> None:
    watcher: Agenda = await make_agenda(process_every=0.1, fleet_events=True, name="py-web")
    events = EventLog(watcher, "start", "success", "complete", "fail")
    await watcher.start()

    node_worker = await node.start(
        "worker.mjs",
        "--define", "node-fleet",
        "--name", "node-worker",
        "--delay-ms", "50",
        "--until-runs", "node-fleet=2",
        "--timeout-ms", "30000",
    )  # fmt: skip
    await node_worker.wait_event("ready")
    jobs = [await watcher.now("node-fleet", {"i": i}) for i in range(2)]
    finished = [await watcher.wait_for(job, timeout=30) for job in jobs]
    assert [job.data for job in finished] == [{"i": 0}, {"i": 1}]
    await events.wait("complete", count=2, timeout=30)
    await node_worker.finish(within=30)

    assert events.count("fail") == 0
    for event in ("start", "success", "complete"):
        seen: list[Job] = [args[0] for args in events.args(event)]
        assert sorted(job.id or "" for job in seen) == sorted(job.id or "" for job in jobs)
        assert {(job.remote, job.worker) for job in seen} == {(True, "node-worker")}
    for job in jobs:  # per job: start, then success, then complete
        order = [name for name, args in events.calls if args and args[-1].id == job.id]
        assert order == ["start", "success", "complete"]

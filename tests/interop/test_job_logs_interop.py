"""Agenda 6.2's job log shared with Node: Node's getLogs reads what agendapy wrote, agendapy's get_logs
reads what Node wrote."""

from __future__ import annotations

from typing import Any

import pytest

from agendapy import Agenda, Job, backoff

from support import EventLog

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]


async def test_node_reads_the_log_agendapy_wrote(node: Any, make_agenda: Any) -> None:
    agenda: Agenda = await make_agenda(name="py-worker", logging=True)

    @agenda.define("py-flaky", backoff=backoff.constant(delay=30, max_retries=2))
    async def flaky(job: Job) -> None:
        raise RuntimeError("python says no")

    events = EventLog(agenda, "complete")
    await agenda.start()
    job = await agenda.now("py-flaky")
    await events.wait("complete")
    await agenda.stop()

    read = await node.run("logs.mjs", "--read", str(job.id))
    assert read["total"] == 4
    entries = read["entries"]
    assert [e["event"] for e in entries] == ["start", "fail", "retry", "complete"]
    assert {e["jobName"] for e in entries} == {"py-flaky"}
    assert {e["agendaName"] for e in entries} == {"py-worker"}
    fail, retry = entries[1], entries[2]
    assert fail["level"] == "error" and fail["error"] == "python says no" and fail["failCount"] == 1
    assert retry["retryDelay"] == 30000 and retry["retryAttempt"] == 1
    assert retry["message"] == "retry #1 scheduled in 30000ms"


async def test_agendapy_reads_the_log_node_wrote(node: Any, make_agenda: Any) -> None:
    agenda: Agenda = await make_agenda()
    ran = await node.run("logs.mjs", "--run", "node-failing", "--fail", "--name", "node-worker")
    result = await agenda.get_logs(job_id=ran["jobId"], sort="asc")
    # Node also logs the claim ("locked", level debug), which agendapy does not write.
    assert [e.event for e in result.entries] == ["locked", "start", "fail", "complete"]
    assert result.entries[0].level == "debug"
    failed = await agenda.get_logs(job_id=ran["jobId"], level="error")
    assert [e.event for e in failed.entries] == ["fail"]
    assert failed.entries[0].error == "node says no"
    assert failed.entries[0].message == "job failed: node says no"
    assert {e.agenda_name for e in result.entries} == {"node-worker"}
    assert {e.job_name for e in result.entries} == {"node-failing"}
    assert await agenda.clear_logs(job_name="node-failing") == 4

"""Clearing a repeat: ``job.repeat_every(None)`` / ``""`` (Agenda's ``repeatEvery(null)`` / ``('')``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from agendapy import Agenda, Job, JobState

from support import EventLog


@pytest.mark.parametrize("cleared", [None, ""], ids=["None", "empty string"])
async def test_repeat_every_none_or_empty_stops_a_job_repeating(
    agenda: Agenda, jobs_collection: Any, cleared: str | None
) -> None:
    job = await agenda.every("1 hour", "report", timezone="Europe/Paris")
    assert job.repeat_every(cleared) is job  # chainable, like every other setter
    assert job.repeat_interval == cleared and job.repeat_timezone is None
    assert job.next_run_at is None  # as Agenda's computeNextRunAt: no interval, no repeatAt
    await job.save()
    doc = await jobs_collection.find_one({"_id": ObjectId(job.id)})
    assert doc["repeatInterval"] == cleared and doc["nextRunAt"] is None  # Node reads "" as Agenda does
    fetched = await agenda.get_job(job.id or "")
    assert fetched is not None and fetched.state is JobState.COMPLETED


async def test_a_cleared_repeat_can_be_scheduled_once_more(agenda: Agenda) -> None:
    ran: list[str] = []
    agenda.define("report", lambda job: ran.append(job.name))
    log = EventLog(agenda, "complete")
    job = await agenda.every("1 hour", "report", skip_immediate=True)
    await job.repeat_every(None).schedule("now").save()
    await agenda.start()
    await log.wait("complete")
    await agenda.stop()
    fetched = await agenda.get_job(job.id or "")
    assert ran == ["report"]
    assert fetched is not None and fetched.next_run_at is None and fetched.fail_reason is None


async def test_a_cleared_repeat_keeps_a_repeat_at_time(agenda: Agenda) -> None:
    job = agenda.create("report").repeat_at_time("3:30pm").repeat_every(None)
    assert job.next_run_at is not None  # Agenda computes from repeatAt when there is no interval
    assert (job.next_run_at.hour, job.next_run_at.minute) == (15, 30)


async def test_a_stored_empty_repeat_interval_is_a_one_off(agenda: Agenda, jobs_collection: Any) -> None:
    """A document written by Node after ``repeatEvery('')``: it runs once, fails nothing, stays done."""
    ran: list[str] = []
    agenda.define("node job", lambda job: ran.append(job.name))
    inserted = await jobs_collection.insert_one(
        {
            "name": "node job",
            "data": None,
            "type": "normal",
            "priority": 0,
            "nextRunAt": datetime.now(UTC) - timedelta(seconds=1),
            "repeatInterval": "",
            "repeatTimezone": None,
            "lockedAt": None,
        }
    )
    listed = await agenda.query_jobs(state="repeating")
    assert listed.total == 0
    log = EventLog(agenda, "complete")
    await agenda.start()
    await log.wait("complete")
    await agenda.stop()
    job: Job | None = await agenda.get_job(str(inserted.inserted_id))
    assert ran == ["node job"]
    assert job is not None and job.repeat_interval == "" and job.next_run_at is None
    assert job.fail_reason is None and job.state is JobState.COMPLETED
    runs = await agenda.runs("node job")
    assert runs == []  # a one-off, so not in the recurring history either


async def test_other_blank_intervals_are_still_rejected(agenda: Agenda) -> None:
    job = agenda.create("report")
    with pytest.raises(ValueError, match="interval"):
        job.repeat_every("   ")
    assert job.repeat_interval is None


@pytest.mark.parametrize("interval", [None, ""])
async def test_every_still_needs_an_interval(agenda: Agenda, interval: str | None) -> None:
    with pytest.raises(ValueError, match="interval"):
        await agenda.every(interval, "report")  # type: ignore[arg-type]
    assert await agenda.jobs_overview() == []

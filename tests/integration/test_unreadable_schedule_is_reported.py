"""A recurring job whose stored schedule cannot be computed does not stop repeating in silence."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from agendapy import Agenda, Job

from support import EventLog


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"repeatInterval": "every banana"}, "invalid repeat interval (every banana)"),
        ({"repeatInterval": "0 * * * *", "repeatTimezone": "Mars/Olympus"}, "Mars/Olympus"),
    ],
)
async def test_a_schedule_written_by_another_tool_that_cannot_be_computed_is_logged(
    agenda: Agenda,
    jobs_collection: Any,
    caplog: pytest.LogCaptureFixture,
    fields: dict[str, Any],
    said: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="agendapy")
    ran: list[str] = []

    @agenda.define("report")
    async def report(job: Job) -> None:
        ran.append(job.id or "")

    inserted = await jobs_collection.insert_one(
        {"name": "report", "type": "single", "nextRunAt": datetime.now(UTC), "data": None, **fields}
    )
    log = EventLog(agenda, "complete")
    await agenda.start()
    await log.wait("complete")
    await agenda.stop()

    # Agenda's rule: this run goes ahead, no next one is scheduled, the reason is stored.
    assert ran == [str(inserted.inserted_id)]
    doc = await jobs_collection.find_one({"_id": inserted.inserted_id})
    assert doc["nextRunAt"] is None and said in doc["failReason"]
    warnings = [m for m in caplog.messages if "will not run again until its schedule is fixed" in m]
    assert len(warnings) == 1 and said in warnings[0] and str(inserted.inserted_id) in warnings[0]

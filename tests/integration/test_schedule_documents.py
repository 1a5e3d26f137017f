"""Job documents written by Node (raw inserts) run with Agenda's next-run rules and failure reasons.

Issue 17 / 11.3: cron-parser's ``5L`` runs and croniter's ``L5`` fails as in Node, ``repeatAt`` takes
Node's ``"9.30"``, and an unreadable ``repeatAt`` fails the job with Agenda's exact reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agendapy import Agenda
from tests.support import wait_until


def _node_document(name: str, **fields: Any) -> dict[str, Any]:
    """A due job as Node's Agenda 6 stores it."""
    return {
        "name": name,
        "type": "normal",
        "priority": 0,
        "data": None,
        "nextRunAt": datetime.now(UTC) - timedelta(seconds=1),
        "lockedAt": None,
        "lastModifiedBy": "node-worker",
        **fields,
    }


async def _run_once(agenda: Agenda, jobs_collection: Any, name: str, **fields: Any) -> dict[str, Any]:
    runs: list[str] = []

    async def handler(job: Any) -> None:
        runs.append(job.name)

    agenda.define(name, handler)
    await jobs_collection.insert_one(_node_document(name, **fields))
    await agenda.start()

    async def finished() -> bool:
        doc = await jobs_collection.find_one({"name": name})
        return bool(runs) and doc is not None and doc.get("lastFinishedAt") is not None

    await wait_until(finished, timeout=20)
    await agenda.stop()
    doc = await jobs_collection.find_one({"name": name})
    assert doc is not None
    return doc


async def test_an_unreadable_repeat_at_fails_with_agendas_exact_reason(
    agenda: Agenda, jobs_collection: Any
) -> None:
    doc = await _run_once(agenda, jobs_collection, "at foo", repeatAt="foo")
    assert doc["failReason"] == "failed to calculate repeatAt time due to invalid format"
    assert doc["nextRunAt"] is None


async def test_node_repeat_at_formats_are_scheduled(agenda: Agenda, jobs_collection: Any) -> None:
    doc = await _run_once(agenda, jobs_collection, "at nine thirty", repeatAt="9.30")
    assert doc.get("failReason") is None
    next_run = doc["nextRunAt"].replace(tzinfo=UTC)
    assert (next_run.hour, next_run.minute, next_run.second) == (9, 30, 0)
    assert next_run > datetime.now(UTC)


async def test_cron_parsers_last_weekday_runs_and_croniters_fails(
    agenda: Agenda, jobs_collection: Any
) -> None:
    doc = await _run_once(agenda, jobs_collection, "last friday", repeatInterval="0 0 * * 5L")
    assert doc.get("failReason") is None
    next_run = doc["nextRunAt"].replace(tzinfo=UTC)
    assert next_run.isoweekday() == 5  # a Friday ...
    assert (next_run + timedelta(days=7)).month != next_run.month  # ... the last one of its month


async def test_croniters_last_weekday_spelling_fails_as_in_node(agenda: Agenda, jobs_collection: Any) -> None:
    doc = await _run_once(agenda, jobs_collection, "l5", repeatInterval="0 0 * * L5")
    assert doc["failReason"].startswith(
        "failed to calculate nextRunAt due to invalid repeat interval (0 0 * * L5): "
    )
    assert doc["nextRunAt"] is None

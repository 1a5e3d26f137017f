"""The largest inputs the API accepts still run and have their outcome saved."""

from __future__ import annotations

from typing import Any

import bson
import pytest

from agendapy import Agenda, Job
from agendapy.job import MAX_FAIL_REASON
from agendapy.validate import _MAX_DATA_BYTES

from support import EventLog, wait_until

# Documents at BSON's 16 MB limit: a server of this module's own (tests/conftest.py).
pytestmark = pytest.mark.own_mongo_server


def _largest_data() -> dict[str, str]:
    """A ``data`` document exactly as large as ``now()`` accepts."""
    overhead = len(bson.encode({"v": {"blob": ""}}))
    return {"blob": "a" * (_MAX_DATA_BYTES - overhead)}


async def test_a_long_failure_of_a_job_with_the_largest_data_is_saved(
    agenda: Agenda, jobs_collection: Any
) -> None:
    # Multi-byte characters: the message is 300 KB in UTF-8, beyond the room the data leaves.
    message = "upstream answered 502: " + "é" * 150_000

    @agenda.define("import", history=True)
    async def import_users(job: Job) -> None:
        raise RuntimeError(message)

    log = EventLog(agenda, "fail")
    job = await agenda.now("import", _largest_data())
    await agenda.start()
    await log.wait("fail")

    async def saved() -> bool:
        doc = await jobs_collection.find_one({"name": "import"}, {"data": 0})
        return doc is not None and doc["lockedAt"] is None and doc["failCount"] == 1

    # Without a bound on the message the update would exceed 16 MB: the job stayed locked, unsaved.
    await wait_until(saved, timeout=30)
    doc = await jobs_collection.find_one({"name": "import"}, {"data": 0})
    assert str(doc["_id"]) == job.id
    assert doc["failReason"].startswith("upstream answered 502: éé")
    assert doc["failReason"].endswith("(message cut)")
    assert len(doc["failReason"]) == MAX_FAIL_REASON

    async def recorded() -> bool:  # the run's record is written after the job's state
        return [run.status for run in await agenda.runs("import")] != ["running"]

    await wait_until(recorded, timeout=30)
    runs = await agenda.runs("import")
    assert [(run.status, run.error) for run in runs] == [("failed", doc["failReason"])]


def test_job_fail_keeps_a_short_reason_whole_and_cuts_a_long_one() -> None:
    job = Job(name="import")
    job.fail(ValueError("bad row 7"))
    assert job.fail_reason == "bad row 7"
    job.fail("x" * (MAX_FAIL_REASON + 1))
    assert job.fail_reason is not None and len(job.fail_reason) == MAX_FAIL_REASON
    assert job.fail_reason.startswith("xxx") and job.fail_reason.endswith(" ... (message cut)")
    assert job.fail_count == 2


async def test_a_checkpoint_too_large_for_the_document_fails_the_run_and_is_not_kept(
    agenda: Agenda, jobs_collection: Any
) -> None:
    errors: list[Exception] = []

    @agenda.define("import", history=True)
    async def import_rows(job: Job) -> None:
        await job.checkpoint({"row": 10})
        try:
            # Fits alone, but not next to the largest data: the server refuses the update.
            await job.checkpoint({"rows": "b" * 100_000})
        except Exception as exc:
            errors.append(exc)
            raise

    log = EventLog(agenda, "fail")
    await agenda.now("import", _largest_data())
    await agenda.start()
    await log.wait("fail")

    async def saved() -> bool:
        doc = await jobs_collection.find_one({"name": "import"}, {"data": 0})
        return doc is not None and doc["lockedAt"] is None and doc["failCount"] == 1

    # Before, the final write carried the refused state again: it failed, the job stayed locked.
    await wait_until(saved, timeout=30)
    doc = await jobs_collection.find_one({"name": "import"}, {"data": 0})
    assert len(errors) == 1
    assert doc["checkpoint"] == {"row": 10}  # the retry resumes from the last stored checkpoint
    assert doc["failReason"] == str(errors[0])[: len(doc["failReason"])]

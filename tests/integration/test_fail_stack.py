"""A failed run keeps where the handler raised, bounded, in ``failStack`` (Agenda 6 stores no traceback)."""

from __future__ import annotations

from typing import Any

from agendapy import Agenda, Job
from agendapy.run import MAX_FAIL_STACK

from support import EventLog


def _parse_config(text: str) -> None:
    raise ValueError(f"bad config line: {text}")


async def test_a_failure_stores_the_handlers_traceback(agenda: Agenda, jobs_collection: Any) -> None:
    @agenda.define("import")
    async def import_users(job: Job) -> None:
        _parse_config("x = ")

    log = EventLog(agenda, "complete")
    job = await agenda.now("import")
    await agenda.start()
    await log.wait("complete")
    await agenda.stop()

    doc = await jobs_collection.find_one({"name": "import"})
    assert str(doc["_id"]) == job.id
    stack = doc["failStack"]
    assert doc["failReason"] == "bad config line: x = "
    assert stack.startswith("Traceback (most recent call last):")
    assert "in import_users" in stack and "in _parse_config" in stack  # the frames, innermost last
    assert stack.endswith("\nValueError: bad config line: x = ")
    assert "runner.py" not in stack  # it starts at the handler, not in agendapy's run loop
    reread = await agenda.get_job(str(doc["_id"]))
    assert reread is not None and reread.fail_stack == stack


async def test_the_stored_traceback_is_bounded_and_keeps_the_raise(
    agenda: Agenda, jobs_collection: Any
) -> None:
    def deep(n: int) -> None:
        if n == 0:
            raise RuntimeError("x" * 50_000)
        deep(n - 1)

    @agenda.define("deep")
    def run_deep(job: Job) -> None:
        deep(500)

    log = EventLog(agenda, "complete")
    await agenda.now("deep")
    await agenda.start()
    await log.wait("complete")
    await agenda.stop()

    doc = await jobs_collection.find_one({"name": "deep"})
    stack = doc["failStack"]
    assert len(stack) <= MAX_FAIL_STACK
    assert stack.startswith("... (traceback cut)")
    assert stack.endswith("x" * 100)
    assert doc["failCount"] == 1

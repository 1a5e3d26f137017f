"""Helpers shared by the ported Agenda suites."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agendapy import Job

#: Every deliberate divergence cites the line of this page that explains it.
MIGRATE = "docs/migrate/from-agenda.md"
_MIGRATE_PATH = Path(__file__).resolve().parents[2] / MIGRATE


def cite(anchor: str, why: str) -> str:
    """An xfail reason ``"docs/migrate/from-agenda.md:LINE — why"``, LINE being the line holding ``anchor``.

    The line number is looked up, so edits above it never leave a stale citation; an anchor that is not
    on the page (exactly once) fails the import of the test module.
    """
    lines = [n for n, text in enumerate(_MIGRATE_PATH.read_text().splitlines(), 1) if anchor in text]
    if len(lines) != 1:
        raise LookupError(f"{MIGRATE} holds {anchor!r} on {len(lines)} lines, expected exactly one")
    return f"{MIGRATE}:{lines[0]} — {why}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms(value: datetime) -> datetime:
    """A datetime truncated to what BSON stores (milliseconds)."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


async def hold(job: Job, until: asyncio.Event | float) -> None:
    """Agenda's ``await delay(n)`` in a handler: wait for ``until`` (an event or seconds), or until the
    worker asks the job to stop, so that teardown never waits for a long sleep."""
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(job.stopping())}
    if isinstance(until, asyncio.Event):
        waiters.add(asyncio.ensure_future(until.wait()))
    else:
        waiters.add(asyncio.ensure_future(asyncio.sleep(until)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def only_doc(jobs_collection: Any, **flt: Any) -> dict[str, Any]:
    docs = await jobs_collection.find(flt).to_list()
    assert len(docs) == 1, f"expected exactly one document matching {flt}, found {len(docs)}: {docs}"
    return docs[0]  # type: ignore[no-any-return]

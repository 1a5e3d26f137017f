"""Building jobs and claim requests for the store contract suite (no backend-specific code here)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from agendapy import Agenda, Job
from agendapy.schedule import utcnow
from agendapy.store.base import ClaimRequest, JobStore

__all__ = ["MINUTE", "MakeAgenda", "MakeStore", "claim", "claim_request", "job", "ms", "save", "utcnow"]

MINUTE = timedelta(minutes=1)

#: ``make_store(**options)`` and ``make_agenda(**options)`` fixtures (see conftest.py).
MakeStore = Callable[..., Awaitable[JobStore]]
MakeAgenda = Callable[..., Awaitable[Agenda]]


def ms(value: datetime) -> datetime:
    """``value`` as a BSON date reads back: aware UTC, milliseconds."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def job(name: str = "work", data: Any = None, **fields: Any) -> Job:
    """A new job, due now unless ``next_run_at`` is given."""
    fields.setdefault("next_run_at", utcnow())
    return Job(name=name, data=data, **fields)


async def save(store: JobStore, item: Job, *, now: datetime | None = None, by: str | None = "tester") -> Job:
    """``save_job`` as the façade calls it."""
    await store.save_job(item, now=now or utcnow(), last_modified_by=by)
    return item


def claim_request(
    names: str | Sequence[str],
    *,
    now: datetime | None = None,
    window: timedelta = timedelta(0),
    lifetime: timedelta = 10 * MINUTE,
    deadlines: dict[str, datetime] | None = None,
    owner: str | None = "worker-1",
    per_name: dict[str, int] | None = None,
) -> ClaimRequest:
    """A claim pass at ``now`` looking ``window`` ahead; locks older than ``lifetime`` count as expired;
    ``per_name``: each name's room in the batch."""
    name_list = [names] if isinstance(names, str) else list(names)
    at = now or utcnow()
    return ClaimRequest(
        names=name_list,
        now=at,
        next_scan_at=at + window,
        lock_deadlines=deadlines or {name: at - lifetime for name in name_list},
        owner=owner,
        per_name=per_name,
    )


async def claim(
    store: JobStore, names: str | Sequence[str], limit: int = 1, *, token: str | None = None, **options: Any
) -> list[Job]:
    """One claim pass with a fresh token."""
    return await store.claim(claim_request(names, **options), token or uuid.uuid4().hex, limit)

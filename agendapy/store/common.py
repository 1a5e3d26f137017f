"""Helpers every store shares: what a write sends and what a store hands back, written once.

The rules themselves (who may claim, fencing, debounce, one recurring document, wake-ups) are
MongoDB filters and updates in :mod:`agendapy.store.queries`; this module holds the Python around
them that does not depend on how a store reaches its documents.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidInput, JobNotFound
from ..job import ClaimedStart, Job, JobState, Lease, compute_job_state, set_lease
from .queries import fence_filter
from .schema import STATE_FIELDS, STATE_KEYS, document_from_job, job_from_document

__all__ = [
    "absorb",
    "count_overview",
    "document_to_save",
    "fenced_state_write",
    "leased",
    "refresh_run_fields",
    "release_values",
    "state_values",
    "user_filter",
    "wake_up",
]


def leased(
    doc: Mapping[str, Any], token: str, locked_at: datetime, *, claimed_start: ClaimedStart | None = None
) -> Job:
    """The job of a document this worker just locked, carrying its lease (with the start the lock
    wrote, if it did)."""
    job = job_from_document(dict(doc))
    set_lease(job, Lease(token=token, locked_at=locked_at, claimed_start=claimed_start))
    return job


def absorb(job: Job, doc: Mapping[str, Any]) -> None:
    """Copy what the store decided (id, nextRunAt, debounce start, data) back onto the saved job.

    ``doc`` must not be shared with the store (the job keeps its data).
    """
    fresh = job_from_document(dict(doc))
    job.id = str(doc["_id"])
    job.next_run_at = fresh.next_run_at
    job.debounce_started_at = fresh.debounce_started_at
    job.data = fresh.data


def document_to_save(job: Job, last_modified_by: str | None) -> dict[str, Any]:
    """The document ``save_job``/``insert_many`` write for ``job`` (which records who saved it)."""
    job.last_modified_by = last_modified_by
    return document_from_job(job)


def state_values(job: Job, fields: Sequence[str] | None) -> dict[str, Any]:
    """The ``$set`` of a ``save_state``: the worker-managed fields named (all by default)."""
    names = list(fields) if fields is not None else [attr for attr, _ in STATE_FIELDS]
    values = {STATE_KEYS[attr]: getattr(job, attr) for attr in names}
    if job.lease is not None and "locked_at" in names and job.locked_at is None:
        values["lockToken"] = None  # the final write of a run releases the lock
    return values


#: Sends one update fenced by the filter; tells whether a document matched.
FencedWrite = Callable[[dict[str, Any], dict[str, Any]], Awaitable[bool]]


async def fenced_state_write(job: Job, fields: Sequence[str] | None, write: FencedWrite) -> bool:
    """``save_state``: write the worker-managed fields, fenced by the job's lease if it has one.

    False when nothing matched (the job is gone, or its lock was taken over). A write that moves the
    lock moves the lease with it, so the next fenced write still matches.
    """
    update = {"$set": state_values(job, fields)}
    lease = job.lease
    if lease is None:
        return await write(fence_filter(job.id, None, None), update)
    async with lease.write_lock:
        if lease.lost or not await write(fence_filter(job.id, lease.locked_at, lease.token), update):
            return False
        if "lockedAt" in update["$set"] and job.locked_at is not None:
            lease.locked_at = job.locked_at
        return True


def refresh_run_fields(job: Job, doc: Mapping[str, Any] | None) -> None:
    """Reload lastRunAt, lockedAt and lastFinishedAt from the job's document (None: it is gone)."""
    if doc is None:
        raise JobNotFound(f"job with id {job.id} not found in database")
    fresh = job_from_document({"name": job.name, **doc})
    job.last_run_at, job.locked_at = fresh.last_run_at, fresh.locked_at
    job.last_finished_at = fresh.last_finished_at


def release_values(job: Job, reschedule_at: datetime | None) -> dict[str, Any]:
    """The ``$set`` that hands a leased job back: unlocked, due at ``reschedule_at`` if given.

    A job without a next run (a recovered crash) becomes due now, so no release strands it.
    """
    values: dict[str, Any] = {"lockedAt": None, "lockToken": None}
    claimed = job.lease.claimed_start if job.lease is not None else None
    if claimed is not None:
        # The claim wrote a start that never ran: put back what it replaced (the job did not run).
        values["lastRunAt"] = claimed.last_run_at
        values["nextRunAt"] = reschedule_at or claimed.next_run_at or _now_ms()
        return values
    if reschedule_at is not None:
        values["nextRunAt"] = reschedule_at
    elif job.next_run_at is None:
        values["nextRunAt"] = _now_ms()
    return values


def _now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def wake_up(doc: Mapping[str, Any] | None) -> tuple[str, datetime | None] | None:
    """``(name, nextRunAt)`` of a changed document that passed ``WAKE_UP_PIPELINE``.

    Repeats the pipeline's last stage on the document, for servers that look it up after filtering.
    """
    if not doc or doc.get("disabled") is True or doc.get("lockedAt") is not None:
        return None
    name, next_run = doc.get("name"), doc.get("nextRunAt")
    if not isinstance(name, str):
        return None
    if not isinstance(next_run, datetime):
        return name, None
    return name, next_run if next_run.tzinfo is not None else next_run.replace(tzinfo=UTC)


def count_overview(docs: Iterable[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Agenda's getJobsOverview over the documents: per name, a total, a count per state, paused."""
    counts: dict[str, dict[str, Any]] = {}
    for doc in docs:
        job = job_from_document(dict(doc))
        # A stored name that is not a job name has its own row, labelled (never an empty name).
        entry = counts.get(job.display_name)
        if entry is None:
            entry = counts[job.display_name] = {"name": job.display_name, "total": 0, "paused": 0}
            if not job.name:
                entry["unreadable_name"] = True  # ``name`` is a label: no query matches it
            entry.update({state.value: 0 for state in JobState})
        entry["total"] += 1
        entry[compute_job_state(job, now).value] += 1
        if job.disabled:
            entry["paused"] += 1
    return sorted(counts.values(), key=lambda e: e["name"])


@contextlib.contextmanager
def user_filter(field: str, value: Any, refused: Callable[[Exception], str | None]) -> Iterator[None]:
    """A filter built from user input that the store refuses is bad input naming the field, not a crash.

    ``refused`` gives the store's reason for an exception that means "bad filter", None for others.
    """
    try:
        yield
    except Exception as exc:
        reason = refused(exc)
        if reason is None:
            raise
        raise InvalidInput(field, value, f"the server rejected it: {reason}") from None

"""State writes the server refuses for one document (a collection validator, a document grown past
16 MB): telling them apart within a batch, and failing and unlocking the refused job.

A refusal is that job's alone: the other writes of its round trip apply. One that says the server is
stepping down is transient (retried like an outage); any other would be refused again on every retry,
so the job is failed and unlocked without the refused fields rather than left locked, to be claimed
again one lock lifetime later and refused the same way forever.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, OperationFailure, WriteError

from ..job import Job
from .queries import fence_filter

__all__ = ["Refused", "bulk_refusals", "record_refusal", "single_refusal"]

log = logging.getLogger("agendapy.store")

#: The most of the server's message kept in the failReason of a run whose state it refused.
_MAX_REFUSAL_MESSAGE = 500
#: Write error codes that say the server is stepping down or going away, not that it refuses the
#: document: such a write is retried like a lost connection.
_TRANSIENT_WRITE_CODES = frozenset({6, 7, 89, 91, 189, 9001, 10107, 11600, 11602, 13435, 13436})


@dataclasses.dataclass(frozen=True)
class Refused:
    """The server refused one write of a batch (a validator, a document grown too large, ...)."""

    code: int | None
    message: str
    error: Exception  # what the driver raised, re-raised where a caller cannot take a refusal

    @property
    def transient(self) -> bool:
        return self.code in _TRANSIENT_WRITE_CODES


def single_refusal(exc: WriteError) -> Refused:
    """The refusal of a write sent alone (``update_one``/``update_many``)."""
    details = exc.details or {}
    return Refused(exc.code, str(details.get("errmsg") or exc), exc)


def bulk_refusals(exc: BulkWriteError) -> dict[int, Refused]:
    """The refused writes of an unordered bulk write, by their index in it.

    Raises ``exc`` again when it carries a write concern error: that is not about one document, and
    the whole batch's fate is unknown.
    """
    if exc.details.get("writeConcernErrors"):
        raise exc
    return {
        int(error["index"]): Refused(error.get("code"), str(error.get("errmsg") or exc), exc)
        for error in exc.details.get("writeErrors", [])
    }


def _reason(message: str) -> str:
    if len(message) > _MAX_REFUSAL_MESSAGE:
        message = message[:_MAX_REFUSAL_MESSAGE] + " ... (message cut)"
    return f"agendapy could not save this run's state: {message}"


def _count(stored: Any) -> int:
    """A stored failCount as an int: another tool may have stored null (which ``$inc`` would refuse)."""
    return 0 if isinstance(stored, bool) or not isinstance(stored, int) else stored


async def record_refusal(
    collection: AsyncCollection[dict[str, Any]],
    job: Job,
    values: dict[str, Any],
    refused: Refused,
    now: datetime,
) -> None:
    """Fail and unlock ``job``, fenced by its lease, writing only the failure and the next run
    (``values``' nextRunAt, computed by the run as usual); if even that is refused, only unlock it and
    leave nextRunAt. Nothing is written if the job is gone or its lock was taken over."""
    lease = job.lease
    assert lease is not None
    lease.finishing = True  # no heartbeat renews a lock that is being given up
    reason = _reason(refused.message)
    unlock: dict[str, Any] = {"lockedAt": None, "lockToken": None}
    failure = {**unlock, "failedAt": now, "failReason": reason, "nextRunAt": values.get("nextRunAt")}
    recorded = False
    async with lease.write_lock:
        if lease.lost:
            return
        fence = fence_filter(job.id, lease.locked_at, lease.token)
        # The stored count, not the job's (a succeeded run reset it): read under the lock this worker
        # holds, so nothing else changes it before the write.
        stored = await collection.find_one(fence, projection={"failCount": 1})
        if stored is None:
            return  # removed, or its lock taken over: nothing of this run is to be written
        failure["failCount"] = _count(stored.get("failCount")) + 1
        try:
            result = await collection.update_one(fence, {"$set": failure})
            recorded = True
        except OperationFailure as exc:
            if exc.code in _TRANSIENT_WRITE_CODES:
                raise
            # The failure itself is refused (say a validator on failReason): unlocking is what
            # matters, so the job is not run again and again one lock lifetime apart.
            result = await collection.update_one(fence, {"$set": unlock})
    if result.matched_count == 0:
        return  # removed, or its lock taken over meanwhile: nothing of this run is to be written
    job.locked_at = None
    if recorded:
        job.fail_reason, job.failed_at = reason, now
        job.next_run_at = values.get("nextRunAt")
        job.fail_count = failure["failCount"]
    log.error(
        "the server refused the state of %s (%s); %s: %s",
        job.name,
        job.id,
        "recorded as failed and unlocked" if recorded else "unlocked, the failure could not be recorded",
        refused.message,
    )

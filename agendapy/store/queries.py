"""Every MongoDB filter and update agendapy sends for jobs, each built by one named function beside its index.

These are the store rules, written once: who may claim, fencing, one document per recurring job,
unique and debounced saves, wake-ups. The MongoDB store sends them; the PostgreSQL store writes them in
SQL or applies them with agendapy's MongoDB engine (``agendapy.store._mql``), with which the in-memory
store evaluates them all. Keeping them here also answers "which index serves this query" in one place;
``tests/integration`` checks the claim query's plan with ``explain``. The rules of run records live
beside them in :mod:`agendapy.store.runs`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import bson
from bson import CodecOptions

from ..errors import InvalidInput
from ..validate import check_safe_filter
from .base import ClaimRequest, JobCriteria, JobQuery
from .schema import PROCESSOR_FIELDS, SCHEDULE_FIELDS, to_object_id

if TYPE_CHECKING:
    from ..job import Job

__all__ = [
    "BY_ID",
    "CLAIM_SORT",
    "INDEXES",
    "RUN_CHANGES_PIPELINE",
    "WAKE_UP_PIPELINE",
    "claim_filter",
    "claim_update",
    "criteria_filter",
    "debounce_update",
    "due_filter",
    "fence_filter",
    "fence_many_filter",
    "lock_fields",
    "lock_filters",
    "query_filter",
    "query_sort",
    "save_fields",
    "saved_filter",
    "single_filter",
    "single_update",
    "start_conditions",
    "start_fields",
    "starts_with_claim",
    "unique_filter",
    "unique_update",
]

# Values as a round trip through BSON returns them (to compare what is stored with what would be).
_STORED_FORM: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=UTC)

#: Agenda's lock index (same name and keys, so Node and Python create the same index), plus ours.
INDEXES: tuple[tuple[str, list[tuple[str, int]], dict[str, Any]], ...] = (
    (
        "findAndLockNextJobIndex",
        [("name", 1), ("nextRunAt", 1), ("priority", -1), ("lockedAt", 1), ("disabled", 1)],
        {},
    ),
    # One recurring ("single") document per name, even when two processes call every() at once.
    (
        "agendapySingleJobName",
        [("name", 1), ("type", 1)],
        {"unique": True, "partialFilterExpression": {"type": "single"}},
    ),
)

#: The index hint of a find that names its documents by ``_id`` and repeats further conditions (the
#: batched claim's read-back). A planner that does not choose the ``_id`` index for such a filter
#: scans the whole collection for a few documents (SecantusDB does); mongod chooses it anyway.
BY_ID: list[tuple[str, int]] = [("_id", 1)]

#: Agenda's default claim order: earliest due first, then highest priority.
CLAIM_SORT: list[tuple[str, int]] = [("nextRunAt", 1), ("priority", -1)]


#: Change-stream filter for instant wake-ups: inserts and replacements, and updates that reschedule,
#: unlock or re-enable a job. Claims and lock renewals (which only move lockedAt forward) stay out.
#: The second stage keeps only jobs that a claim could take (the document as looked up: unlocked,
#: enabled, with a next run): the final write of a finished one-off job unlocks it with no next run,
#: and without this stage every worker's stream would carry every finish of the fleet to be dropped
#: by the worker (with four workers, most of the getMores of a drain).
WAKE_UP_PIPELINE: list[dict[str, Any]] = [
    {
        "$match": {
            "$or": [
                {"operationType": {"$in": ["insert", "replace"]}},
                # A new next run (a run's start or end of a one-off job writes null there: no match).
                {"operationType": "update", "updateDescription.updatedFields.nextRunAt": {"$ne": None}},
                # An unlock that leaves the next run as it was (a stopping worker hands a job back).
                {
                    "operationType": "update",
                    "updateDescription.updatedFields.lockedAt": {"$type": "null"},
                    "updateDescription.updatedFields.nextRunAt": {"$exists": False},
                },
                {"operationType": "update", "updateDescription.updatedFields.disabled": False},
            ]
        }
    },
    {
        "$match": {
            "fullDocument.nextRunAt": {"$ne": None},
            "fullDocument.lockedAt": None,
            "fullDocument.disabled": {"$ne": True},
        }
    },
]


#: The changes fleet events are made of: updates that start, report progress or end a run (claims
#: and heartbeats only move the lock and stay out), and deletions (to forget the job).
RUN_CHANGES_PIPELINE: list[dict[str, Any]] = [
    {
        "$match": {
            "$or": [
                {"operationType": "delete"},
                *(
                    {"operationType": "update", f"updateDescription.updatedFields.{key}": {"$exists": True}}
                    for key in ("lastRunAt", "progress", "lastFinishedAt")
                ),
            ]
        }
    }
]


def claim_filter(request: ClaimRequest, *, exclude: Sequence[Any] = ()) -> dict[str, Any]:
    """Agenda's find-and-lock filter over several names (served by findAndLockNextJobIndex).

    A job is claimable when it is unlocked and due within the scan window, or when its lock is older than
    its definition's lock lifetime (its worker died): the second branch is how crashed work comes back.
    ``exclude``: ``_id``s already picked by the batch being assembled.
    """
    names = list(request.names)
    branches: list[dict[str, Any]] = [
        {"name": {"$in": names}, "lockedAt": None, "nextRunAt": {"$lte": request.next_scan_at}}
    ]
    by_deadline: dict[datetime, list[str]] = defaultdict(list)
    for name in names:
        by_deadline[request.lock_deadlines[name]].append(name)
    # The claiming worker's own jobs are left out of the expired-lock branch (see ClaimRequest.held);
    # the due branch never meets them, since they are locked.
    own = [to_object_id(job_id) for job_id in sorted(request.held)]
    for deadline, group in by_deadline.items():
        expired: dict[str, Any] = {"name": {"$in": group}, "lockedAt": {"$lte": deadline}}
        if own:
            expired["_id"] = {"$nin": own}
        branches.append(expired)
    flt: dict[str, Any] = {"disabled": {"$ne": True}, "$or": branches}
    if exclude:
        flt["_id"] = {"$nin": list(exclude)}
    return flt


def lock_filters(request: ClaimRequest, candidates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The batched lock of ``candidates`` (``_id``, ``name`` and ``lockedAt`` as the candidate find
    read them): :func:`claim_filter`'s conditions, repeated so a job another worker took meanwhile is
    left alone, but split by the branch each candidate was found in, without ``$or``.

    One filter for the unlocked candidates and one per lock deadline for the expired ones (usually
    none). A server may take ``_id`` for the plan of an update only when the filter has no ``$or``
    (SecantusDB scans the collection otherwise: ~60 ms for ten jobs among 2,000, ~2.5 ms without).
    """
    names = set(request.names)
    unlocked: list[Any] = []
    expired: dict[datetime, list[Any]] = defaultdict(list)
    for doc in candidates:
        name = doc.get("name")
        if not isinstance(name, str) or name not in names:
            continue
        if doc.get("lockedAt") is None:
            unlocked.append(doc["_id"])
        else:
            expired[request.lock_deadlines[name]].append(doc["_id"])
    filters: list[dict[str, Any]] = []
    if unlocked:
        filters.append(
            {
                "_id": {"$in": unlocked},
                "name": {"$in": list(request.names)},
                "lockedAt": None,
                "nextRunAt": {"$lte": request.next_scan_at},
                "disabled": {"$ne": True},
            }
        )
    for deadline, ids in expired.items():
        filters.append(
            {
                "_id": {"$in": ids},
                "name": {"$in": list(request.names)},
                "lockedAt": {"$lte": deadline},
                "disabled": {"$ne": True},
            }
        )
    return filters


def starts_with_claim(request: ClaimRequest, doc: Mapping[str, Any]) -> bool:
    """Whether the claim writes the start of this candidate with its lock (``request.start_due``).

    Only where the start needs nothing the run computes: an unlocked one-off job (no
    ``repeatInterval``, no ``repeatAt``: its start sets ``lastRunAt`` and clears ``nextRunAt``, as
    Agenda's) that is due by the claim's ``now``, so it starts at once. Jobs claimed ahead (due
    later) and expired locks (a crashed run) are locked only, and started by the run's own write.
    :func:`start_conditions` repeats this in the lock's filter.
    """
    if not request.start_due or doc.get("lockedAt") is not None:
        return False
    due = doc.get("nextRunAt")
    if not isinstance(due, datetime):
        return False
    if due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    return due <= request.now and doc.get("repeatInterval") is None and doc.get("repeatAt") is None


def start_conditions(request: ClaimRequest) -> dict[str, Any]:
    """:func:`starts_with_claim` as filter conditions, added to the lock of such candidates: a job
    saved as recurring (or rescheduled) between the search and the lock is left alone."""
    return {"nextRunAt": {"$lte": request.now}, "repeatInterval": None, "repeatAt": None}


def start_fields(request: ClaimRequest) -> dict[str, Any]:
    """What a run's start writes for a one-off job, set by the claim that locks it at ``now``."""
    return {"lastRunAt": request.now, "nextRunAt": None}


def claim_update(request: ClaimRequest, token: str) -> dict[str, Any]:
    """Take the lock: a new ``lockedAt`` and a token only this claim knows."""
    return {"$set": lock_fields(request.now, token, request.owner)}


def lock_fields(now: datetime, token: str, owner: str | None) -> dict[str, Any]:
    """The fields a lock writes, by a claim or into a job inserted already locked (on the fly)."""
    fields: dict[str, Any] = {"lockedAt": now, "lockToken": token}
    if owner:
        fields["lastModifiedBy"] = owner
    return fields


def fence_filter(job_id: Any, locked_at: datetime | None, token: str | None) -> dict[str, Any]:
    """Match the job only while this worker's lock is the current one (by _id)."""
    if token is None:
        return {"_id": to_object_id(job_id)}
    return {"_id": to_object_id(job_id), "lockedAt": locked_at, "lockToken": token}


def fence_many_filter(job_ids: list[Any], locked_at: datetime, token: str) -> dict[str, Any]:
    """Match those of the jobs still locked by one lock (the same lockedAt and token), by _id."""
    return {"_id": {"$in": [to_object_id(i) for i in job_ids]}, "lockedAt": locked_at, "lockToken": token}


def _flatten(prefix: str, value: Mapping[str, Any], out: dict[str, Any]) -> None:
    for key, item in value.items():
        path = f"{prefix}.{key}"
        if isinstance(item, Mapping) and item and not any(str(k).startswith("$") for k in item):
            _flatten(path, item, out)
        else:
            out[path] = item


def due_filter(now: datetime) -> dict[str, Any]:
    """The jobs Agenda's getQueueSize counts: due before ``now`` (locked or not)."""
    return {"nextRunAt": {"$lt": now}}


def save_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What saving a job sets on a document that exists: everything but the worker-managed fields."""
    return {k: v for k, v in doc.items() if k not in PROCESSOR_FIELDS}


def saved_filter(job_id: Any, name: str) -> dict[str, Any]:
    """A save of a job read earlier updates its document only while it still holds that job's name."""
    return {"_id": to_object_id(job_id), "name": name}


def single_filter(name: str) -> dict[str, Any]:
    """The one recurring document of ``name`` (served by, and kept one by, agendapySingleJobName)."""
    return {"name": name, "type": "single"}


def single_update(existing: Mapping[str, Any], props: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The update of an existing recurring document when ``every()`` is called again.

    Its stored nextRunAt survives when it is due (Agenda's rule) or when the schedule itself did not
    change (so restarts never push a schedule forward); a stored nextRunAt that is not a date (another
    tool's) is replaced, never kept.
    """
    fields = dict(props)
    # Compare what is stored with what would be stored (BSON keeps milliseconds only).
    stored_form = bson.decode(bson.encode(dict(props)), codec_options=_STORED_FORM)
    unchanged = all(_same(existing.get(k), stored_form.get(k)) for k in SCHEDULE_FIELDS)
    next_run = props.get("nextRunAt")
    if isinstance(existing.get("nextRunAt"), datetime) and (unchanged or next_run is None or next_run <= now):
        fields.pop("nextRunAt", None)
    return {"$set": fields}


def _same(a: Any, b: Any) -> bool:
    """Equality of stored values; typed for booleans, as MongoDB's (True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def unique_filter(job: Job) -> dict[str, Any]:
    """The document a ``unique()`` job upserts into: its unique keys within its name."""
    assert job.unique_query is not None
    return {**job.unique_query, "name": job.name}


def unique_update(
    job: Job, doc: Mapping[str, Any], existing: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The upsert of a ``unique()`` job into :func:`unique_filter` (``doc``: the job's full document).

    ``existing`` (the document the filter matches now, read just before) only matters with debounce.
    """
    props = save_fields(doc)
    processor = {k: v for k, v in doc.items() if k in PROCESSOR_FIELDS}
    if job.debounce_options is not None:
        return debounce_update(job, props, processor, existing, now)
    if job.unique_insert_only:
        return {"$setOnInsert": dict(doc)}
    return {"$set": props, "$setOnInsert": processor}


def debounce_update(
    job: Job,
    props: Mapping[str, Any],
    processor: Mapping[str, Any],
    existing: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """Agenda's debounce: trailing pushes the run back (up to max_wait); leading keeps the first run."""
    options = job.debounce_options
    assert options is not None
    fields = dict(props)
    if existing is None:
        if options.strategy == "trailing":
            fields["nextRunAt"] = now + options.delay
        fields["debounceStartedAt"] = now
        return {"$set": fields, "$setOnInsert": dict(processor)}
    started = existing.get("debounceStartedAt")
    if not isinstance(started, datetime):
        started = None
    elif started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    if options.strategy == "leading":
        fields.pop("nextRunAt", None)  # the first save's run stands
        fields["debounceStartedAt"] = started or now
    elif options.max_wait is not None and started is not None and now - started >= options.max_wait:
        fields["nextRunAt"] = now  # waited long enough: run now, start a new debounce window
        fields["debounceStartedAt"] = None
    else:
        fields["nextRunAt"] = now + options.delay
        fields["debounceStartedAt"] = started or now
    return {"$set": fields}


def criteria_filter(criteria: JobCriteria) -> dict[str, Any]:
    """Agenda's RemoveJobsOptions as a filter; a ``data`` mapping matches by its leaves (dot notation)."""
    clauses: list[dict[str, Any]] = []
    if criteria.id is not None:
        clauses.append({"_id": to_object_id(criteria.id)})
    if criteria.ids is not None:
        clauses.append({"_id": {"$in": [to_object_id(i) for i in criteria.ids]}})
    if criteria.name is not None:
        clauses.append({"name": criteria.name})
    if criteria.names is not None:
        clauses.append({"name": {"$in": list(criteria.names)}})
    if criteria.not_names is not None:
        clauses.append({"name": {"$nin": list(criteria.not_names)}})
    if criteria.has_data:
        check_safe_filter(criteria.data, field="data")
        if isinstance(criteria.data, Mapping) and criteria.data:
            flat: dict[str, Any] = {}
            _flatten("data", criteria.data, flat)
            clauses.append(flat)
        else:
            clauses.append({"data": criteria.data})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def query_filter(query: JobQuery) -> dict[str, Any]:
    """The filter of ``query_jobs`` (without the state, which is computed)."""
    clauses = [criteria_filter(query.criteria)] if not query.criteria.is_empty() else []
    if query.search:
        clauses.append({"name": {"$regex": re.escape(query.search), "$options": "i"}})
    if not query.include_disabled:
        clauses.append({"disabled": {"$ne": True}})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


_SORT_FIELDS = {
    "next_run_at": "nextRunAt",
    "nextRunAt": "nextRunAt",
    "last_run_at": "lastRunAt",
    "lastRunAt": "lastRunAt",
    "last_finished_at": "lastFinishedAt",
    "lastFinishedAt": "lastFinishedAt",
    "priority": "priority",
    "name": "name",
    "data": "data",
}


def query_sort(sort: Mapping[str, str] | None) -> list[tuple[str, int]]:
    """``query_jobs`` sort; Agenda's default is most recent nextRunAt, then lastRunAt, first."""
    if not sort:
        return [("nextRunAt", -1), ("lastRunAt", -1)]
    out: list[tuple[str, int]] = []
    for key, direction in sort.items():
        if key not in _SORT_FIELDS:
            raise InvalidInput(
                "sort", dict(sort), f"cannot sort by {key!r} (known: {', '.join(_SORT_FIELDS)})"
            )
        if direction not in ("asc", "desc", 1, -1):
            raise InvalidInput("sort", dict(sort), f"direction of {key!r} must be 'asc' or 'desc'")
        out.append((_SORT_FIELDS[key], 1 if direction in ("asc", 1) else -1))
    return out

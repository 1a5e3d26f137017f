"""The document schema: Agenda 6's field names (camelCase) <-> Job attributes (snake_case).

Node Agenda reads and writes the same documents, so names and types here are Agenda's. Fields that
agendapy adds sit beside them and Node Agenda ignores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from ..job import Job, repeat_at_of

__all__ = [
    "AGENDA_FIELDS",
    "PROCESSOR_FIELDS",
    "SCHEDULE_FIELDS",
    "STATE_FIELDS",
    "STATE_KEYS",
    "document_from_job",
    "job_from_document",
    "to_object_id",
]

#: (attribute, document field) for every field Agenda 6 knows, in the order it writes them.
AGENDA_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "name"),
    ("priority", "priority"),
    ("next_run_at", "nextRunAt"),
    ("type", "type"),
    ("data", "data"),
    ("locked_at", "lockedAt"),
    ("last_run_at", "lastRunAt"),
    ("last_finished_at", "lastFinishedAt"),
    ("failed_at", "failedAt"),
    ("fail_count", "failCount"),
    ("fail_reason", "failReason"),
    ("repeat_interval", "repeatInterval"),
    ("repeat_timezone", "repeatTimezone"),
    ("repeat_at", "repeatAt"),
    ("disabled", "disabled"),
    ("progress", "progress"),
    ("debounce_started_at", "debounceStartedAt"),
    ("start_date", "startDate"),
    ("end_date", "endDate"),
    ("skip_days", "skipDays"),
    ("last_modified_by", "lastModifiedBy"),
)

#: Fields agendapy adds (Node Agenda leaves them alone).
EXTRA_FIELDS: tuple[tuple[str, str], ...] = (
    ("checkpoint_state", "checkpoint"),
    ("fixed_delay", "fixedDelay"),
    ("misfire", "misfire"),
    ("requires", "requires"),
    ("interval_started_at", "intervalStartedAt"),
    ("interval_ended_at", "intervalEndedAt"),
    ("waiting_for", "waitingFor"),
    ("waiting_reason", "waitingReason"),
    # Agenda's own field, but Agenda writes it only for fork-mode jobs: so do we.
    ("fork", "fork"),
)

#: The worker-managed fields of one run (Agenda's saveJobState, plus ours), as (attribute, field).
STATE_FIELDS: tuple[tuple[str, str], ...] = (
    ("locked_at", "lockedAt"),
    ("next_run_at", "nextRunAt"),
    ("last_run_at", "lastRunAt"),
    ("progress", "progress"),
    ("fail_reason", "failReason"),
    ("fail_count", "failCount"),
    ("failed_at", "failedAt"),
    ("last_finished_at", "lastFinishedAt"),
    ("last_modified_by", "lastModifiedBy"),
    ("checkpoint_state", "checkpoint"),
    ("interval_started_at", "intervalStartedAt"),
    ("interval_ended_at", "intervalEndedAt"),
    ("waiting_for", "waitingFor"),
    ("waiting_reason", "waitingReason"),
)
STATE_KEYS: dict[str, str] = dict(STATE_FIELDS)

#: What defines a recurring job's schedule: if none of it changed, re-calling every() keeps nextRunAt.
SCHEDULE_FIELDS: tuple[str, ...] = (
    "repeatInterval",
    "repeatTimezone",
    "repeatAt",
    "startDate",
    "endDate",
    "skipDays",
    "fixedDelay",
    "misfire",
)

#: Fields only the worker writes (Agenda's saveJobState); ``save()`` never overwrites them.
PROCESSOR_FIELDS = frozenset(
    {
        "lockedAt",
        "lastRunAt",
        "lastFinishedAt",
        "failedAt",
        "failCount",
        "failReason",
        "progress",
        "lockToken",
        "checkpoint",
        "intervalStartedAt",
        "intervalEndedAt",
        "waitingFor",
        "waitingReason",
    }
)

_DATE_FIELDS = frozenset(
    {
        "nextRunAt",
        "lockedAt",
        "lastRunAt",
        "lastFinishedAt",
        "failedAt",
        "debounceStartedAt",
        "startDate",
        "endDate",
        "intervalStartedAt",
        "intervalEndedAt",
    }
)


def to_object_id(value: Any) -> Any:
    """Job ids are strings in the API; ObjectId hex strings become ObjectIds in queries."""
    if isinstance(value, str) and ObjectId.is_valid(value):
        return ObjectId(value)
    return value


def _id_string(value: Any) -> str:
    return str(value)


def document_from_job(job: Job) -> dict[str, Any]:
    """Every Agenda field of ``job`` as a document (without ``_id``); unset optional fields are null."""
    doc: dict[str, Any] = {}
    for attr, key in AGENDA_FIELDS:
        doc[key] = repeat_at_of(job) if attr == "repeat_at" else getattr(job, attr)
    # agendapy's own fields are written only when used, so Agenda-only documents stay Agenda's shape.
    for attr, key in EXTRA_FIELDS:
        value = getattr(job, attr)
        if value is not None and value is not False:
            doc[key] = value
    return doc


def _as_utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def job_from_document(doc: Mapping[str, Any]) -> Job:
    """Build a Job from a stored document, tolerating what Node Agenda or older versions wrote."""
    values: dict[str, Any] = {}
    for attr, key in AGENDA_FIELDS + EXTRA_FIELDS:
        if key not in doc:
            continue
        value = doc[key]
        if key in _DATE_FIELDS:
            value = _as_utc(value) if isinstance(value, datetime) else None
        values[attr] = value
    values["fail_count"] = int(values.get("fail_count") or 0)
    values["priority"] = _int_or_zero(values.get("priority"))
    values["disabled"] = bool(values.get("disabled") or False)
    if values.get("type") not in ("normal", "single"):
        values["type"] = "normal"
    for list_attr in ("skip_days", "requires", "waiting_for"):
        if values.get(list_attr) is not None and not isinstance(values[list_attr], list):
            values[list_attr] = None
    values["fixed_delay"] = values.get("fixed_delay") is True
    values["fork"] = values.get("fork") is True
    if values.get("misfire") not in ("once", "skip", "all"):
        values["misfire"] = None
    values.setdefault("name", "")
    job = Job(**values)
    job.id = _id_string(doc["_id"]) if "_id" in doc else None
    return job


def _int_or_zero(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return 0

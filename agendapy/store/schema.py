"""The document schema: Agenda 6's field names (camelCase) <-> Job attributes (snake_case).

Node Agenda reads and writes the same documents, so names and types here are Agenda's. Fields that
agendapy adds sit beside them and Node Agenda ignores them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from bson import ObjectId

from ..errors import InvalidInput
from ..job import Job, repeat_at_of

log = logging.getLogger("agendapy.store")

__all__ = [
    "AGENDA_FIELDS",
    "PROCESSOR_FIELDS",
    "SCHEDULE_FIELDS",
    "STATE_FIELDS",
    "STATE_KEYS",
    "check_job_fields",
    "document_from_job",
    "job_from_document",
    "log_unreadable",
    "read_document",
    "to_object_id",
    "unreadable_failure",
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
    ("fail_stack", "failStack"),
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
    ("fail_stack", "failStack"),
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
        "failStack",
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


_INT64 = (-(2**63), 2**63 - 1)


def to_object_id(value: Any) -> Any:
    """Job ids are strings in the API; ObjectId hex strings become ObjectIds in queries.

    Anything but a string or an ObjectId is refused, so no mapping such as ``{"$ne": None}`` ever
    becomes an ``_id`` filter.
    """
    if isinstance(value, str):
        return ObjectId(value) if ObjectId.is_valid(value) else value
    if value is None or isinstance(value, ObjectId):
        return value
    raise InvalidInput("id", value, "must be a job id (a string or ObjectId)")


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


class _Unreadable(Exception):
    """A stored value agendapy cannot use for its field (internal to reading one document)."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_int(value: Any) -> int:
    if isinstance(value, bool) or not _number(value) or (isinstance(value, float) and not value.is_integer()):
        raise _Unreadable("must be a whole number")
    number = int(value)
    if not _INT64[0] <= number <= _INT64[1]:
        raise _Unreadable("must fit a 64-bit integer")
    return number


def _read_date(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise _Unreadable("must be a date")
    return cast(datetime, _as_utc(value))


def _read_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Unreadable("must be a string")
    return value


def _read_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Unreadable("must be true or false")
    return value


def _read_number(value: Any) -> float:
    if not _number(value):
        raise _Unreadable("must be a finite number")
    return cast(float, value)


def _read_interval(value: Any) -> str | int:
    # Agenda stores a human or cron string, or milliseconds as a number.
    if isinstance(value, str):
        return value
    try:
        return _read_int(value)
    except _Unreadable:
        raise _Unreadable("must be an interval string or whole milliseconds") from None


def _read_type(value: Any) -> str:
    if value not in ("normal", "single"):
        raise _Unreadable("must be 'normal' or 'single'")
    return cast(str, value)


def _read_misfire(value: Any) -> str:
    if value not in ("once", "skip", "all"):
        raise _Unreadable("must be 'once', 'skip' or 'all'")
    return cast(str, value)


def _read_int_list(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise _Unreadable("must be a list of whole numbers")
    return [_read_int(item) for item in value]


def _read_str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Unreadable("must be a list of strings")
    return list(value)


def _read_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Unreadable("must be a job name (a non-empty string)")
    return value


def _read_any(value: Any) -> Any:
    return value


#: How each stored field is read (a value of another type makes the document unreadable). ``None`` is
#: always readable and means "unset", except for the fields in ``_REQUIRED``.
_READERS: dict[str, Callable[[Any], Any]] = {
    "name": _read_name,
    "data": _read_any,
    "type": _read_type,
    "priority": _read_int,
    "failCount": _read_int,
    "failReason": _read_str,
    "repeatInterval": _read_interval,
    "repeatTimezone": _read_str,
    "repeatAt": _read_str,
    "disabled": _read_bool,
    "progress": _read_number,
    "lastModifiedBy": _read_str,
    "skipDays": _read_int_list,
    "checkpoint": _read_any,
    "fixedDelay": _read_bool,
    "misfire": _read_misfire,
    "requires": _read_str_list,
    "waitingFor": _read_str_list,
    "waitingReason": _read_str,
    "failStack": _read_str,
    "fork": _read_bool,
    **dict.fromkeys(_DATE_FIELDS, _read_date),
}
_REQUIRED = frozenset({"name"})
#: What an unset (null or missing) field reads as, where that is not None.
_UNSET_VALUES: dict[str, Any] = {"fail_count": 0, "priority": 0, "disabled": False, "type": "normal"}


def read_document(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The Job attributes stored in ``doc`` and a description of each field that cannot be read.

    Never raises: a field that cannot be read is left unset (its default) and described instead.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for attr, key in AGENDA_FIELDS + EXTRA_FIELDS:
        value = doc.get(key)
        if value is None:
            if key in _REQUIRED:
                problems.append(f"{key} is missing")
            continue
        try:
            values[attr] = _READERS[key](value)
        except _Unreadable as exc:
            problems.append(f"{key} {_show(value)}: {exc}")
    for attr, default in _UNSET_VALUES.items():
        values.setdefault(attr, default)
    values["fork"] = values.get("fork") is True
    values.setdefault("name", "")
    values["fixed_delay"] = values.get("fixed_delay") is True
    return values, problems


def check_job_fields(job: Job) -> None:
    """Raise :class:`InvalidInput` naming the first field of ``job`` that would be stored with a type
    agendapy (or Node Agenda) cannot read back, so ``save()`` never writes a document that jams a worker.
    """
    for attr, key in AGENDA_FIELDS + EXTRA_FIELDS:
        value = repeat_at_of(job) if attr == "repeat_at" else getattr(job, attr)
        if value is None and key not in _REQUIRED and attr not in _UNSET_VALUES:
            continue
        try:
            _READERS[key](value)
        except _Unreadable as exc:
            hint = " (use job.schedule() for text such as 'tomorrow')" if attr == "next_run_at" else ""
            raise InvalidInput(attr, value, f"{exc}{hint}") from None


def job_from_document(doc: Mapping[str, Any]) -> Job:
    """Build a Job from a stored document, whatever another tool or a corruption put there.

    Never raises. Fields that cannot be read keep their defaults and are described in
    ``job.unreadable``, which makes the job ``broken``: listings show it, and a worker that claims it
    fails it with that reason instead of running it.
    """
    values, problems = read_document(doc)
    job = Job(**values)
    job.unreadable = "; ".join(problems) if problems else None
    if not job.name and doc.get("name") is not None:
        job.foreign_name = _show(doc.get("name"))
    job.id = _id_string(doc["_id"]) if "_id" in doc else None
    return job


def unreadable_failure(job: Job, now: datetime) -> dict[str, Any]:
    """The fields a worker writes to fail (and unlock) a claimed job it cannot read.

    Only fields Node Agenda reads with these types are written, and none of the unreadable ones except
    ``failReason`` (whose old value the reason quotes): ``nextRunAt`` null keeps the job from being claimed
    again, so it is reported once, until someone repairs or removes it.
    """
    reason = f"agendapy cannot read this job's document: {job.unreadable}"
    job.fail_reason = reason
    job.failed_at = now
    job.next_run_at = None
    job.locked_at = None
    values: dict[str, Any] = {
        "failReason": reason,
        "failedAt": now,
        "nextRunAt": None,
        "lockedAt": None,
        "lockToken": None,
    }
    claimed = job.lease.claimed_start if job.lease is not None else None
    if claimed is not None:
        # The claim wrote a start for a run that never happens: put back the lastRunAt it replaced.
        values["lastRunAt"] = claimed.last_run_at
    return values


def log_unreadable(job: Job) -> None:
    """Report, once, that a claimed job was failed because its document cannot be read."""
    log.warning("job %r (%s) failed: %s", job.name, job.id, job.fail_reason)


def _show(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a value too odd to print must not hide the problem
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."

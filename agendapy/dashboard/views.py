"""What the dashboard shows, as plain JSON-able dicts: the same dicts feed the HTML templates and /api."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse

from ..errors import InvalidInput, NotRunning
from ..job import Job, JobState, compute_job_state

if TYPE_CHECKING:
    from ..agenda import Agenda
    from ..store.runs import RunRecord

__all__ = [
    "FILTER_STATES",
    "OVERVIEW_STATES",
    "SafeJSONResponse",
    "activity_charts",
    "dumps",
    "fleet",
    "is_late",
    "job_detail",
    "job_logs",
    "job_summary",
    "jsonable",
    "late_jobs",
    "list_jobs",
    "overview",
    "parse_count",
    "pretty_json",
    "process_stats",
    "run_record",
    "workers",
]

#: Columns of the overview, in the order a job moves through them; "paused" counts disabled jobs.
OVERVIEW_STATES = (
    "scheduled",
    "queued",
    "running",
    "waiting",
    "repeating",
    "completed",
    "failed",
    "broken",
    "paused",
)
#: What the job list can filter by: the computed states, "paused" and "late".
FILTER_STATES = (*(s.value for s in JobState), "paused", "late")

#: A job due longer ago than this that no worker has taken is late: no worker that defines its name is
#: running, or they are all busy.
LATE_AFTER = timedelta(minutes=1)
#: Late jobs looked at per state, oldest first (the overview says "at least" beyond it).
LATE_SCAN = 200

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


def iso(value: datetime | None) -> str | None:
    """An aware UTC datetime as ISO 8601 with a ``Z`` (what JavaScript's Date parses everywhere)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """``value`` with every BSON or Python type JSON cannot carry turned into a plain one.

    ObjectIds, Decimals and unknown objects become strings, bytes become base64, datetimes ISO strings,
    timedeltas seconds; NaN and infinities become strings, since JSON has no spelling for them.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    if callable(value):
        return getattr(value, "__qualname__", None) or type(value).__name__
    return str(value)


def dumps(value: Any) -> str:
    """Compact JSON with ``<``, ``>`` and ``&`` escaped, so no response ever holds markup from the database
    (even a browser that ignored the content type would find no tag to parse)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class SafeJSONResponse(JSONResponse):
    """A JSON response rendered with :func:`dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


def pretty_json(value: Any) -> str:
    """Indented JSON text for display (never parsed as HTML: templates escape it, scripts set text)."""
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False, sort_keys=False)


def parse_count(raw: str | None, field: str, *, default: int, low: int, high: int) -> int:
    """A whole number from a query string, within [low, high]."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(field, raw, "must be a whole number") from None
    if not low <= value <= high:
        raise InvalidInput(field, raw, f"must be from {low} to {high}")
    return value


def is_late(job: Job, now: datetime) -> bool:
    """Due more than :data:`LATE_AFTER` ago, enabled, and neither running nor waiting for other jobs."""
    return (
        not job.disabled
        and job.locked_at is None
        and not job.waiting_for
        and isinstance(job.next_run_at, datetime)
        and job.next_run_at < now - LATE_AFTER
    )


async def late_jobs(
    agenda: Agenda, now: datetime, *, name: str | None = None, search: str | None = None
) -> tuple[list[Job], bool]:
    """The late jobs, oldest due first, and whether there may be more than were looked at."""
    found: list[Job] = []
    capped = False
    for state in (JobState.QUEUED, JobState.REPEATING, JobState.FAILED):
        result = await agenda.query_jobs(
            name=name,
            search=search,
            state=state,
            include_disabled=False,
            sort={"nextRunAt": "asc"},
            limit=LATE_SCAN,
        )
        found += [job for job in result.jobs if is_late(job, now)]
        capped = capped or result.total > LATE_SCAN
    found.sort(key=lambda job: (job.next_run_at or now, job.name))
    return found, capped


def _late_by_name(agenda: Agenda, jobs: list[Job], capped: bool) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for job in jobs:
        row = rows.get(job.name)
        if row is None:
            defined = job.name in agenda.definitions if agenda.definitions else None
            row = rows[job.name] = {
                "name": job.name,
                "count": 0,
                "oldest": iso(job.next_run_at),
                "defined": defined,
            }
        row["count"] += 1
    return {
        "total": len(jobs),
        "capped": capped,
        "names": list(rows.values()),
        "after": LATE_AFTER.total_seconds(),
    }


def job_summary(job: Job, now: datetime) -> dict[str, Any]:
    """The fields of a job that lists and tables show."""
    return {
        "id": job.id,
        "name": job.display_name,
        # What links to the list of this name use: "" (no name filter) for a name that is a label.
        "filter_name": job.name,
        "state": compute_job_state(job, now).value,
        "late": is_late(job, now),
        "disabled": bool(job.disabled),
        "type": job.type,
        "priority": job.priority,
        "next_run_at": iso(job.next_run_at),
        "last_run_at": iso(job.last_run_at),
        "last_finished_at": iso(job.last_finished_at),
        "failed_at": iso(job.failed_at),
        "fail_count": job.fail_count,
        "fail_reason": job.fail_reason,
        "repeat_interval": jsonable(job.repeat_interval),
        "repeat_timezone": job.repeat_timezone,
        "locked_at": iso(job.locked_at),
        "progress": jsonable(job.progress),
        "last_modified_by": job.last_modified_by,
        "unreadable": job.unreadable,
    }


def job_detail(job: Job, now: datetime) -> dict[str, Any]:
    """Every stored field of a job, plus its data and checkpoint as pretty JSON text."""
    fields = {key: jsonable(value) for key, value in job.to_dict().items()}
    detail = {**fields, **job_summary(job, now)}
    detail["data_json"] = pretty_json(job.data)
    detail["checkpoint_json"] = None if job.checkpoint_state is None else pretty_json(job.checkpoint_state)
    detail["fields"] = sorted(fields)
    return detail


def run_record(record: RunRecord) -> dict[str, Any]:
    """One run of the history, with its duration in seconds when it finished."""
    out = {key: jsonable(value) for key, value in dataclasses.asdict(record).items()}
    if record.finished_at is not None:
        out["duration"] = max((record.finished_at - record.started_at).total_seconds(), 0.0)
    else:
        out["duration"] = None
    return out


async def overview(agenda: Agenda, now: datetime | None = None) -> dict[str, Any]:
    """Counts per job name and state, the totals over all names, and the late jobs per name."""
    now = now or datetime.now(UTC)
    names = []
    totals = dict.fromkeys(("total", *OVERVIEW_STATES), 0)
    for entry in await agenda.jobs_overview():
        row = {
            "name": entry["name"],
            "filter_name": "" if entry.get("unreadable_name") else entry["name"],
            "total": int(entry.get("total", 0)),
        }
        for state in OVERVIEW_STATES:
            row[state] = int(entry.get(state, 0))
        for key in totals:
            totals[key] += row[key]
        names.append(row)
    late, capped = await late_jobs(agenda, now)
    totals["late"] = len(late)
    return {"names": names, "totals": totals, "late": _late_by_name(agenda, late, capped)}


async def list_jobs(
    agenda: Agenda,
    *,
    name: str | None,
    state: str | None,
    search: str | None,
    page: int,
    limit: int,
    now: datetime,
) -> dict[str, Any]:
    """One page of jobs matching the filters (newest ``nextRunAt`` first, as Agendash lists them)."""
    skip = (page - 1) * limit
    if state == "paused":
        # query_jobs has no "disabled only" criterion: filter the matching jobs here and page them.
        everything = await agenda.query_jobs(name=name, search=search)
        paused = [job for job in everything.jobs if job.disabled]
        jobs, total = paused[skip : skip + limit], len(paused)
    elif state == "late":
        late, _ = await late_jobs(agenda, now, name=name, search=search)
        jobs, total = late[skip : skip + limit], len(late)
    else:
        result = await agenda.query_jobs(name=name, state=state, search=search, skip=skip, limit=limit)
        jobs, total = result.jobs, result.total
    return {
        "jobs": [job_summary(job, now) for job in jobs],
        "total": total,
        "page": page,
        "pages": max(math.ceil(total / limit), 1),
        "limit": limit,
        "first": skip + 1 if jobs else 0,
        "last": skip + len(jobs) if jobs else 0,
        "filters": {"name": name, "state": state, "search": search},
    }


async def workers(agenda: Agenda, now: datetime) -> dict[str, Any]:
    """The locked jobs grouped by the worker that locked them (``lastModifiedBy``), oldest lock first."""
    locked: list[Job] = []
    for state in (JobState.RUNNING, JobState.WAITING):
        locked += [job for job in (await agenda.query_jobs(state=state)).jobs if job.locked_at is not None]
    groups: dict[str, list[dict[str, Any]]] = {}
    for job in sorted(locked, key=lambda j: (j.locked_at or now, j.name)):
        assert job.locked_at is not None
        age = max((now - job.locked_at).total_seconds(), 0.0)
        lifetime = _lock_lifetime(agenda, job.name)
        entry = job_summary(job, now)
        entry["lock_age"] = age
        entry["lock_lifetime"] = lifetime
        entry["lock_expired"] = age > lifetime
        groups.setdefault(job.last_modified_by or "", []).append(entry)
    return {
        "workers": [
            {"name": worker, "jobs": jobs, "count": len(jobs)}
            for worker, jobs in sorted(groups.items(), key=lambda item: item[0])
        ],
        "locked": len(locked),
        "process": await process_stats(agenda),
        "fleet": await fleet(agenda),
    }


async def fleet(agenda: Agenda) -> list[dict[str, Any]]:
    """The registered worker processes (live, then lost with the jobs they hold, then stopped)."""
    found = await agenda.workers(include_stopped=True)
    rows = []
    for worker in found:
        row = worker.to_json()
        row["runs"] = ", ".join(worker.definitions)
        row["held"] = ", ".join(job["name"] for job in worker.held_jobs)
        rows.append(row)
    return rows


async def job_logs(agenda: Agenda, job_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest job log entries of one job (Agenda's ``agenda_logs``), newest first."""
    try:
        result = await agenda.get_logs(job_id=job_id, limit=limit)
    except NotImplementedError:  # a job store without a job log
        return []
    return [
        {
            "timestamp": iso(entry.timestamp),
            "level": entry.level,
            "event": entry.event,
            "message": entry.message,
            "duration": None if entry.duration is None else entry.duration / 1000,
            "agenda_name": entry.agenda_name,
        }
        for entry in result.entries
    ]


#: The charts' drawing box (SVG user units); the page scales it to its width.
CHART_WIDTH = 600
CHART_HEIGHT = 120


def _bars(values: list[int]) -> tuple[list[dict[str, float]], int]:
    top = max([*values, 1])
    slot = CHART_WIDTH / max(len(values), 1)
    bars = []
    for i, value in enumerate(values):
        height = round(value / top * (CHART_HEIGHT - 4), 2)
        bars.append(
            {
                "x": round(i * slot + 1, 2),
                "y": round(CHART_HEIGHT - height, 2),
                "w": round(max(slot - 2, 1), 2),
                "h": height,
                "v": value,
            }
        )
    return bars, top


def activity_charts(series: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput, failures and queue depth per minute, as SVG geometry (bars and a line) that the
    template draws and the page script redraws: no chart library, nothing inline to run."""
    done = [entry["done"] for entry in series]
    failed = [entry["failed"] for entry in series]
    queued = [entry["queued"] for entry in series]
    done_bars, done_top = _bars(done)
    failed_bars, failed_top = _bars(failed)
    known = [q for q in queued if q is not None]
    queue_top = max([*known, 1])
    slot = CHART_WIDTH / max(len(series), 1)
    points = " ".join(
        f"{round(i * slot + slot / 2, 2)},{round(CHART_HEIGHT - q / queue_top * (CHART_HEIGHT - 4), 2)}"
        for i, q in enumerate(queued)
        if q is not None
    )
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "from": iso(series[0]["minute"]) if series else None,
        "to": iso(series[-1]["minute"]) if series else None,
        "throughput": {"bars": done_bars, "max": done_top, "total": sum(done)},
        "failures": {"bars": failed_bars, "max": failed_top, "total": sum(failed)},
        "queue": {"points": points, "max": queue_top, "last": known[-1] if known else None},
    }


def _lock_lifetime(agenda: Agenda, name: str) -> float:
    # What this process knows: the definition's lock lifetime, else the Agenda's default. Other workers
    # may define it otherwise; the flag is a hint that a worker died, not a verdict.
    definition = agenda.definitions.get(name)
    lifetime = definition.lock_lifetime if definition is not None else agenda.default_lock_lifetime
    return lifetime.total_seconds()


async def process_stats(agenda: Agenda) -> dict[str, Any] | None:
    """``running_stats()`` of this process when it runs a worker too, else None."""
    try:
        stats = await agenda.running_stats()
    except NotRunning:
        return None
    out: dict[str, Any] = jsonable(dataclasses.asdict(stats))
    for status in out.get("job_status", {}).values():
        status.pop("config", None)  # the handler and its options are code, not status
    return out

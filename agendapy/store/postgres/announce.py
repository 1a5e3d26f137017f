"""What agendapy's writes announce on PostgreSQL, in Node Agenda's notification formats (see
:mod:`agendapy.store.postgres.notify`): the jobs channel's wake-ups and the state channel's run steps."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from ...job import Job
from .schema import to_millis

__all__ = [
    "Announcements",
    "claimable",
    "due_notes",
    "due_payload",
    "iso",
    "publish",
    "state_channel",
    "state_payload",
]

#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more (and with them the write that sends
#: them): an error text is cut to this many characters, and left out of a payload still too long.
_MAX_ERROR_TEXT = 1000
_MAX_PAYLOAD_BYTES = 7900
#: How many runs' starts are remembered (to announce their ends).
_REMEMBERED_STARTS = 10_000


def state_channel(channel: str) -> str:
    """The channel of run-state notifications beside a jobs channel (Node's ``<channel>:state``)."""
    return f"{channel}:state"


def iso(value: datetime) -> str:
    """A date as JavaScript's ``toISOString`` writes it: UTC, milliseconds, ``Z``."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _compact(fields: Mapping[str, Any]) -> str:
    kept = {k: v for k, v in fields.items() if v is not None}
    payload = json.dumps(kept, separators=(",", ":"), ensure_ascii=False)
    if len(payload.encode()) > _MAX_PAYLOAD_BYTES:
        kept.pop("error", None)
        payload = json.dumps(kept, separators=(",", ":"), ensure_ascii=False)
    return payload


def due_payload(
    job_id: str, name: str, next_run_at: datetime | None, priority: int, source: str | None
) -> str:
    """The jobs channel's payload for a job that may have become claimable (Node's format)."""
    return json.dumps(
        {
            "jobId": job_id,
            "jobName": name,
            "nextRunAt": None if next_run_at is None else iso(next_run_at),
            "priority": priority,
            "timestamp": iso(datetime.now(UTC)),
            **({"source": source} if source else {}),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def state_payload(kind: str, job_id: str, name: str, source: str | None, **fields: Any) -> str:
    """A state channel payload (Node's format): ``fields`` are the step's, dates as datetimes."""
    values = {k: iso(v) if isinstance(v, datetime) else v for k, v in fields.items()}
    if isinstance(values.get("error"), str) and len(values["error"]) > _MAX_ERROR_TEXT:
        values["error"] = values["error"][:_MAX_ERROR_TEXT] + " ... (cut)"
    return _compact(
        {"type": kind, "jobId": job_id, "jobName": name, "timestamp": iso(datetime.now(UTC)),
         "source": source, **values}
    )  # fmt: skip


async def publish(conn: psycopg.AsyncConnection[Any], notes: Sequence[tuple[str, str]]) -> None:
    """Send ``(channel, payload)`` notifications in one statement (delivered when it commits)."""
    if notes:
        channels, payloads = zip(*notes, strict=True)
        await conn.execute(
            "SELECT count(pg_notify(c, p)) FROM unnest(%s::text[], %s::text[]) AS n(c, p)",
            [list(channels), list(payloads)],
        )


def claimable(doc: Mapping[str, Any]) -> bool:
    """Whether a document, as written, is one a claim could take (unlocked, enabled, with a next run)."""
    return (
        doc.get("lockedAt") is None and doc.get("nextRunAt") is not None and doc.get("disabled") is not True
    )


def due_notes(channel: str, docs: Iterable[Mapping[str, Any]], source: str | None) -> list[tuple[str, str]]:
    """The jobs channel's notifications for written documents a claim could now take (saved, inserted,
    re-enabled): one per job name, its earliest next run, so a bulk insert does not flood every
    listener (a wake-up is about a name: the worker then claims whatever of it is due).

    ``PostgresJobStore`` sends them (:func:`publish`) after such writes, as Node's ``Job.save`` does.
    """
    earliest: dict[str, Mapping[str, Any]] = {}
    for doc in docs:
        name = doc.get("name")
        if "_id" not in doc or not isinstance(name, str) or not claimable(doc):
            continue
        kept = earliest.get(name)
        if kept is None or doc["nextRunAt"] < kept["nextRunAt"]:
            earliest[name] = doc
    return [
        (channel, due_payload(str(doc["_id"]), name, doc["nextRunAt"], _priority(doc), source))
        for name, doc in earliest.items()
    ]


def _priority(doc: Mapping[str, Any]) -> int:
    priority = doc.get("priority")
    return priority if isinstance(priority, int) and not isinstance(priority, bool) else 0


class Announcements:
    """What a fenced write announces, as Node's worker would for the same step of a run.

    The start of a run is remembered (job id -> lastRunAt) so that its end is announced: a write that
    unlocks a job without a start this process wrote (a skipped run, one waiting for its
    requirements, a hand-back) ends no run.
    """

    def __init__(self) -> None:
        self._started: OrderedDict[str, datetime] = OrderedDict()

    def notes(self, job: Job, values: Mapping[str, Any]) -> tuple[str | None, list[str]]:
        """The jobs channel payload (a job left claimable) and the state payloads of one write."""
        job_id, source = str(job.id), values.get("lastModifiedBy") or job.last_modified_by
        due = None
        if "lockedAt" in values and values["lockedAt"] is None:
            next_run = values.get("nextRunAt", job.next_run_at)
            # Sent only if the row, as written, is enabled with a next run (decided in the statement).
            if next_run is not None:
                due = due_payload(job_id, job.name, next_run, job.priority, source)
        steps: list[str] = []
        if values.get("lockedAt") is not None:
            started = values.get("lastRunAt")
            if started is not None and started != self._started.get(job_id):
                self._started.pop(job_id, None)
                self._started[job_id] = started
                while len(self._started) > _REMEMBERED_STARTS:
                    self._started.popitem(last=False)
                steps.append(state_payload("start", job_id, job.name, source, lastRunAt=started))
            elif values.get("progress") is not None and job_id in self._started:
                steps.append(state_payload("progress", job_id, job.name, source, progress=values["progress"]))
        elif "lockedAt" in values and values.get("lastFinishedAt") is not None and job_id in self._started:
            steps = self._end(job, values, job_id, source, self._started.pop(job_id))
        return due, steps

    def forget(self, job_ids: Iterable[str]) -> None:
        """Drop remembered starts whose notification was lost: their runs' ends are not announced
        either (a listener never sees an end without its start)."""
        for job_id in job_ids:
            self._started.pop(job_id, None)

    @staticmethod
    def _end(
        job: Job, values: Mapping[str, Any], job_id: str, source: str | None, started: datetime
    ) -> list[str]:
        """``success`` or ``fail`` [``retry``] and ``complete``, as Node's worker announces a run's end."""
        finished = values["lastFinishedAt"]
        times = {"lastRunAt": started, "lastFinishedAt": finished}
        duration = int((finished - started).total_seconds() * 1000)
        failed_at = values.get("failedAt")
        steps = []
        if failed_at is not None and to_millis(failed_at) == to_millis(finished):
            next_run = values.get("nextRunAt")
            retry = (
                next_run is not None and not job.repeat_interval and not job.repeat_at and next_run > finished
            )
            retry_fields = {"retryAt": next_run, "retryAttempt": values.get("failCount")} if retry else {}
            steps.append(
                state_payload(
                    "fail",
                    job_id,
                    job.name,
                    source,
                    error=values.get("failReason"),
                    failCount=values.get("failCount"),
                    **retry_fields,
                    **times,
                )
            )
            if retry:
                steps.append(
                    state_payload(
                        "retry", job_id, job.name, source, error=values.get("failReason"), **retry_fields
                    )
                )
        else:
            steps.append(state_payload("success", job_id, job.name, source, duration=duration, **times))
        steps.append(state_payload("complete", job_id, job.name, source, duration=duration, **times))
        return steps

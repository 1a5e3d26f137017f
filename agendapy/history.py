"""Run history as the façade asks for it: ``agenda.runs(...)`` arguments checked into one query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import schedule as sched
from .errors import InvalidInput
from .store.runs import RunStatus
from .validate import check_count, check_id

__all__ = ["RunsQuery", "check_runs_query"]

_STATUSES = ("running", "succeeded", "failed", "skipped")


@dataclass(frozen=True)
class RunsQuery:
    """A checked ``runs()`` query, as the run store takes it (``store.runs.query(**vars(query))``)."""

    name: str | None
    since: datetime | None
    until: datetime | None
    status: RunStatus | None
    limit: int
    job_id: str | None


def check_runs_query(name: Any, *, since: Any, until: Any, status: Any, limit: Any, job_id: Any) -> RunsQuery:
    """Check the arguments of ``runs()``; raises ``InvalidInput`` naming the first bad one."""
    if status is not None and status not in _STATUSES:
        raise InvalidInput("status", status, "must be running, succeeded, failed or skipped")
    limit = check_count(limit, field="limit")
    if name is not None and not isinstance(name, str):
        # A plain string only (a mapping would be a filter); any string, so the history of a name
        # written by another tool can still be read.
        raise InvalidInput("name", name, "must be a job name (a string)")
    return RunsQuery(
        name=name,
        since=None if since is None else sched.parse_when(since, field="since"),
        until=None if until is None else sched.parse_when(until, field="until"),
        status=status,
        limit=limit,
        job_id=None if job_id is None else str(check_id(job_id, field="job_id")),
    )

"""The checks ``Agenda`` runs on jobs before writing them (``save_job``) and on ``every``'s and
``schedule``'s arguments, so the façade only says what happens in which order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from . import schedule as sched
from .errors import InvalidInput
from .job import Job
from .store.schema import check_job_fields
from .validate import check_bson, check_job_name, check_name_list, check_priority, parse_priority

__all__ = ["apply_constraints", "check_every_options", "check_savable", "insertable_due"]


def check_savable(job: Job) -> None:
    """``InvalidInput`` unless ``job`` may be written as it is (its ``priority`` is normalised)."""
    check_job_name(job.name)
    check_bson(job.data)
    check_bson(job.checkpoint_state, field="checkpoint_state")
    if job.unique_query is not None:  # an upsert sends the key and the document together
        check_bson([job.unique_query, job.data, job.checkpoint_state], field="data")
    if not isinstance(job.priority, int) or isinstance(job.priority, bool):
        job.priority = parse_priority(job.priority)
    check_priority(job.priority)
    check_job_fields(job)


def insertable_due(job: Job, now: datetime) -> bool:
    """Whether saving ``job`` is a plain insert of an enabled job due by ``now``: the case that a
    started worker may lock on the fly (updates, ``every`` and ``unique`` upserts wake it instead)."""
    return (
        job.id is None
        and job.type != "single"
        and job.unique_query is None
        and not job.disabled
        and job.next_run_at is not None
        and job.next_run_at <= now
    )


def check_every_options(
    interval: Any,
    *,
    fixed_delay: bool,
    misfire: str | None,
    requires: Sequence[str] | None,
) -> list[str] | None:
    """``InvalidInput`` for a combination ``every`` refuses; returns the checked ``requires``."""
    parsed = sched.parse_interval(interval, field="interval")
    if fixed_delay and parsed.every is None:
        raise InvalidInput("fixed_delay", interval, "a fixed delay needs a duration, not a cron expression")
    if misfire is not None and misfire not in ("once", "skip", "all"):
        raise InvalidInput("misfire", misfire, "must be 'once', 'skip' or 'all'")
    required = None if requires is None else check_name_list(requires, field="requires")
    if fixed_delay and (required or misfire in ("skip", "all")):
        raise InvalidInput("fixed_delay", fixed_delay, "cannot be combined with requires or misfire skip/all")
    return required


def apply_constraints(
    job: Job,
    start_date: datetime | str | None,
    end_date: datetime | str | None,
    skip_days: Sequence[int] | None,
) -> None:
    """Set ``every``'s and ``schedule``'s ``start_date``, ``end_date`` and ``skip_days`` on ``job``."""
    if start_date is not None:
        job.start_date = sched.parse_when(start_date, field="start_date")
    if end_date is not None:
        job.end_date = sched.parse_when(end_date, field="end_date")
    job.skip_days = sched.parse_skip_days(skip_days)

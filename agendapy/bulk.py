"""Bulk inserts (``insert_many``, ``now_many``, ``schedule_many``): which jobs may go in one round trip."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import InvalidInput
from .job import Job
from .store.schema import check_job_fields
from .validate import check_bson, check_job_name, check_priority

__all__ = ["check_new_jobs", "one_per_name"]


def check_new_jobs(jobs: Sequence[Job]) -> list[Job]:
    """The jobs of one ``insert_many``: new plain one-off or recurring jobs made by ``create`` (a
    ``unique``/``every`` job needs an upsert of its own), each with storable fields."""
    checked = list(jobs)
    for job in checked:
        if not isinstance(job, Job):
            raise InvalidInput("jobs", job, "must be Jobs made by agenda.create")
        if job.id is not None or job.type == "single" or job.unique_query is not None:
            raise InvalidInput("jobs", job, "insert_many takes new jobs without unique() or every()")
        check_job_name(job.name)
        check_bson(job.data)
        check_priority(job.priority)
        check_job_fields(job)
    return checked


def one_per_name(jobs: Iterable[Job]) -> list[Job]:
    """The first job of each name (enough to decide whether a worker wakes up for that name)."""
    first: dict[str, Job] = {}
    for job in jobs:
        first.setdefault(job.name, job)
    return list(first.values())

"""``Agenda.query_jobs``: its arguments checked into a ``JobQuery``, and the state filter the store
cannot apply (a job's state is computed from several fields at a given time)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from . import schedule as sched
from .errors import InvalidInput
from .filters import JobFilter, job_criteria
from .job import Job, JobState, compute_job_state
from .store.base import JobQuery, JobStore
from .validate import check_count, check_search

__all__ = ["checked_query", "find_jobs"]


def checked_query(
    filters: JobFilter,
    *,
    state: JobState | str | None,
    search: str | None,
    include_disabled: bool,
    sort: Mapping[str, Literal["asc", "desc"]] | None,
    skip: int,
    limit: int,
) -> tuple[JobQuery, JobState | None]:
    """The store query and the wanted state (None: any), or ``InvalidInput`` naming the argument."""
    criteria = job_criteria(filters, method="query_jobs")
    skip = check_count(skip, field="skip")
    limit = check_count(limit, field="limit")
    if search is not None:
        search = check_search(search)
    if sort is not None and not isinstance(sort, Mapping):
        raise InvalidInput("sort", sort, 'must be a mapping such as {"nextRunAt": "desc"}')
    wanted: JobState | None = None
    if state is not None:
        try:
            wanted = JobState(state)
        except ValueError:
            known = ", ".join(s.value for s in JobState)
            raise InvalidInput("state", state, f"must be one of {known}") from None
    query = JobQuery(
        criteria=criteria,
        search=search,
        include_disabled=include_disabled,
        sort=sort,
        skip=skip,
        limit=limit,
    )
    return query, wanted


async def find_jobs(store: JobStore, query: JobQuery, wanted: JobState | None) -> tuple[list[Job], int]:
    """The page of jobs ``query`` asks for and how many matched in all; with ``wanted``, only the
    jobs in that state now (read whole, then paged here)."""
    if wanted is None:
        return await store.query(query)
    now = sched.utcnow()
    matching = [j for j in await store.fetch_all_states(query) if compute_job_state(j, now) is wanted]
    end = query.skip + query.limit if query.limit else None
    return matching[query.skip : end], len(matching)

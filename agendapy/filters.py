"""The job filter shared by ``cancel``, ``disable``, ``enable`` and ``query_jobs``: typed once here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from .store.base import JobCriteria
from .validate import check_id, check_ids, check_job_name, check_names, check_safe_filter

__all__ = ["JobFilter", "job_criteria"]


class JobFilter(TypedDict, total=False):
    """Which jobs a call acts on, as keyword arguments; every keyword given must match.

    Attributes:
        id: the job with this id.
        ids: the jobs with these ids.
        name: jobs of this name.
        names: jobs of any of these names.
        not_names: jobs of none of these names.
        data: jobs whose ``data`` equal this (``data=None``: jobs without data); a mapping may use
            query operators on its fields (``{"user": {"$in": [1, 2]}}``), never ones that run code.
    """

    id: str | None
    ids: Sequence[str] | None
    name: str | None
    names: Sequence[str] | None
    not_names: Sequence[str] | None
    data: Any


_KEYWORDS = frozenset(JobFilter.__annotations__)


def job_criteria(filters: Mapping[str, Any], *, method: str) -> JobCriteria:
    """Check a filter given as keywords and turn it into store criteria.

    Every criterion is a plain value: a mapping such as ``{"$ne": None}`` never reaches a filter
    through ``id`` or ``name``. ``data`` counts when given, even as None.
    """
    unknown = sorted(set(filters) - _KEYWORDS)
    if unknown:
        # What Python says of a keyword no signature takes: **filters must not swallow typos.
        raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}")
    has_data = "data" in filters
    if has_data:
        check_safe_filter(filters["data"], field="data")
    id_, ids = filters.get("id"), filters.get("ids")
    name, names, not_names = filters.get("name"), filters.get("names"), filters.get("not_names")
    return JobCriteria(
        id=None if id_ is None else str(check_id(id_)),
        ids=None if ids is None else [str(i) for i in check_ids(ids)],
        name=None if name is None else check_job_name(name),
        names=None if names is None else check_names(names, field="names"),
        not_names=None if not_names is None else check_names(not_names, field="not_names"),
        data=filters["data"] if has_data else None,
        has_data=has_data,
    )

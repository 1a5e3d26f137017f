"""JobCriteria / JobQuery -> SQL (psycopg.sql composition; values are always bound parameters).

Names, ids, search and "disabled" become SQL. A ``data`` criterion is a MongoDB filter (as for the
other stores: partial documents matching by their leaves, operators, arrays matching by any element),
so it is decided by agendapy's MongoDB matcher on the rows SQL selects: the same rules as the
in-memory store, exactly. Scalar leaves of it also become a ``jsonb_path_exists`` condition (lax mode
looks into arrays as MongoDB's dot paths do), so SQL returns few rows beyond the matching ones.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from ...errors import InvalidInput
from ...testing._mql import FilterError, check_filter, matches
from ..base import JobCriteria, JobQuery
from ..common import user_filter
from ..queries import criteria_filter, query_sort
from .schema import COLUMN_OF

__all__ = [
    "SqlFilter",
    "as_uuid",
    "criteria_sql",
    "data_filter",
    "jsonb_order",
    "order_by",
    "page",
    "query_sql",
    "unique_sql",
    "user_filter_of",
]

_TRUE = sql.SQL("TRUE")
_FALSE = sql.SQL("FALSE")


def as_uuid(value: Any) -> uuid.UUID | None:
    """A job id as the ``id`` column holds it; None for a string that is not a UUID (matches nothing).

    Anything but a string is refused (InvalidInput), so no mapping such as ``{"$ne": None}`` is ever
    taken for an id, as in the other stores.
    """
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise InvalidInput("id", value, "must be a job id (a string)")
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class SqlFilter:
    """A WHERE condition, and the MongoDB filter (on ``data``) rows must also pass, if any."""

    def __init__(
        self,
        where: sql.Composable = _TRUE,
        params: list[Any] | None = None,
        python: dict[str, Any] | None = None,
    ) -> None:
        self.where = where
        self.params: list[Any] = params or []
        self.python = python

    def add(self, condition: sql.Composable, *params: Any) -> None:
        self.where = condition if self.where is _TRUE else sql.SQL("{} AND {}").format(self.where, condition)
        self.params.extend(params)

    def keeps(self, doc: Mapping[str, Any]) -> bool:
        """Whether a row (as a document) selected by ``where`` matches the whole criteria."""
        return self.python is None or matches(doc, self.python)


def _refused(exc: Exception) -> str | None:
    return str(exc) if isinstance(exc, FilterError) else None


def user_filter_of(field_name: str, value: Any) -> Any:
    """A context turning a refused filter into InvalidInput naming ``field_name`` (as every store does)."""
    return user_filter(field_name, value, _refused)


def criteria_sql(criteria: JobCriteria) -> SqlFilter:
    """The condition of Agenda's RemoveJobsOptions (empty criteria: TRUE; callers decide what it means)."""
    out = SqlFilter()
    if criteria.id is not None:
        job_id = as_uuid(criteria.id)
        if job_id is None:
            out.add(_FALSE)
        else:
            out.add(sql.SQL("id = %s"), job_id)
    if criteria.ids is not None:
        ids = [i for i in (as_uuid(raw) for raw in criteria.ids) if i is not None]
        out.add(sql.SQL("id = ANY(%s)"), ids)
    if criteria.name is not None:
        out.add(sql.SQL("name = %s"), criteria.name)
    if criteria.names is not None:
        out.add(sql.SQL("name = ANY(%s::text[])"), list(criteria.names))
    if criteria.not_names is not None:
        out.add(sql.SQL("name <> ALL(%s::text[])"), list(criteria.not_names))
    if criteria.has_data:
        flt = data_filter(criteria.data)
        out.python = flt
        for condition, params in _scalar_leaves("data", flt):
            out.add(condition, *params)
    return out


def data_filter(data: Any) -> dict[str, Any]:
    """The MongoDB filter of a ``data`` criterion, checked (InvalidInput naming ``data`` if refused).

    Its objects are put in JSONB's key order (shorter keys first, then by bytes), the order stored
    ``data`` comes back in: JSONB does not keep the order keys were written in, so an embedded
    document given in a filter matches the stored one whatever order either was written in.
    """
    flt = criteria_filter(JobCriteria(data=data, has_data=True))
    with user_filter_of("data", data):
        check_filter(flt)
    ordered: dict[str, Any] = jsonb_order(flt)
    return ordered


def jsonb_order(value: Any) -> Any:
    """``value`` with every mapping's keys in JSONB's order (lists keep theirs)."""
    if isinstance(value, Mapping):
        keys = sorted(value, key=lambda k: (len(str(k).encode()), str(k).encode()))
        return {k: jsonb_order(value[k]) for k in keys}
    if isinstance(value, list | tuple):
        return [jsonb_order(item) for item in value]
    return value


def query_sql(query: JobQuery) -> SqlFilter:
    """The condition of ``query_jobs`` (state filtering happens above the store)."""
    out = criteria_sql(query.criteria) if not query.criteria.is_empty() else SqlFilter()
    if query.search:
        escaped = query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        out.add(sql.SQL("name ILIKE %s ESCAPE '\\'"), f"%{escaped}%")
    if not query.include_disabled:
        out.add(sql.SQL("disabled IS NOT TRUE"))
    return out


def unique_sql(name: str, flt: Mapping[str, Any]) -> SqlFilter:
    """Rows a ``unique()`` save may upsert into: its name, narrowed by the scalar leaves of its keys."""
    out = SqlFilter(python=jsonb_order(dict(flt)))
    out.add(sql.SQL("name = %s"), name)
    for condition, params in _scalar_leaves("data", flt):
        out.add(condition, *params)
    return out


def _scalar_leaves(prefix: str, flt: Mapping[str, Any]) -> list[tuple[sql.Composable, list[Any]]]:
    """``jsonb_path_exists`` conditions for ``data.<path>: <string, number or bool>`` equalities.

    Only ones every match satisfies: no numeric path parts (MongoDB reads them as array positions,
    lax JSON paths do not), no null (MongoDB's null also matches a missing field).
    """
    out: list[tuple[sql.Composable, list[Any]]] = []
    for key, value in flt.items():
        parts = key.split(".")
        if parts[0] != prefix or len(parts) < 2 or any(p.isdigit() or not p for p in parts[1:]):
            continue
        if isinstance(value, bool | str) or (isinstance(value, int | float) and value == value):
            path = "$" + "".join("." + json.dumps(p) for p in parts[1:]) + " ? (@ == $v)"
            out.append((sql.SQL("jsonb_path_exists(data, %s::jsonpath, %s)"), [path, Jsonb({"v": value})]))
    return out


#: Sortable document fields whose order SQL reproduces (``data`` is sorted by the MongoDB rules).
_NULLS = {1: "ASC NULLS FIRST", -1: "DESC NULLS LAST"}


def order_by(sort: Mapping[str, str] | None) -> tuple[sql.Composable, list[tuple[str, int]] | None]:
    """ORDER BY for ``query_jobs``'s sort, as MongoDB orders (null first ascending, names by code
    point); and the sort to apply in Python instead when SQL cannot reproduce it (on ``data``)."""
    keys = query_sort(sort)
    if any(key == "data" for key, _ in keys):
        return sql.SQL("created_at, id"), keys
    parts: list[sql.Composable] = []
    for key, direction in keys:
        column = sql.Identifier(COLUMN_OF[key])
        if key == "name":
            parts.append(sql.SQL('{} COLLATE "C" {}').format(column, sql.SQL(_NULLS[direction])))
        else:
            parts.append(sql.SQL("{} {}").format(column, sql.SQL(_NULLS[direction])))
    parts.append(sql.SQL("created_at, id"))  # ties: insertion order, then a stable one
    return sql.SQL(", ").join(parts), None


def page(items: Sequence[Any], skip: int, limit: int) -> list[Any]:
    """``items`` after ``skip`` and at most ``limit`` (0: all)."""
    return list(items[skip : skip + limit if limit else None])

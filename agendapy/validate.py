"""Input checks shared by the façade and the Job: names, BSON data, ids, and filters from users."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import bson
from bson import DatetimeMS, ObjectId
from bson.errors import InvalidDocument

from .errors import InvalidData, InvalidInput, InvalidJobName, InvalidPriority, UnsafeQuery

__all__ = [
    "MAX_DEPTH",
    "UNSAFE_OPERATORS",
    "check_bson",
    "check_count",
    "check_id",
    "check_job_name",
    "check_priority",
    "check_safe_filter",
    "check_search",
    "check_unique_query",
    "parse_priority",
]

#: Operators that run code on the server or compare fields in ways Agenda refuses in user filters.
UNSAFE_OPERATORS = frozenset({"$where", "$function", "$accumulator", "$expr"})

#: Query operators a user filter (``data=``, ``unique()``) may use.
QUERY_OPERATORS = frozenset(
    {
        "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$type", "$regex",
        "$options", "$all", "$elemMatch", "$size", "$not", "$and", "$or", "$nor", "$mod",
    }
)  # fmt: skip

#: MongoDB refuses documents nested deeper than 100 levels; the job document adds one (``data``).
MAX_DEPTH = 99

# BSON's document limit is 16 MiB; leave room for the job's own fields.
_MAX_DATA_BYTES = 16 * 1024 * 1024 - 64 * 1024
_MAX_NAME_LENGTH = 512
_INT64 = (-(2**63), 2**63 - 1)
_PRIORITIES = {"lowest": -20, "low": -10, "normal": 0, "high": 10, "highest": 20}
# datetime.min and datetime.max as BSON dates (milliseconds since the Unix epoch, UTC).
_DATETIME_MS = (-62_135_596_800_000, 253_402_300_799_999)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_job_name(name: object, *, field: str = "name") -> str:
    """Return ``name`` if it is usable as a job name, else raise :class:`InvalidJobName`."""
    if not isinstance(name, str):
        raise InvalidJobName(field, name, "must be a string")
    if not name.strip():
        raise InvalidJobName(field, name, "must not be empty")
    if len(name) > _MAX_NAME_LENGTH:
        raise InvalidJobName(field, name, f"must be at most {_MAX_NAME_LENGTH} characters")
    if "\x00" in name:
        raise InvalidJobName(field, name, "must not contain NUL characters")
    if not _utf8(name):
        raise InvalidJobName(field, name, "must be valid Unicode (no lone surrogates)")
    return name


def check_id(value: object, *, field: str = "id") -> str | ObjectId:
    """A job id: an ObjectId or its 24-hex-digit string (or another string id), never a filter."""
    if isinstance(value, ObjectId):
        return value
    if isinstance(value, str) and value and _utf8(value) and len(value) <= 1024:
        return value
    raise InvalidInput(field, value, "must be a job id (a string or ObjectId)")


def check_priority(value: object, *, field: str = "priority") -> int:
    """A stored priority: an int that fits BSON's int64."""
    if isinstance(value, bool) or not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
        raise InvalidPriority(field, value, "must be an int between -2**63 and 2**63 - 1")
    return value


def parse_priority(value: int | str | None, *, field: str = "priority") -> int:
    """A priority given to the API: an int as is, or lowest -20, low -10, normal 0, high 10, highest 20."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InvalidPriority(field, value, "expected an int or lowest/low/normal/high/highest")
    if isinstance(value, int | float) and not _INT64[0] <= value <= _INT64[1]:
        raise InvalidPriority(field, value, "must fit in a 64-bit integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _PRIORITIES:
        return _PRIORITIES[value.strip().lower()]
    raise InvalidPriority(field, value, "expected an int or lowest/low/normal/high/highest")


def _depth(value: Any) -> int:
    """How deeply documents and arrays nest in ``value`` (iteratively: no recursion limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH + 1:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


def _unreadable_date(value: Any) -> DatetimeMS | None:
    """The first BSON date in ``value`` outside the years 1-9999 (``datetime``'s range), if any."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, DatetimeMS):
            if not _DATETIME_MS[0] <= int(item) <= _DATETIME_MS[1]:
                return item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def check_bson(value: Any, *, field: str = "data") -> None:
    """Raise :class:`InvalidData` unless ``value`` can be stored in a MongoDB document."""
    if _depth(value) > MAX_DEPTH:
        raise InvalidData(field, value, f"is nested more than {MAX_DEPTH} levels deep (MongoDB's limit)")
    # Servers differ on such dates (some refuse them), and no Python datetime can hold them when read.
    bad_date = _unreadable_date(value)
    if bad_date is not None:
        raise InvalidData(field, bad_date, "is a date outside the years 1 to 9999")
    try:
        encoded = bson.encode({"v": value})
    except (InvalidDocument, TypeError, OverflowError, ValueError, RecursionError) as exc:
        raise InvalidData(field, value, f"cannot be stored as BSON ({exc})") from None
    if len(encoded) > _MAX_DATA_BYTES:
        raise InvalidData(field, f"<{len(encoded)} bytes>", "is larger than a MongoDB document may be")


def check_safe_filter(query: Any, *, field: str) -> None:
    """Raise :class:`UnsafeQuery` unless ``query`` is a plain filter: string keys, known query
    operators only (never one that executes code), storable as BSON."""
    check_bson(query, field=field)
    stack = [query]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            for key, value in item.items():
                if not isinstance(key, str):
                    raise UnsafeQuery(field, query, f"keys must be strings, got {key!r}")
                if key in UNSAFE_OPERATORS:
                    raise UnsafeQuery(field, query, f"operator {key} is not allowed in a filter")
                if key.startswith("$") and key not in QUERY_OPERATORS:
                    raise UnsafeQuery(field, query, f"unknown query operator {key}")
                stack.append(value)
        elif isinstance(item, list | tuple):
            stack.extend(item)


def check_unique_query(query: object, *, field: str = "unique") -> dict[str, Any]:
    """A ``unique()`` key: a non-empty mapping of document fields (not ``_id``) to values."""
    if not isinstance(query, Mapping) or not query:
        raise InvalidInput(field, query, "must be a non-empty mapping of field to value")
    check_safe_filter(query, field=field)
    for key in query:
        if key == "_id" or key.startswith("_id."):
            raise InvalidInput(field, query, "cannot match on _id (ids are assigned by the database)")
    return dict(query)


def check_count(value: object, *, field: str) -> int:
    """A skip or limit: 0 or more, and small enough for the server."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1:
        raise InvalidInput(field, value, "must be an int from 0 to 2**31 - 1")
    return value


def check_search(value: object, *, field: str = "search") -> str:
    """A text to search for: a string the server can store (no lone surrogates)."""
    if not isinstance(value, str) or not _utf8(value):
        raise InvalidInput(field, value, "must be a string")
    return value


def check_names(values: object, *, field: str) -> list[str]:
    """A list of job names (for criteria such as ``names=`` and ``not_names=``)."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InvalidInput(field, values, "must be a list of job names")
    return [check_job_name(v, field=field) for v in values]


def check_name_list(names: object, *, field: str = "names") -> list[str]:
    """One job name or a non-empty list of them (``every``, ``schedule``, ``run_due``), as a list."""
    if isinstance(names, str):
        return [check_job_name(names, field=field)]
    if not isinstance(names, Sequence) or not names:
        raise InvalidInput(field, names, "must be a job name or a non-empty list of names")
    return [check_job_name(n, field=field) for n in names]


def check_ids(values: object, *, field: str = "ids") -> list[str | ObjectId]:
    """A list of job ids."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InvalidInput(field, values, "must be a list of job ids")
    return [check_id(v, field=field) for v in values]

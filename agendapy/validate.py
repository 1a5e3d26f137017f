"""Input checks shared by the façade and the Job: names, BSON data, and filters from users."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bson
from bson.errors import InvalidDocument

from .errors import InvalidData, InvalidJobName, UnsafeQuery

__all__ = ["UNSAFE_OPERATORS", "check_bson", "check_job_name", "check_safe_filter"]

#: Operators that run code on the server or compare fields in ways Agenda refuses in user filters.
UNSAFE_OPERATORS = frozenset({"$where", "$function", "$accumulator", "$expr"})

# BSON's document limit is 16 MiB; leave room for the job's own fields.
_MAX_DATA_BYTES = 16 * 1024 * 1024 - 64 * 1024
_MAX_NAME_LENGTH = 512


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
    return name


def check_bson(value: Any, *, field: str = "data") -> None:
    """Raise :class:`InvalidData` unless ``value`` can be stored in a BSON document."""
    try:
        encoded = bson.encode({"v": value})
    except (InvalidDocument, TypeError, OverflowError, ValueError) as exc:
        raise InvalidData(field, value, f"cannot be stored as BSON ({exc})") from None
    if len(encoded) > _MAX_DATA_BYTES:
        raise InvalidData(field, f"<{len(encoded)} bytes>", "is larger than a MongoDB document may be")


def check_safe_filter(query: Any, *, field: str) -> None:
    """Raise :class:`UnsafeQuery` if a user filter contains an operator that executes code."""
    if isinstance(query, Mapping):
        for key, value in query.items():
            if not isinstance(key, str):
                raise UnsafeQuery(field, query, f"keys must be strings, got {key!r}")
            if key in UNSAFE_OPERATORS:
                raise UnsafeQuery(field, query, f"operator {key} is not allowed in a filter")
            check_safe_filter(value, field=field)
    elif isinstance(query, list | tuple):
        for item in query:
            check_safe_filter(item, field=field)

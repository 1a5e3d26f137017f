"""BSON values as MongoDB holds, compares and sorts them; dot paths into documents."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cmp_to_key
from typing import Any, Final

import bson
from bson import CodecOptions, Decimal128, MaxKey, MinKey, ObjectId, Regex, Timestamp

__all__ = [
    "CODEC",
    "MISSING",
    "FilterError",
    "Reached",
    "bson_copy",
    "bson_value",
    "compare",
    "is_nan",
    "lookup",
    "number",
    "rank",
    "sort_documents",
    "values_equal",
]

CODEC: Final[CodecOptions[dict[str, Any]]] = CodecOptions(tz_aware=True, tzinfo=UTC)


class FilterError(ValueError):
    """A filter MongoDB would refuse (the in-memory store reports it as MongoDB's store does)."""


class _Missing:
    """A path that reaches no value (distinct from a stored null)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


def bson_copy(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` as MongoDB would store and return it: a deep, BSON-typed copy."""
    return bson.decode(bson.encode(document), codec_options=CODEC)


def bson_value(value: Any) -> Any:
    """One value as BSON would round-trip it."""
    return bson_copy({"v": value})["v"]


# -- ordering ---------------------------------------------------------------------------------------


#: BSON's canonical type order, by Python type; the first match counts (bool before the numbers).
_RANKS: Final[tuple[tuple[type | tuple[type, ...], int], ...]] = (
    (MinKey, 0),
    (MaxKey, 127),
    (bool, 8),
    ((int, float, Decimal128), 2),
    (str, 3),
    (Mapping, 4),
    ((list, tuple), 5),
    (bytes, 6),
    (ObjectId, 7),
    (datetime, 9),
    (Timestamp, 10),
    ((Regex, re.Pattern), 11),
)


def rank(value: Any) -> int:
    """BSON's canonical type order (numbers share one bracket, null and missing another)."""
    if value is MISSING or value is None:
        return 1
    return next((order for kind, order in _RANKS if isinstance(value, kind)), 50)


def number(value: Any) -> float | int | Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    assert isinstance(value, int | float)
    return value


def is_nan(value: float | int | Decimal) -> bool:
    return value.is_nan() if isinstance(value, Decimal) else isinstance(value, float) and math.isnan(value)


def _sign(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1 as MongoDB orders two values (across types by BSON's type order)."""
    rank_a, rank_b = rank(a), rank(b)
    if rank_a != rank_b:
        return _sign(rank_a, rank_b)
    if rank_a == 2:
        x, y = number(a), number(b)
        if is_nan(x) or is_nan(y):
            return _sign(not is_nan(x), not is_nan(y))  # NaN sorts below every number
        return _sign(x, y)
    if rank_a == 4:
        return _compare_documents(a, b)
    if rank_a == 5:
        for x, y in zip(a, b, strict=False):
            order = compare(x, y)
            if order:
                return order
        return _sign(len(a), len(b))
    if rank_a == 6:
        return _sign((len(a), bytes(a)), (len(b), bytes(b)))
    if rank_a == 7:
        return _sign(a.binary, b.binary)
    if rank_a == 10:
        return _sign((a.time, a.inc), (b.time, b.inc))
    if rank_a == 11:
        return _sign((a.pattern, str(a.flags)), (b.pattern, str(b.flags)))
    if rank_a in (3, 8, 9):
        return _sign(a, b)
    return 0


def _compare_documents(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    # Element by element: the value's type, then the field name, then the value; then length.
    for (key_a, val_a), (key_b, val_b) in zip(a.items(), b.items(), strict=False):
        for order in (_sign(rank(val_a), rank(val_b)), _sign(key_a, key_b), compare(val_a, val_b)):
            if order:
                return order
    return _sign(len(a), len(b))


def values_equal(a: Any, b: Any) -> bool:
    """MongoDB equality: typed (``True`` is not ``1``), ordered for documents."""
    return rank(a) == rank(b) and compare(a, b) == 0


def _sort_value(document: Mapping[str, Any], path: str, direction: int) -> Any:
    values = [v for v, _ in lookup(document, path.split(".")) if v is not MISSING]
    if not values:
        return None
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(value)
        else:
            flat.append(value)
    if not flat:
        return MinKey()  # an empty array sorts below null
    best = flat[0]
    for value in flat[1:]:
        order = compare(value, best)
        if (direction > 0 and order < 0) or (direction < 0 and order > 0):
            best = value
    return best


def sort_documents(
    documents: Iterable[dict[str, Any]], spec: Sequence[tuple[str, int]]
) -> list[dict[str, Any]]:
    """Sort as ``find(sort=spec)`` does; ties keep insertion order (a collection scan's order)."""
    if not spec:
        return list(documents)

    def order(a: dict[str, Any], b: dict[str, Any]) -> int:
        for path, direction in spec:
            result = compare(_sort_value(a, path, direction), _sort_value(b, path, direction))
            if result:
                return result * direction
        return 0

    return sorted(documents, key=cmp_to_key(order))


# -- paths ------------------------------------------------------------------------------------------


#: A value a path reached, and whether an array there matches by its elements too (not when the path
#: picked it by position: ``{"a.0": 1}`` does not match ``{"a": [[1]]}``).
Reached = tuple[Any, bool]


def lookup(value: Any, parts: Sequence[str], expand: bool = True) -> list[Reached]:
    """Every value a dot path reaches through documents and arrays; MISSING where it reaches a missing
    field. Array elements that are not documents reach nothing (``{"a.b": null}`` misses ``{"a": [1]}``)."""
    if not parts:
        return [(value, expand)]
    head, rest = parts[0], parts[1:]
    if isinstance(value, Mapping):
        return lookup(value[head], rest) if head in value else [(MISSING, True)]
    if isinstance(value, list):
        found: list[Reached] = []
        if head.isdigit():
            index = int(head)
            found.extend(
                lookup(value[index], rest, expand=False) if index < len(value) else [(MISSING, True)]
            )
        for item in value:
            if isinstance(item, Mapping):
                found.extend(lookup(item, parts))
        return found
    return [(MISSING, True)]

"""The subset of MongoDB's query language the in-memory store needs, over plain (BSON-decoded) dicts.

Values go through a BSON round trip on the way in and out (:func:`bson_copy`), so the store holds what
MongoDB would: lists instead of tuples, aware UTC datetimes truncated to milliseconds, no aliasing with
the caller's objects. Matching and sorting follow MongoDB's rules where a job store can notice them:
type brackets (a date never compares with a number, ``true`` never equals ``1``), ``null`` matching a
missing field, dot paths through embedded documents and arrays, arrays matching by any element, ordered
document equality, and BSON's cross-type sort order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cmp_to_key
from typing import Any, Final

import bson
from bson import CodecOptions, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp

__all__ = [
    "Changes",
    "FilterError",
    "apply_update",
    "bson_copy",
    "bson_value",
    "check_filter",
    "compare",
    "matches",
    "pipeline_matches",
    "set_path",
    "sort_documents",
    "upsert_base",
    "upsert_document",
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


def _rank(value: Any) -> int:
    """BSON's canonical type order (numbers share one bracket, null and missing another)."""
    if value is MISSING or value is None:
        return 1
    if isinstance(value, MinKey):
        return 0
    if isinstance(value, MaxKey):
        return 127
    if isinstance(value, bool):
        return 8
    if isinstance(value, int | float | Decimal128):
        return 2
    if isinstance(value, str):
        return 3
    if isinstance(value, Mapping):
        return 4
    if isinstance(value, list | tuple):
        return 5
    if isinstance(value, bytes):
        return 6
    if isinstance(value, ObjectId):
        return 7
    if isinstance(value, datetime):
        return 9
    if isinstance(value, Timestamp):
        return 10
    if isinstance(value, Regex | re.Pattern):
        return 11
    return 50


def _number(value: Any) -> float | int | Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    assert isinstance(value, int | float)
    return value


def _is_nan(value: float | int | Decimal) -> bool:
    return value.is_nan() if isinstance(value, Decimal) else isinstance(value, float) and math.isnan(value)


def _sign(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1 as MongoDB orders two values (across types by BSON's type order)."""
    rank_a, rank_b = _rank(a), _rank(b)
    if rank_a != rank_b:
        return _sign(rank_a, rank_b)
    if rank_a == 2:
        x, y = _number(a), _number(b)
        if _is_nan(x) or _is_nan(y):
            return _sign(not _is_nan(x), not _is_nan(y))  # NaN sorts below every number
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
        for order in (_sign(_rank(val_a), _rank(val_b)), _sign(key_a, key_b), compare(val_a, val_b)):
            if order:
                return order
    return _sign(len(a), len(b))


def values_equal(a: Any, b: Any) -> bool:
    """MongoDB equality: typed (``True`` is not ``1``), ordered for documents."""
    return _rank(a) == _rank(b) and compare(a, b) == 0


def _sort_value(document: Mapping[str, Any], path: str, direction: int) -> Any:
    values = [v for v, _ in _lookup(document, path.split(".")) if v is not MISSING]
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


# -- matching ---------------------------------------------------------------------------------------


#: A value a path reached, and whether an array there matches by its elements too (not when the path
#: picked it by position: ``{"a.0": 1}`` does not match ``{"a": [[1]]}``).
Reached = tuple[Any, bool]


def _lookup(value: Any, parts: Sequence[str], expand: bool = True) -> list[Reached]:
    """Every value a dot path reaches through documents and arrays; MISSING where it reaches a missing
    field. Array elements that are not documents reach nothing (``{"a.b": null}`` misses ``{"a": [1]}``)."""
    if not parts:
        return [(value, expand)]
    head, rest = parts[0], parts[1:]
    if isinstance(value, Mapping):
        return _lookup(value[head], rest) if head in value else [(MISSING, True)]
    if isinstance(value, list):
        found: list[Reached] = []
        if head.isdigit():
            index = int(head)
            found.extend(
                _lookup(value[index], rest, expand=False) if index < len(value) else [(MISSING, True)]
            )
        for item in value:
            if isinstance(item, Mapping):
                found.extend(_lookup(item, parts))
        return found
    return [(MISSING, True)]


def _plain(values: Sequence[Reached]) -> list[Any]:
    return [value for value, _ in values]


def _candidates(values: Sequence[Reached]) -> list[Any]:
    """The values a comparison looks at: each value, and each element of an array value."""
    out: list[Any] = []
    for value, expand in values:
        out.append(value)
        if expand and isinstance(value, list):
            out.extend(value)
    return out


def _equal_match(values: Sequence[Reached], target: Any) -> bool:
    if target is None and any(v is MISSING for v, _ in values):
        return True
    return any(v is not MISSING and values_equal(v, target) for v in _candidates(values))


_REGEX_FLAGS: Final = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "u": 0}


def _compile(pattern: Any, options: Any = None) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        if options is None:
            return pattern
        pattern = pattern.pattern
    if isinstance(pattern, Regex):
        if options is None:
            flags = pattern.flags if isinstance(pattern.flags, int) else 0
            try:
                return re.compile(pattern.pattern, flags & ~re.LOCALE)
            except re.error as exc:
                raise FilterError(f"invalid regular expression {pattern.pattern!r}: {exc}") from None
        pattern = pattern.pattern
    if not isinstance(pattern, str):
        raise FilterError(f"$regex has to be a string, got {pattern!r}")
    flags = 0
    if options is not None:
        if not isinstance(options, str):
            raise FilterError(f"$options has to be a string, got {options!r}")
        for letter in options:
            if letter not in _REGEX_FLAGS:
                raise FilterError(f"invalid flag in regex options: {letter}")
            flags |= _REGEX_FLAGS[letter]
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise FilterError(f"invalid regular expression {pattern!r}: {exc}") from None


def _regex_match(values: Sequence[Reached], regex: re.Pattern[str]) -> bool:
    return any(isinstance(v, str) and regex.search(v) is not None for v in _candidates(values))


def _range_match(values: Sequence[Reached], target: Any, test: Callable[[int], bool]) -> bool:
    if target is None:
        return test(0) and _equal_match(values, None)  # $gte/$lte null: like equality to null
    if _rank(target) == 2 and _is_nan(_number(target)):
        # NaN sorts below every number but in a query only equals itself.
        return test(0) and any(_rank(v) == 2 and _is_nan(_number(v)) for v in _candidates(values))
    return any(
        v is not MISSING
        and _rank(v) == _rank(target)
        and not (_rank(v) == 2 and _is_nan(_number(v)))
        and test(compare(v, target))
        for v in _candidates(values)
    )


_TYPE_ALIASES: Final = {
    "double": 1, "string": 2, "object": 3, "array": 4, "binData": 5, "undefined": 6, "objectId": 7,
    "bool": 8, "date": 9, "null": 10, "regex": 11, "javascript": 13, "int": 16, "timestamp": 17,
    "long": 18, "decimal": 19, "minKey": -1, "maxKey": 127,
}  # fmt: skip


def _type_code(value: Any) -> int:
    if value is None:
        return 10
    if isinstance(value, bool):
        return 8
    if isinstance(value, Int64):
        return 18
    if isinstance(value, int):
        return 16 if -(2**31) <= value < 2**31 else 18
    if isinstance(value, float):
        return 1
    if isinstance(value, Decimal128):
        return 19
    codes = {3: 2, 4: 3, 5: 4, 6: 5, 7: 7, 9: 9, 10: 17, 11: 11, 0: -1, 127: 127}
    return codes.get(_rank(value), 0)


def _type_match(values: Sequence[Reached], operand: Any) -> bool:
    wanted: set[int] = set()
    number = False
    for item in operand if isinstance(operand, list) else [operand]:
        if item == "number":
            number = True
        elif isinstance(item, str) and item in _TYPE_ALIASES:
            wanted.add(_TYPE_ALIASES[item])
        elif isinstance(item, int | float) and not isinstance(item, bool) and float(item).is_integer():
            wanted.add(int(item))
        else:
            raise FilterError(f"unknown type name alias: {item!r}")
    for value, expand in values:
        if value is MISSING:
            continue
        if isinstance(value, list) and 4 in wanted:
            return True
        for item in value if expand and isinstance(value, list) else [value]:
            code = _type_code(item)
            if code in wanted or (number and code in (1, 16, 18, 19)):
                return True
    return False


def _operators(condition: Any) -> bool:
    """Whether a field's condition is an operator expression ({"$gt": 1}) rather than a value."""
    if isinstance(condition, Mapping) and condition:
        first = next(iter(condition))
        return isinstance(first, str) and first.startswith("$")
    return False


def _match_operators(values: Sequence[Reached], condition: Mapping[str, Any]) -> bool:
    for op, operand in condition.items():
        if not isinstance(op, str) or not op.startswith("$"):
            raise FilterError(f"unknown operator: {op}")
        if not _match_operator(values, op, operand, condition):
            return False
    return True


def _match_operator(values: Sequence[Reached], op: str, operand: Any, condition: Mapping[str, Any]) -> bool:
    if op == "$eq":
        return _equal_match(values, operand)
    if op == "$ne":
        return not _equal_match(values, operand)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        tests: dict[str, Callable[[int], bool]] = {
            "$gt": lambda c: c > 0,
            "$gte": lambda c: c >= 0,
            "$lt": lambda c: c < 0,
            "$lte": lambda c: c <= 0,
        }
        return _range_match(values, operand, tests[op])
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise FilterError(f"{op} needs an array")
        found = any(
            _regex_match(values, _compile(item))
            if isinstance(item, Regex | re.Pattern)
            else _equal_match(values, item)
            for item in operand
        )
        return found if op == "$in" else not found
    if op == "$exists":
        return any(v is not MISSING for v, _ in values) == bool(operand)
    if op == "$type":
        return _type_match(values, operand)
    if op == "$regex":
        return _regex_match(values, _compile(operand, condition.get("$options")))
    if op == "$options":
        if "$regex" not in condition:
            raise FilterError("$options needs a $regex")
        return True
    if op == "$all":
        if not isinstance(operand, list):
            raise FilterError("$all needs an array")
        return bool(operand) and all(_equal_match(values, item) for item in operand)
    if op == "$elemMatch":
        if not isinstance(operand, Mapping):
            raise FilterError("$elemMatch needs an Object")
        return any(
            isinstance(v, list) and any(_element_matches(item, operand) for item in v) for v in _plain(values)
        )
    if op == "$size":
        if isinstance(operand, bool) or not isinstance(operand, int | float) or operand != int(operand):
            raise FilterError("$size needs a number")
        return any(isinstance(v, list) and len(v) == operand for v in _plain(values))
    if op == "$not":
        if isinstance(operand, Regex | re.Pattern):
            return not _regex_match(values, _compile(operand))
        if not isinstance(operand, Mapping) or not operand:
            raise FilterError("$not needs a regex or a document")
        return not _match_operators(values, operand)
    if op == "$mod":
        return _mod_match(values, operand)
    raise FilterError(f"unknown operator: {op}")


def _mod_match(values: Sequence[Reached], operand: Any) -> bool:
    if not isinstance(operand, list) or len(operand) != 2:
        raise FilterError("malformed mod, needs to be an array of two numbers")
    divisor, remainder = (_number(x) if _rank(x) == 2 else None for x in operand)
    if divisor is None or remainder is None:
        raise FilterError("malformed mod, divisor and remainder must be numbers")
    if int(divisor) == 0:
        raise FilterError("divisor cannot be 0")
    return any(
        v is not MISSING
        and _rank(v) == 2
        and not _is_nan(_number(v))
        and math.fmod(int(_number(v)), int(divisor)) == int(remainder)
        for v in _candidates(values)
    )


def _element_matches(item: Any, condition: Mapping[str, Any]) -> bool:
    first = next(iter(condition), "")
    if isinstance(first, str) and first.startswith("$") and first not in ("$and", "$or", "$nor"):
        return _match_operators([(item, False)], condition)
    return isinstance(item, Mapping) and matches(item, condition)


def matches(document: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """Whether ``document`` matches the filter ``query`` (check it first with :func:`check_filter`)."""
    for key, condition in query.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(condition, list) or not condition:
                raise FilterError(f"{key} argument must be a non-empty array")
            results = [matches(document, _as_filter(key, clause)) for clause in condition]
            ok = all(results) if key == "$and" else any(results) if key == "$or" else not any(results)
            if not ok:
                return False
            continue
        if key.startswith("$"):
            raise FilterError(f"unknown top level operator: {key}")
        values = _lookup(document, key.split("."))
        if _operators(condition):
            if not _match_operators(values, condition):
                return False
        elif isinstance(condition, Regex | re.Pattern):
            if not _regex_match(values, _compile(condition)):
                return False
        elif not _equal_match(values, condition):
            return False
    return True


def check_filter(query: Mapping[str, Any]) -> None:
    """Raise FilterError for a filter MongoDB refuses when it parses it (before looking at any document)."""
    for key, condition in query.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(condition, list) or not condition:
                raise FilterError(f"{key} argument must be a non-empty array")
            for clause in condition:
                check_filter(_as_filter(key, clause))
        elif key.startswith("$"):
            raise FilterError(f"unknown top level operator: {key}")
        elif isinstance(condition, Regex | re.Pattern):
            _compile(condition)
        elif _operators(condition):
            _check_operators(condition)


def _check_operators(condition: Mapping[str, Any]) -> None:
    for op, operand in condition.items():
        if not isinstance(op, str) or not op.startswith("$"):
            raise FilterError(f"unknown operator: {op}")
        # Evaluating against a missing value validates the operand without short-circuits.
        _match_operator([(MISSING, True)], op, operand, condition)
        if op == "$not" and isinstance(operand, Mapping):
            _check_operators(operand)
        elif op == "$elemMatch" and isinstance(operand, Mapping):
            first = next(iter(operand), "")
            if isinstance(first, str) and first.startswith("$") and first not in ("$and", "$or", "$nor"):
                _check_operators(operand)
            else:
                check_filter(operand)
        elif op in ("$in", "$nin") and isinstance(operand, list):
            for item in operand:
                if isinstance(item, Regex | re.Pattern):
                    _compile(item)


def _as_filter(operator: str, clause: Any) -> Mapping[str, Any]:
    if not isinstance(clause, Mapping):
        raise FilterError(f"{operator} argument's entries must be objects")
    return clause


# -- writing ----------------------------------------------------------------------------------------


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    """``$set`` of one (dotted) path, creating embedded documents on the way."""
    parts = path.split(".")
    target: Any = document
    for part in parts[:-1]:
        if isinstance(target, list) and part.isdigit():
            target = target[int(part)]
            continue
        if not isinstance(target, dict):
            raise FilterError(f"cannot create field {part!r} in element {target!r}")
        target = target.setdefault(part, {})
    if isinstance(target, list) and parts[-1].isdigit():
        target[int(parts[-1])] = value
    elif isinstance(target, dict):
        target[parts[-1]] = value
    else:
        raise FilterError(f"cannot create field {parts[-1]!r} in element {target!r}")


def upsert_base(query: Mapping[str, Any]) -> dict[str, Any]:
    """The document an upsert starts from: the filter's equality conditions (MongoDB's rule)."""
    base: dict[str, Any] = {}
    for path, value in _equalities(query):
        set_path(base, path, value)
    return base


def _equalities(query: Mapping[str, Any]) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key, condition in query.items():
        if key == "$and" and isinstance(condition, list):
            for clause in condition:
                if isinstance(clause, Mapping):
                    found.extend(_equalities(clause))
            continue
        if key.startswith("$") or isinstance(condition, Regex | re.Pattern):
            continue
        if _operators(condition):
            if "$eq" not in condition:
                continue
            condition = condition["$eq"]
        found.append((key, condition))
    return found


def _get_path(document: Mapping[str, Any], path: str) -> Any:
    target: Any = document
    for part in path.split("."):
        if isinstance(target, Mapping) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return MISSING
    return target


def _unset_path(document: dict[str, Any], path: str) -> bool:
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target.get(part) if isinstance(target, dict) else None
    if isinstance(target, dict) and last in target:
        del target[last]
        return True
    return False


_UPDATE_OPERATORS: Final = frozenset({"$set", "$setOnInsert", "$unset", "$inc"})


def apply_update(document: dict[str, Any], update: Mapping[str, Any], *, inserting: bool = False) -> Changes:
    """Apply an update document (``$set``, ``$setOnInsert`` when ``inserting``, ``$inc``, ``$unset``)
    in place.

    Returns what a change stream would report: the paths whose value changed and those removed.
    """
    for op, fields in update.items():
        if op not in _UPDATE_OPERATORS:
            raise FilterError(f"unknown update operator: {op}")
        if not isinstance(fields, Mapping):
            raise FilterError(f"modifiers for {op} must be an object")
    changes = Changes()
    for op in ("$set", "$setOnInsert"):
        if op == "$setOnInsert" and not inserting:
            continue
        for path, value in bson_copy(dict(update.get(op, {}))).items():
            before = _get_path(document, path)
            if before is MISSING or not values_equal(before, value):
                changes.updated[path] = value
            set_path(document, path, value)
    for path, step in bson_copy(dict(update.get("$inc", {}))).items():
        before = _get_path(document, path)
        if _rank(step) != 2 or (before is not MISSING and _rank(before) != 2):
            raise FilterError(f"cannot $inc {path!r} ({before!r}) by {step!r}: both must be numbers")
        after = step if before is MISSING else _add(before, step)
        changes.updated[path] = after
        set_path(document, path, after)
    for path in update.get("$unset", {}):
        if _unset_path(document, path):
            changes.removed.append(path)
    return changes


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, Decimal128) or isinstance(b, Decimal128):
        return Decimal128(_number(a) + _number(b))  # type: ignore[operator]
    return a + b


class Changes:
    """What one update changed, as a change stream's ``updateDescription`` says it."""

    def __init__(self) -> None:
        self.updated: dict[str, Any] = {}
        self.removed: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.updated or self.removed)


def upsert_document(query: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """The document an upsert inserts: the filter's equalities, then the update applied as an insert."""
    document = upsert_base(bson_copy(query))
    apply_update(document, update, inserting=True)
    return document


def pipeline_matches(event: Mapping[str, Any], pipeline: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``event`` passes a pipeline of ``$match`` stages (a change stream's filter)."""
    for stage in pipeline:
        if set(stage) != {"$match"}:
            raise FilterError(f"only $match stages are supported here, got {sorted(stage)}")
        if not matches(event, stage["$match"]):
            return False
    return True

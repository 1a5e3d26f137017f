"""MongoDB's update operators, upserts and ``$match`` pipelines (a change stream's filter)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bson import Decimal128, Regex

from .match import is_operator_expression, matches
from .values import MISSING, FilterError, bson_copy, number, rank, values_equal

__all__ = ["Changes", "apply_update", "pipeline_matches", "set_path", "upsert_base", "upsert_document"]


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
        if is_operator_expression(condition):
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


class Changes:
    """What one update changed, as a change stream's ``updateDescription`` says it."""

    def __init__(self) -> None:
        self.updated: dict[str, Any] = {}
        self.removed: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.updated or self.removed)


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
        if rank(step) != 2 or (before is not MISSING and rank(before) != 2):
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
        return Decimal128(number(a) + number(b))  # type: ignore[operator]
    return a + b


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

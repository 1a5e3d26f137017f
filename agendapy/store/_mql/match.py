"""MongoDB's filters: ``matches`` and ``check_filter`` (the refusals MongoDB makes when it parses one)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from bson import Decimal128, Int64, Regex

from .values import MISSING, FilterError, Reached, compare, is_nan, lookup, number, rank, values_equal

__all__ = ["check_filter", "is_operator_expression", "matches"]


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
    if rank(target) == 2 and is_nan(number(target)):
        # NaN sorts below every number but in a query only equals itself.
        return test(0) and any(rank(v) == 2 and is_nan(number(v)) for v in _candidates(values))
    return any(
        v is not MISSING
        and rank(v) == rank(target)
        and not (rank(v) == 2 and is_nan(number(v)))
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
    return codes.get(rank(value), 0)


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


def is_operator_expression(condition: Any) -> bool:
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
    divisor, remainder = (number(x) if rank(x) == 2 else None for x in operand)
    if divisor is None or remainder is None:
        raise FilterError("malformed mod, divisor and remainder must be numbers")
    if int(divisor) == 0:
        raise FilterError("divisor cannot be 0")
    return any(
        v is not MISSING
        and rank(v) == 2
        and not is_nan(number(v))
        and math.fmod(int(number(v)), int(divisor)) == int(remainder)
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
        values = lookup(document, key.split("."))
        if is_operator_expression(condition):
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
        elif is_operator_expression(condition):
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

"""Input checks shared by the façade and the Job."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from schedule_support import outcome

from agendapy.errors import InvalidPriority
from agendapy.validate import parse_priority


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 0),
        (5, 5),
        (-5, -5),
        (10.0, 10),
        ("lowest", -20),
        ("low", -10),
        ("normal", 0),
        ("high", 10),
        ("highest", 20),
        ("High", 10),
    ],
)
def test_parse_priority(value: Any, expected: int) -> None:
    assert parse_priority(value) == expected


@pytest.mark.parametrize("value", [True, False, "urgent", "10", 1.5, math.nan, [], ""])
def test_parse_priority_rejects(value: Any) -> None:
    with pytest.raises(InvalidPriority) as caught:
        parse_priority(value)
    assert caught.value.field == "priority"


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)))
def test_parse_priority_returns_an_int_or_raises_invalid_priority(value: Any) -> None:
    result, error = outcome(lambda: parse_priority(value))
    if error is not None:
        assert isinstance(error, InvalidPriority)
        assert error.field == "priority"
        return
    assert type(result) is int

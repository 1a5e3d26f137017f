"""Strings read as Node's human-interval 2.0.1 reads them (values printed by Node for the same strings)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agendapy.schedule.human_interval import node_human_interval


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 minutes", 120_000),
        ("2.5555 seconds", 2555.5),
        ("1.5 days", 129_600_000),
        ("2 months", 5_184_000_000),
        ("1 year", 31_536_000_000),
        ("minutes", 60_000),
        ("one second", 1000),
        ("three minutes 30 seconds", 210_000),
        ("thirty three seconds", 33_000),
        ("hundred and three seconds and twelve minutes", 823_000),
        ("three hundred and twenty-five seconds", 325_000),
        ("zero point five seconds", 500),
        ("five point zero five seconds", 5050),
        ("negative five seconds", -5000),
        ("-2 hours", -7_200_000),
        ("1e3 seconds", 1_000_000),
        ("five five seconds", 55_000),
        ("one thousand and one seconds", 11_000),  # "thous" is no number word: "one one"
        ("an hour", 0),  # "an" is not a number word
        ("every monday", 0),  # "mon" before "day"
        ("thousand seconds", 0),  # the "and" inside "thousand" is dropped
        ("500 milliseconds", 500_000),  # "milli" + "seconds"
        ("5 minutes foo", 300_000),  # trailing text is ignored
        ("1 hour 30", 3_600_000),
        ("@hourly", 3_600_000),
    ],
)
def test_node_human_interval_matches_node(text: str, expected: float) -> None:
    assert node_human_interval(text) == expected


@pytest.mark.parametrize("text", ["", "foobar", "10ms", "3 Minutes", "PT15M", "@daily", "* * * * *", "5000"])
def test_node_human_interval_is_nan_where_node_cannot_read(text: str) -> None:
    assert math.isnan(node_human_interval(text))


@given(st.text(max_size=40))
def test_node_human_interval_never_raises(text: str) -> None:
    assert isinstance(node_human_interval(text), float)

"""Repeat specs: what every() is given, and a stored repeatInterval read as Agenda 6.2.6 reads it.

Expected numbers come from Agenda 6.2.6's tests and from running Node's human-interval 2.0.1 and
cron-parser 5 on the same inputs.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from schedule_support import anything, ms, outcome

from agendapy.errors import InvalidInterval
from agendapy.schedule.repeat import RepeatSpec, interval_from_document, parse_interval

# ---------------------------------------------------------------------------------------------------
# Repeat intervals given to the Python API
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0 6 * * *", RepeatSpec(cron="0 6 * * *", every=None, stored="0 6 * * *")),
        ("*/5 * * * * *", RepeatSpec(cron="*/5 * * * * *", every=None, stored="*/5 * * * * *")),
        ("0 9 * * mon-fri", RepeatSpec(cron="0 9 * * mon-fri", every=None, stored="0 9 * * mon-fri")),
        ("  0  6 * * *  ", RepeatSpec(cron="0 6 * * *", every=None, stored="0  6 * * *")),
        ("@daily", RepeatSpec(cron="0 0 * * *", every=None, stored="@daily")),
        ("@annually", RepeatSpec(cron="0 0 1 1 *", every=None, stored="@annually")),
        # Node reads "@hourly" as the human interval "hour", so the expression is stored instead.
        ("@hourly", RepeatSpec(cron="0 * * * *", every=None, stored="0 * * * *")),
        ("@secondly", RepeatSpec(cron="* * * * * *", every=None, stored="* * * * * *")),
    ],
)
def test_parse_interval_reads_cron(value: str, expected: RepeatSpec) -> None:
    assert parse_interval(value) == expected


@pytest.mark.parametrize(
    ("value", "every", "stored"),
    [
        # Strings Node reads to the same length are stored as given (Agendash shows them).
        ("3 minutes", timedelta(minutes=3), "3 minutes"),
        ("1 hour and 30 minutes", timedelta(minutes=90), "1 hour and 30 minutes"),
        ("1.5 days", timedelta(hours=36), "1.5 days"),
        ("one second", timedelta(seconds=1), "one second"),
        ("two hours", timedelta(hours=2), "two hours"),
        ("2 months", timedelta(days=60), "2 months"),
        ("thirty three seconds", timedelta(seconds=33), "thirty three seconds"),
        # Strings Node would read differently are stored as milliseconds.
        ("an hour", timedelta(hours=1), 3_600_000),
        ("500 milliseconds", ms(500), 500),
        ("10ms", ms(10), 10),
        ("3 Minutes", timedelta(minutes=3), 180_000),
        ("1h30m", timedelta(minutes=90), 5_400_000),
        ("PT15M", timedelta(minutes=15), 900_000),
        # Numbers are seconds; everything non-string is stored as milliseconds.
        (5, timedelta(seconds=5), 5000),
        (0.5, ms(500), 500),
        (timedelta(minutes=3), timedelta(minutes=3), 180_000),
        ({"minutes": 15}, timedelta(minutes=15), 900_000),
        (timedelta(microseconds=1500), ms(1), 1),
    ],
)
def test_parse_interval_reads_durations(value: Any, every: timedelta, stored: str | int) -> None:
    assert parse_interval(value) == RepeatSpec(cron=None, every=every, stored=stored)


@pytest.mark.parametrize(
    "value",
    [
        "asd",
        "",
        "5000",
        "*/0 * * * *",
        "60 * * * *",
        "0 0 31 2 *",  # never fires
        "H * * * *",
        "R 0 * * *",
        "0 0 15W * *",
        "* * * * * * *",
        0,
        -5,
        0.0004,
        timedelta(0),
        True,
        None,
        math.nan,
        {"minutes": -1},
    ],
)
def test_parse_interval_rejects_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidInterval) as caught:
        parse_interval(value, field="repeat_every")
    assert caught.value.field == "repeat_every"


# ---------------------------------------------------------------------------------------------------
# Stored repeatInterval, read as Agenda 6.2.6 does
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5000, RepeatSpec(cron=None, every=ms(5000), stored=5000)),
        (1500.7, RepeatSpec(cron=None, every=ms(1500), stored=1500)),
        ("5000", RepeatSpec(cron=None, every=ms(5000), stored="5000")),
        (" 5000 ", RepeatSpec(cron=None, every=ms(5000), stored=" 5000 ")),
        ("5e3", RepeatSpec(cron=None, every=ms(5000), stored="5e3")),
        ("2 minutes", RepeatSpec(cron=None, every=timedelta(minutes=2), stored="2 minutes")),
        ("one second", RepeatSpec(cron=None, every=timedelta(seconds=1), stored="one second")),
        ("500 milliseconds", RepeatSpec(cron=None, every=timedelta(seconds=500), stored="500 milliseconds")),
        ("0 6 * * *", RepeatSpec(cron="0 6 * * *", every=None, stored="0 6 * * *")),
        ("*/5 * * * * *", RepeatSpec(cron="*/5 * * * * *", every=None, stored="*/5 * * * * *")),
        ("@daily", RepeatSpec(cron="0 0 * * *", every=None, stored="@daily")),
        ("@hourly", RepeatSpec(cron=None, every=timedelta(hours=1), stored="@hourly")),
    ],
)
def test_interval_from_document_reads_like_agenda(value: str | int | float, expected: RepeatSpec) -> None:
    assert interval_from_document(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "asd",
        "an hour",
        "-5",
        "0",
        0,
        -5,
        math.nan,
        math.inf,
        "Infinity",
        True,
        None,
        [],
        "0 0 * * L5",
        "0 0 31 2 *",
    ],
)
def test_interval_from_document_rejects_with_agendas_reason(value: Any) -> None:
    with pytest.raises(InvalidInterval) as caught:
        interval_from_document(value)
    assert caught.value.field == "repeatInterval"
    assert caught.value.reason.startswith(
        f"failed to calculate nextRunAt due to invalid repeat interval ({value}): "
    )


durations = st.one_of(
    st.integers(min_value=1, max_value=10**8),
    st.floats(min_value=0.001, max_value=1e8),
    st.timedeltas(min_value=ms(1), max_value=timedelta(days=10_000)),
    st.dictionaries(
        st.sampled_from(["weeks", "days", "hours", "minutes", "seconds", "milliseconds"]),
        st.integers(min_value=1, max_value=1000),
        min_size=1,
    ),
    st.builds(
        lambda number, unit, tail: f"{number} {unit}{tail}",
        st.one_of(
            st.integers(1, 10_000).map(str), st.sampled_from(["one", "two", "thirty three", "an", "1.5"])
        ),
        st.sampled_from(
            ["second", "seconds", "minutes", "hour", "days", "weeks", "months", "year", "ms", "h"]
        ),
        st.sampled_from(["", " and 5 minutes", ", 2 seconds", " 10 ms"]),
    ),
    st.sampled_from(
        ["PT15M", "P1DT2H", "P2W", "0 6 * * *", "*/5 * * * * *", "@daily", "@hourly", "@weekends"]
    ),
)


@given(durations)
def test_stored_interval_reads_back_as_the_same_schedule(value: Any) -> None:
    parsed = parse_interval(value)
    assert interval_from_document(parsed.stored) == RepeatSpec(parsed.cron, parsed.every, parsed.stored)


@given(anything)
def test_parse_interval_returns_one_kind_or_raises_invalid_interval(value: Any) -> None:
    result, error = outcome(lambda: parse_interval(value, field="ival"))
    if error is not None:
        assert isinstance(error, InvalidInterval)
        assert error.field == "ival"
        return
    assert result is not None
    assert (result.cron is None) != (result.every is None)
    assert result.every is None or result.every >= ms(1)


@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.none()))
def test_interval_from_document_returns_an_interval_or_raises_invalid_interval(value: Any) -> None:
    result, error = outcome(lambda: interval_from_document(value))
    if error is not None:
        assert isinstance(error, InvalidInterval)
        assert error.field == "repeatInterval"
        return
    assert result is not None
    assert (result.cron is None) != (result.every is None)

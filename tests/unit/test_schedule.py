"""Schedule maths and parsing: durations, intervals, cron, dates, constraints and computeNextRunAt.

Expected numbers come from Agenda 6.2.6's tests (reference agenda-6.md, items 184-208) and from running
Node's human-interval 2.0.1 and cron-parser 5 on the same inputs. No test reads the clock: ``now`` is
always passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agendapy.dates import node_human_interval
from agendapy.errors import InvalidDate, InvalidInput, InvalidInterval, InvalidPriority, InvalidTimezone
from agendapy.schedule import (
    Interval,
    apply_date_constraints,
    compute_next_run_at,
    interval_from_document,
    is_cron,
    next_cron,
    next_repeat_at,
    parse_interval,
    parse_priority,
    parse_skip_days,
    parse_timezone,
    parse_when,
    to_timedelta,
    to_utc,
    utcnow,
)

T = TypeVar("T")
NEW_YORK = ZoneInfo("America/New_York")
VIENNA = ZoneInfo("Europe/Vienna")
TOKYO = ZoneInfo("Asia/Tokyo")
AUCKLAND = ZoneInfo("Pacific/Auckland")
NOW = datetime(2024, 3, 10, 12, 34, 56, 789000, tzinfo=UTC)  # a Sunday


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def outcome(call: Callable[[], T]) -> tuple[T | None, InvalidInput | None]:
    """Run ``call``; return its result, or the input error it raised (any other exception escapes)."""
    try:
        return call(), None
    except InvalidInput as error:
        return None, error


def ms(value: float) -> timedelta:
    return timedelta(milliseconds=value)


def next_run(**kwargs: Any) -> datetime | None:
    options: dict[str, Any] = {"repeat_interval": None, "repeat_timezone": None, "repeat_at": None}
    options.update(kwargs)
    options.setdefault("now", NOW)
    options.setdefault("last_run_at", None)
    return compute_next_run_at(**options)


# ---------------------------------------------------------------------------------------------------
# Instants
# ---------------------------------------------------------------------------------------------------


def test_utcnow_is_aware_utc_in_whole_milliseconds() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert now.microsecond % 1000 == 0


def test_to_utc_reads_naive_as_utc_converts_aware_and_truncates_to_milliseconds() -> None:
    assert to_utc(datetime(2024, 1, 1, 12, 0, 0, 123999)) == utc(2024, 1, 1, 12, 0, 0, 123000)
    assert to_utc(datetime(2024, 1, 1, 12, tzinfo=TOKYO)) == utc(2024, 1, 1, 3)
    assert to_utc(datetime(2024, 1, 1, 12, tzinfo=TOKYO)).tzinfo is UTC


def test_to_utc_rejects_what_is_not_a_datetime() -> None:
    with pytest.raises(InvalidDate):
        to_utc("2024-01-01")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# Durations (Python API)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 minutes", timedelta(minutes=3)),
        ("1 hour and 30 minutes", timedelta(minutes=90)),
        ("2 hours, 30 minutes", timedelta(minutes=150)),
        ("1.5 days", timedelta(hours=36)),
        ("one second", timedelta(seconds=1)),
        ("two hours", timedelta(hours=2)),
        ("an hour", timedelta(hours=1)),
        ("a minute", timedelta(minutes=1)),
        ("5 seconds", timedelta(seconds=5)),
        ("10ms", ms(10)),
        ("500 milliseconds", ms(500)),
        ("250 us", timedelta(microseconds=250)),
        ("1 week", timedelta(weeks=1)),
        ("2 months", timedelta(days=60)),
        ("1 year", timedelta(days=365)),
        ("minute", timedelta(minutes=1)),
        ("thirty three seconds", timedelta(seconds=33)),
        ("twenty-five minutes", timedelta(minutes=25)),
        ("hundred and three seconds and twelve minutes", timedelta(seconds=103, minutes=12)),
        ("1h30m", timedelta(minutes=90)),
        ("3 Minutes", timedelta(minutes=3)),
        ("  5 seconds  ", timedelta(seconds=5)),
        ("PT15M", timedelta(minutes=15)),
        ("P1D", timedelta(days=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P2W", timedelta(weeks=2)),
        ("P1M", timedelta(days=30)),
        ("P1Y", timedelta(days=365)),
        ("pt1.5s", timedelta(seconds=1.5)),
    ],
)
def test_to_timedelta_reads_human_and_iso_strings(text: str, expected: timedelta) -> None:
    assert to_timedelta(text, field="every") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, timedelta(seconds=5)),
        (0.25, timedelta(milliseconds=250)),
        (timedelta(minutes=2), timedelta(minutes=2)),
        ({"minutes": 15, "hours": 1}, timedelta(minutes=75)),
        ({"weeks": 1, "milliseconds": 5, "microseconds": 7}, timedelta(weeks=1, microseconds=5007)),
        ({"seconds": 0.5}, timedelta(milliseconds=500)),
    ],
)
def test_to_timedelta_reads_numbers_as_seconds_timedeltas_and_mappings(
    value: Any, expected: timedelta
) -> None:
    assert to_timedelta(value, field="every") == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.5,
        "-5 minutes",
        timedelta(seconds=-1),
        {"minutes": -1},
        0,
        0.0,
        "0 seconds",
        timedelta(0),
        {},
        {"minutes": 0},
        math.nan,
        math.inf,
        -math.inf,
        True,
        False,
        None,
        [],
        b"5 seconds",
        "",
        "   ",
        "5000",
        "0x10",
        "foo",
        "every 5 minutes",
        "5 minutes foo",
        "5 3 minutes",
        "five five seconds",
        "1 fortnight",
        "P",
        "PT-5M",
        "-PT5M",
        {"fortnights": 1},
        {"minutes": "5"},
        {"minutes": True},
        {"minutes": math.nan},
        10**30,
        "1e400 seconds",
        {"days": 10**12},
    ],
)
def test_to_timedelta_rejects_bad_durations_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidInterval) as caught:
        to_timedelta(value, field="lock_lifetime")
    assert caught.value.field == "lock_lifetime"
    assert "lock_lifetime" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_to_timedelta_accepts_zero_only_when_allowed() -> None:
    assert to_timedelta(0, field="delay", allow_zero=True) == timedelta(0)
    assert to_timedelta("0 seconds", field="delay", allow_zero=True) == timedelta(0)
    with pytest.raises(InvalidInterval):
        to_timedelta(-1, field="delay", allow_zero=True)


def test_bare_number_strings_are_refused_as_ambiguous() -> None:
    with pytest.raises(InvalidInterval, match="ambiguous"):
        to_timedelta("5000", field="interval")


# ---------------------------------------------------------------------------------------------------
# Node's human-interval 2.0.1, quirks included (values printed by Node for the same strings)
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# Repeat intervals given to the Python API
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0 6 * * *", Interval(cron="0 6 * * *", every=None, stored="0 6 * * *")),
        ("*/5 * * * * *", Interval(cron="*/5 * * * * *", every=None, stored="*/5 * * * * *")),
        ("0 9 * * mon-fri", Interval(cron="0 9 * * mon-fri", every=None, stored="0 9 * * mon-fri")),
        ("  0  6 * * *  ", Interval(cron="0 6 * * *", every=None, stored="0  6 * * *")),
        ("@daily", Interval(cron="0 0 * * *", every=None, stored="@daily")),
        ("@annually", Interval(cron="0 0 1 1 *", every=None, stored="@annually")),
        # Node reads "@hourly" as the human interval "hour", so the expression is stored instead.
        ("@hourly", Interval(cron="0 * * * *", every=None, stored="0 * * * *")),
        ("@secondly", Interval(cron="* * * * * *", every=None, stored="* * * * * *")),
    ],
)
def test_parse_interval_reads_cron(value: str, expected: Interval) -> None:
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
    assert parse_interval(value) == Interval(cron=None, every=every, stored=stored)


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


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("* * * * *", True),
        ("0 6 * * *", True),
        ("*/15 0-6 1,15 jan-jun mon-fri", True),
        ("0 0 L * *", True),
        ("0 0 * * 1#2", True),
        ("0 0 ? * *", True),
        ("*/10 * * * * *", True),
        ("0 0 * * 7", True),
        ("* * * *", False),
        ("* * * * * * *", False),
        ("60 * * * *", False),
        ("0 24 * * *", False),
        ("0 0 * * 8", False),
        ("@daily", False),
        ("H * * * *", False),
        ("R * * * *", False),
        ("0 0 15W * *", False),
        ("asd", False),
        ("", False),
        ("٣ * * * *", False),
    ],
)
def test_is_cron(expression: str, expected: bool) -> None:
    assert is_cron(expression) is expected


def test_is_cron_refuses_non_strings() -> None:
    assert is_cron(5) is False  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# Stored repeatInterval, read as Agenda 6.2.6 does
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5000, Interval(cron=None, every=ms(5000), stored=5000)),
        (1500.7, Interval(cron=None, every=ms(1500), stored=1500)),
        ("5000", Interval(cron=None, every=ms(5000), stored="5000")),
        (" 5000 ", Interval(cron=None, every=ms(5000), stored=" 5000 ")),
        ("5e3", Interval(cron=None, every=ms(5000), stored="5e3")),
        ("2 minutes", Interval(cron=None, every=timedelta(minutes=2), stored="2 minutes")),
        ("one second", Interval(cron=None, every=timedelta(seconds=1), stored="one second")),
        ("500 milliseconds", Interval(cron=None, every=timedelta(seconds=500), stored="500 milliseconds")),
        ("0 6 * * *", Interval(cron="0 6 * * *", every=None, stored="0 6 * * *")),
        ("*/5 * * * * *", Interval(cron="*/5 * * * * *", every=None, stored="*/5 * * * * *")),
        ("@daily", Interval(cron="0 0 * * *", every=None, stored="@daily")),
        ("@hourly", Interval(cron=None, every=timedelta(hours=1), stored="@hourly")),
    ],
)
def test_interval_from_document_reads_like_agenda(value: str | int | float, expected: Interval) -> None:
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
    assert interval_from_document(parsed.stored) == Interval(parsed.cron, parsed.every, parsed.stored)


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.timedeltas(),
    st.dictionaries(
        st.one_of(st.text(max_size=12), st.sampled_from(["minutes", "days"])),
        st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
        max_size=3,
    ),
    st.lists(st.integers(), max_size=3),
)


@given(anything)
def test_to_timedelta_returns_a_duration_or_raises_invalid_interval(value: Any) -> None:
    result, error = outcome(lambda: to_timedelta(value, field="dur"))
    if error is not None:
        assert isinstance(error, InvalidInterval)
        assert error.field == "dur"
        return
    assert isinstance(result, timedelta)
    assert result > timedelta(0)


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


# ---------------------------------------------------------------------------------------------------
# Cron
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "zone", "expected"),
    [
        ("*/2 * * * *", utc(2015, 1, 1, 6, 1), None, utc(2015, 1, 1, 6, 2)),
        ("0 6 * * *", utc(2015, 1, 1, 6, 1), ZoneInfo("GMT"), utc(2015, 1, 2, 6)),
        ("0 6 * * *", utc(2015, 1, 1, 6, 0), ZoneInfo("GMT"), utc(2015, 1, 2, 6)),  # strictly after
        ("0 6 * * *", utc(2015, 1, 1, 5, 59, 59, 999000), None, utc(2015, 1, 1, 6)),
        ("0 16 * * *", utc(2015, 1, 1, 6, 1), VIENNA, utc(2015, 1, 1, 15)),
        ("0 16 * * *", utc(2015, 7, 1, 6, 1), VIENNA, utc(2015, 7, 1, 14)),  # summer time
        ("* * * * *", utc(2015, 1, 1, 6, 1, 59, 999000), None, utc(2015, 1, 1, 6, 2)),
        ("0 0 * 1 *", utc(2015, 3, 1), None, utc(2016, 1, 1)),  # months are 1-based
        ("*/5 * * * * *", utc(2015, 1, 1, 6, 1, 0, 500000), None, utc(2015, 1, 1, 6, 1, 5)),  # seconds first
        ("30 0 0 * * *", utc(2015, 1, 1, 6), None, utc(2015, 1, 2, 0, 0, 30)),
        ("0 0 29 2 *", utc(2025, 3, 1), None, utc(2028, 2, 29)),
        ("0 9 * * mon-fri", utc(2024, 3, 9, 12), None, utc(2024, 3, 11, 9)),
        ("0 0 * * 7", utc(2015, 1, 1, 6), None, utc(2015, 1, 4)),  # 7 is Sunday
    ],
)
def test_next_cron(expression: str, after: datetime, zone: ZoneInfo | None, expected: datetime) -> None:
    assert next_cron(expression, after, zone) == expected


def sequence(expression: str, after: datetime, zone: ZoneInfo, count: int) -> list[datetime]:
    runs = []
    for _ in range(count):
        after = next_cron(expression, after, zone)
        runs.append(after)
    return runs


def test_cron_across_spring_forward_shifts_the_skipped_time_by_the_gap() -> None:
    # New York, 2024-03-10: 02:00 EST becomes 03:00 EDT (07:00Z).
    assert next_cron("30 2 * * *", utc(2024, 3, 10, 5), NEW_YORK) == utc(2024, 3, 10, 7, 30)  # 03:30 EDT
    assert sequence("30 2 * * *", utc(2024, 3, 10, 5), NEW_YORK, 2)[1] == utc(2024, 3, 11, 6, 30)
    assert sequence("0 * * * *", utc(2024, 3, 10, 5, 30), NEW_YORK, 3) == [
        utc(2024, 3, 10, 6),  # 01:00 EST
        utc(2024, 3, 10, 7),  # 02:00 does not exist: 03:00 EDT, once
        utc(2024, 3, 10, 8),  # 04:00 EDT
    ]
    assert sequence("30 1-2 * * *", utc(2024, 3, 10, 4), NEW_YORK, 3) == [
        utc(2024, 3, 10, 6, 30),
        utc(2024, 3, 10, 7, 30),
        utc(2024, 3, 11, 5, 30),
    ]


def test_cron_across_fall_back_runs_fixed_times_once_and_hourly_ones_every_hour() -> None:
    # New York, 2024-11-03: 02:00 EDT becomes 01:00 EST (06:00Z); 01:xx happens twice.
    assert sequence("30 1 * * *", utc(2024, 11, 3, 4), NEW_YORK, 2) == [
        utc(2024, 11, 3, 5, 30),
        utc(2024, 11, 4, 6, 30),
    ]
    assert sequence("0 * * * *", utc(2024, 11, 3, 4, 30), NEW_YORK, 4) == [
        utc(2024, 11, 3, 5),  # 01:00 EDT
        utc(2024, 11, 3, 6),  # 01:00 EST
        utc(2024, 11, 3, 7),  # 02:00 EST
        utc(2024, 11, 3, 8),
    ]
    assert sequence("0 1-2 * * *", utc(2024, 11, 3, 4), NEW_YORK, 2) == [
        utc(2024, 11, 3, 5),
        utc(2024, 11, 3, 7),
    ]


def test_cron_with_a_half_hour_dst_gap() -> None:
    # Lord Howe Island, 2024-10-06: 02:00 (+10:30) becomes 02:30 (+11).
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    assert next_cron("0 2 * * *", utc(2024, 10, 5, 13, 29), lord_howe) == utc(2024, 10, 5, 15, 30)
    assert next_cron("0 30 2 * * *", utc(2024, 10, 5, 15, 11), lord_howe) == utc(2024, 10, 5, 15, 30)


@pytest.mark.parametrize("expression", ["asd", "* * * *", "0 0 31 2 *", "60 * * * *", ""])
def test_next_cron_rejects_invalid_expressions(expression: str) -> None:
    with pytest.raises(InvalidInterval):
        next_cron(expression, NOW, None)


cron_expressions = st.sampled_from(
    [
        "* * * * *",
        "*/7 * * * *",
        "0 */3 * * *",
        "30 2 * * *",
        "15 1 * * 0",
        "0 0 1 * *",
        "*/20 * * * * *",
        "5 4 * 2 mon",
    ]
)
zones = st.sampled_from([None, NEW_YORK, VIENNA, TOKYO, AUCKLAND, ZoneInfo("Australia/Lord_Howe")])
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


@given(cron_expressions, instants, zones)
def test_next_cron_is_the_first_occurrence_after(
    expression: str, after: datetime, zone: ZoneInfo | None
) -> None:
    result = next_cron(expression, after, zone)
    assert result > after
    assert result.tzinfo is UTC
    assert result.microsecond == 0
    # Nothing fires between `after` and the result: asking again just before it finds it again.
    assert next_cron(expression, result - ms(1), zone) == result
    if zone is None:
        assert croniter.match(
            expression, result.replace(tzinfo=None), second_at_beginning=len(expression.split()) == 6
        )


# ---------------------------------------------------------------------------------------------------
# repeatAt
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repeat_at", "zone", "expected"),
    [
        ("3:30pm", None, utc(2024, 3, 10, 15, 30)),
        ("3:30 pm", None, utc(2024, 3, 10, 15, 30)),
        ("15:30", None, utc(2024, 3, 10, 15, 30)),
        ("11:59pm", None, utc(2024, 3, 10, 23, 59)),
        ("at 9am", None, utc(2024, 3, 11, 9)),  # already past today
        ("noon", None, utc(2024, 3, 11, 12)),
        ("midnight", None, utc(2024, 3, 11, 0)),
        ("12am", None, utc(2024, 3, 11, 0)),
        ("15:30:20", None, utc(2024, 3, 10, 15, 30, 20)),
        ("3:30pm", NEW_YORK, utc(2024, 3, 10, 19, 30)),  # EDT since this morning
        ("3:30pm", TOKYO, utc(2024, 3, 11, 6, 30)),  # 21:34 in Tokyo: tomorrow
    ],
)
def test_next_repeat_at(repeat_at: str, zone: ZoneInfo | None, expected: datetime) -> None:
    assert next_repeat_at(repeat_at, last_run_at=None, now=NOW, timezone=zone) == expected


def test_next_repeat_at_moves_to_tomorrow_when_today_is_the_last_run_or_not_after_now() -> None:
    now = utc(2024, 3, 10, 12, 33)
    assert next_repeat_at("12:34pm", last_run_at=None, now=now, timezone=None) == utc(2024, 3, 10, 12, 34)
    assert next_repeat_at("12:34pm", last_run_at=utc(2024, 3, 10, 12, 34), now=now, timezone=None) == utc(
        2024, 3, 11, 12, 34
    )
    assert next_repeat_at("12:34pm", last_run_at=None, now=utc(2024, 3, 10, 12, 34), timezone=None) == utc(
        2024, 3, 11, 12, 34
    )


def test_next_repeat_at_in_a_dst_gap_shifts_forward() -> None:
    assert next_repeat_at("2:30am", last_run_at=None, now=utc(2024, 3, 10, 5), timezone=NEW_YORK) == utc(
        2024, 3, 10, 7, 30
    )


@pytest.mark.parametrize("repeat_at", ["foo", "", "25:00", "13pm", "15", "3:60pm", None])
def test_next_repeat_at_rejects_with_agendas_reason(repeat_at: Any) -> None:
    with pytest.raises(InvalidDate) as caught:
        next_repeat_at(repeat_at, last_run_at=None, now=NOW, timezone=None)
    assert caught.value.field == "repeatAt"
    assert caught.value.reason == "failed to calculate repeatAt time due to invalid format"


# ---------------------------------------------------------------------------------------------------
# Date constraints (Agenda's test/date-constraints.test.ts)
# ---------------------------------------------------------------------------------------------------

MONDAY = utc(2024, 1, 15, 14, 30)
SATURDAY = utc(2024, 1, 13, 14, 30)
SUNDAY = utc(2024, 1, 14, 14, 30)


def constrain(when: datetime | None, **kwargs: Any) -> datetime | None:
    options: dict[str, Any] = {"start_date": None, "end_date": None, "skip_days": None, "timezone": None}
    options.update(kwargs)
    return apply_date_constraints(when, **options)


def test_no_constraints_change_nothing() -> None:
    assert constrain(MONDAY) == MONDAY
    assert constrain(MONDAY, skip_days=[]) == MONDAY
    assert constrain(None, start_date=MONDAY) is None


def test_start_and_end_dates() -> None:
    assert constrain(SATURDAY, start_date=MONDAY) == MONDAY
    assert constrain(MONDAY, start_date=SATURDAY) == MONDAY
    assert constrain(MONDAY, end_date=SATURDAY) is None
    assert constrain(SATURDAY, start_date=SATURDAY, end_date=MONDAY) == SATURDAY


def test_skip_days_move_forward_keeping_the_time_of_day() -> None:
    assert constrain(MONDAY, skip_days=[1]) == utc(2024, 1, 16, 14, 30)
    assert constrain(SUNDAY, skip_days=[0]) == MONDAY
    assert constrain(SATURDAY, skip_days=[0, 6]) == MONDAY
    assert constrain(MONDAY, skip_days=[0, 6]) == MONDAY
    assert constrain(MONDAY, skip_days=[0, 1, 2, 3, 4, 5, 6]) is None


def test_skip_days_are_read_in_the_timezone() -> None:
    sunday_utc_monday_auckland = utc(2024, 1, 14, 20)  # Monday 09:00 in Auckland (+13)
    assert constrain(sunday_utc_monday_auckland, skip_days=[0]) == utc(2024, 1, 15, 20)
    assert (
        constrain(sunday_utc_monday_auckland, skip_days=[0], timezone=AUCKLAND) == sunday_utc_monday_auckland
    )
    assert constrain(sunday_utc_monday_auckland, skip_days=[1], timezone=AUCKLAND) == utc(2024, 1, 15, 20)


def test_skip_days_keep_the_wall_time_across_dst() -> None:
    saturday_9am_new_york = utc(2024, 3, 9, 14)  # EST
    assert constrain(saturday_9am_new_york, skip_days=[6, 0], timezone=NEW_YORK) == utc(
        2024, 3, 11, 13
    )  # EDT


def test_start_date_then_skip_days_then_end_date() -> None:
    assert constrain(utc(2024, 1, 1), start_date=SATURDAY, skip_days=[0, 6]) == MONDAY
    assert constrain(SATURDAY, skip_days=[0, 6], end_date=SUNDAY) is None


def test_constraints_tolerate_document_values() -> None:
    assert constrain(MONDAY, skip_days=[1.0]) == utc(2024, 1, 16, 14, 30)
    assert constrain(MONDAY, skip_days=["1", None]) == MONDAY


def test_parse_skip_days_sorts_and_deduplicates() -> None:
    assert parse_skip_days([6, 0, 6, 1]) == [0, 1, 6]
    assert parse_skip_days([]) == []
    assert parse_skip_days(None) is None
    assert parse_skip_days(iter([3])) == [3]


@pytest.mark.parametrize("day", [7, -1, 1.5, True, "1", None])
def test_parse_skip_days_names_the_bad_day(day: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_skip_days([1, day], field="skip_days")
    assert caught.value.field == "skip_days"
    assert caught.value.value == day
    assert "0-6" in str(caught.value)


@pytest.mark.parametrize("days", [5, "06", b"1"])
def test_parse_skip_days_needs_a_collection(days: Any) -> None:
    with pytest.raises(InvalidInput):
        parse_skip_days(days)


# ---------------------------------------------------------------------------------------------------
# Timezones and priorities
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Europe/Vienna", "Europe/Vienna"),
        ("europe/vienna", "Europe/Vienna"),
        ("UTC", "UTC"),
        ("utc", "UTC"),
        ("GMT", "GMT"),
        ("America/New_York", "America/New_York"),
        ("Etc/GMT+5", "Etc/GMT+5"),
    ],
)
def test_parse_timezone(name: str, expected: str) -> None:
    zone = parse_timezone(name)
    assert zone is not None
    assert zone.key == expected


def test_parse_timezone_none_or_empty_is_no_timezone() -> None:
    assert parse_timezone(None) is None
    assert parse_timezone("") is None


@pytest.mark.parametrize(
    "name",
    ["Mars/Olympus", "../etc/passwd", "/etc/localtime", "America", "\x00", "x" * 5000, " ", 5, ["UTC"]],
)
def test_parse_timezone_rejects_unknown_names(name: Any) -> None:
    with pytest.raises(InvalidTimezone) as caught:
        parse_timezone(name, field="repeat_timezone")
    assert caught.value.field == "repeat_timezone"


@given(st.text(max_size=40))
def test_parse_timezone_returns_a_zone_or_raises_invalid_timezone(name: str) -> None:
    zone, error = outcome(lambda: parse_timezone(name))
    if error is not None:
        assert isinstance(error, InvalidTimezone)
        assert error.field == "timezone"
        return
    assert zone is None or isinstance(zone, ZoneInfo)


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


# ---------------------------------------------------------------------------------------------------
# When to run
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("now", None, NOW),
        ("NOW", None, NOW),
        ("2019-04-30T22:31:00.00Z", None, datetime.fromtimestamp(1556663460, UTC)),  # Agenda #807
        ("2019-04-30T22:31:00.00Z", TOKYO, datetime.fromtimestamp(1556663460, UTC)),
        ("2024-05-01", None, utc(2024, 5, 1)),
        ("2024-05-01 10:00", TOKYO, utc(2024, 5, 1, 1)),  # no offset: wall time in the timezone
        ("2024-05-01T10:00:00+02:00", TOKYO, utc(2024, 5, 1, 8)),
        ("in 20 minutes", None, NOW + timedelta(minutes=20)),
        ("in 1 hour", None, NOW + timedelta(hours=1)),
        ("in an hour", None, NOW + timedelta(hours=1)),
        ("in 10ms", None, NOW + ms(10)),
        ("20 minutes from now", None, NOW + timedelta(minutes=20)),
        ("2 hours ago", None, NOW - timedelta(hours=2)),
        ("tomorrow at noon", None, utc(2024, 3, 11, 12)),
        ("tomorrow at noon", TOKYO, utc(2024, 3, 11, 3)),
        ("tomorrow at noon", NEW_YORK, utc(2024, 3, 11, 16)),  # EDT
        ("3:30pm", None, utc(2024, 3, 10, 15, 30)),
        ("next monday at 9am", None, utc(2024, 3, 11, 9)),
        ("Tue, 30 Apr 2019 22:31:00 GMT", None, datetime.fromtimestamp(1556663460, UTC)),
    ],
)
def test_parse_when_reads_strings(text: str, zone: ZoneInfo | None, expected: datetime) -> None:
    assert parse_when(text, now=NOW, timezone=zone) == expected


def test_parse_when_reads_datetimes() -> None:
    assert parse_when(datetime(2024, 1, 1, 12, 0, 0, 999999)) == utc(2024, 1, 1, 12, 0, 0, 999000)
    assert parse_when(datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))) == utc(2024, 1, 1, 10)


def test_parse_when_results_are_utc_in_whole_milliseconds() -> None:
    result = parse_when("in 20 minutes", now=datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC))
    assert result == utc(2024, 1, 1, 0, 20, 0, 123000)
    assert result.tzinfo is UTC


@pytest.mark.parametrize("value", ["foo", "", "   ", "in 5", 5, None, 1.5, [], b"now"])
def test_parse_when_rejects_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidDate) as caught:
        parse_when(value, now=NOW, field="start_date")
    assert caught.value.field == "start_date"
    assert "start_date" in str(caught.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=25),
        st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
        st.integers(),
        st.none(),
    )
)
def test_parse_when_returns_utc_milliseconds_or_raises_invalid_date(value: Any) -> None:
    result, error = outcome(lambda: parse_when(value, now=NOW))
    if error is not None:
        assert isinstance(error, InvalidDate)
        assert error.field == "when"
        return
    assert result is not None
    assert result.tzinfo is UTC
    assert result.microsecond % 1000 == 0


# ---------------------------------------------------------------------------------------------------
# computeNextRunAt (Agenda's job tests 196-210)
# ---------------------------------------------------------------------------------------------------


def test_no_interval_and_no_repeat_at_means_no_next_run() -> None:
    assert next_run() is None
    assert next_run(repeat_interval="", last_run_at=NOW) is None
    assert next_run(repeat_interval=0, last_run_at=NOW) is None  # falsy in Agenda too


def test_human_interval_runs_exactly_one_interval_after_the_last_run() -> None:
    assert next_run(repeat_interval="2 minutes", last_run_at=NOW) == NOW + ms(120_000)


def test_a_never_run_interval_job_runs_now() -> None:
    assert next_run(repeat_interval="5 minutes") == NOW
    assert next_run(repeat_interval=300_000) == NOW


def test_skip_immediate_counts_from_the_scheduled_time() -> None:
    far = utc(3000, 1, 1)
    assert next_run(repeat_interval="3 minutes", last_run_at=far) == far + ms(180_000)


def test_numeric_intervals_are_milliseconds() -> None:
    assert next_run(repeat_interval=5000, last_run_at=NOW) == NOW + ms(5000)
    assert next_run(repeat_interval="5000", last_run_at=NOW) == NOW + ms(5000)


def test_run_of_a_ten_minute_job_is_due_in_ten_minutes() -> None:
    assert next_run(repeat_interval="10 minutes", last_run_at=NOW) == NOW + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("interval", "zone", "last_run_at", "expected"),
    [
        ("*/2 * * * *", None, utc(2015, 1, 1, 6, 1), utc(2015, 1, 1, 6, 2)),
        ("0 6 * * *", "GMT", utc(2015, 1, 1, 6, 1), utc(2015, 1, 2, 6)),
        ("0 6 * * *", "GMT", utc(2015, 1, 1, 6, 0), utc(2015, 1, 2, 6)),
        ("0 16 * * *", "Europe/Vienna", utc(2015, 1, 1, 6, 1), utc(2015, 1, 1, 15)),
        ("* * * * *", None, utc(2015, 1, 1, 6, 1, 59, 999000), utc(2015, 1, 1, 6, 2)),
        ("0 0 * 1 *", None, utc(2015, 3, 1), utc(2016, 1, 1)),
        ("0 6 * * *", "America/New_York", utc(2015, 1, 1, 12), utc(2015, 1, 2, 11)),
    ],
)
def test_cron_interval(interval: str, zone: str | None, last_run_at: datetime, expected: datetime) -> None:
    assert next_run(repeat_interval=interval, repeat_timezone=zone, last_run_at=last_run_at) == expected


def test_a_never_run_cron_job_runs_at_the_next_tick() -> None:
    assert next_run(repeat_interval="0 6 * * *") == utc(2024, 3, 11, 6)


def test_repeat_at_is_used_without_an_interval() -> None:
    assert next_run(repeat_at="11:59pm") == utc(2024, 3, 10, 23, 59)
    assert next_run(repeat_at="11:59pm", repeat_timezone="Asia/Tokyo") == utc(2024, 3, 10, 14, 59)


def test_invalid_repeat_at_fails_with_agendas_reason() -> None:
    with pytest.raises(InvalidDate, match="failed to calculate repeatAt time due to invalid format"):
        next_run(repeat_at="foo")


def test_invalid_repeat_interval_fails_with_agendas_reason() -> None:
    with pytest.raises(InvalidInterval) as caught:
        next_run(repeat_interval="asd", last_run_at=NOW)
    assert caught.value.reason.startswith(
        "failed to calculate nextRunAt due to invalid repeat interval (asd): "
    )


def test_invalid_repeat_timezone_fails() -> None:
    with pytest.raises(InvalidTimezone):
        next_run(repeat_interval="0 6 * * *", repeat_timezone="Mars/Olympus")


def test_an_interval_that_overflows_the_calendar_fails() -> None:
    with pytest.raises(InvalidInterval):
        next_run(repeat_interval="1000 years", last_run_at=utc(9500, 1, 1))


def test_date_constraints_apply_to_the_next_run() -> None:
    friday = utc(2024, 3, 8, 9)
    assert next_run(repeat_interval="1 day", last_run_at=friday, skip_days=[0, 6]) == utc(2024, 3, 11, 9)
    assert next_run(repeat_interval="1 day", last_run_at=friday, end_date=utc(2024, 3, 9)) is None
    assert next_run(repeat_interval="5 minutes", start_date=utc(2025, 1, 1)) == utc(2025, 1, 1)
    assert next_run(repeat_at="3:30pm", skip_days=[0]) == utc(2024, 3, 11, 15, 30)

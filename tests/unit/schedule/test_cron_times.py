"""When a cron expression fires in a timezone: next and previous instants, DST as cron-parser maps it.

Occurrences were taken from cron-parser 5.10.6 (Agenda 6.2.6's dependency) on the same expressions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import example, given
from hypothesis import strategies as st
from schedule_support import AUCKLAND, MS, NEW_YORK, NOW, TOKYO, VIENNA, ms, utc

from agendapy.errors import InvalidInterval
from agendapy.schedule.cron_times import next_cron, previous_cron
from agendapy.schedule.timezones import utc_offset


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
@example("30 2 * * *", datetime(2028, 3, 11, 8, 0, tzinfo=UTC), NEW_YORK)  # the next run is DST-shifted
def test_next_cron_is_the_first_occurrence_after(
    expression: str, after: datetime, zone: ZoneInfo | None
) -> None:
    result = next_cron(expression, after, zone)
    assert result > after
    assert result.tzinfo is UTC
    assert result.microsecond == 0
    six_fields = len(expression.split()) == 6
    wall = result.astimezone(zone or UTC).replace(tzinfo=None)
    if croniter.match(expression, wall, second_at_beginning=six_fields):
        # Nothing fires between `after` and the result: asking again just before it finds it again.
        assert next_cron(expression, result - ms(1), zone) == result
    else:
        # A time a DST change skipped, run shifted by the gap (02:30 -> 03:30). Asked from inside the
        # gap's shadow (03:10) it is not found again, as in Node's cron-parser (checked: 07:10Z on
        # 2028-03-12 in New York gives 2028-03-13T06:30Z there too).
        assert zone is not None
        gap = utc_offset(zone, result) - utc_offset(zone, result - timedelta(hours=3))
        assert gap > timedelta(0)
        assert croniter.match(expression, wall - gap, second_at_beginning=six_fields)
    if zone is None:
        assert croniter.match(expression, result.replace(tzinfo=None), second_at_beginning=six_fields)


@pytest.mark.parametrize("zone_name", ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize(
    "expression", ["0 * * * *", "*/15 * * * *", "30 2 * * *", "0 9 * * 1-5", "0 0 1 * *", "*/20 * * * * *"]
)
def test_previous_cron_agrees_with_croniter_where_both_read_the_syntax(
    expression: str, zone_name: str
) -> None:
    # intervals.py used croniter's get_prev; previous_cron replaces it so that "5L" works there too.
    # Away from DST changes both agree; around them previous_cron sees the instants next_cron uses
    # (checked by the next test), where croniter's differ (it shifts a skipped time differently and
    # picks the second of two repeated times).
    zone = ZoneInfo(zone_name)
    seconds = len(expression.split()) == 6
    for start in (utc(2026, 5, 1), utc(2026, 7, 31, 23, 59, 59), utc(2026, 12, 5)):
        at = start
        for _ in range(20):
            walker = croniter(expression, (at + MS).astimezone(zone), second_at_beginning=seconds)
            expected = walker.get_prev(datetime).astimezone(UTC)
            assert previous_cron(expression, at, zone) == expected, (expression, zone_name, at)
            at = expected - timedelta(minutes=7)


@pytest.mark.parametrize("zone_name", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("expression", ["0 * * * *", "30 2 * * *", "0 2 * * *", "*/20 * * * *", "0 0 * * 5L"])
def test_previous_cron_and_next_cron_see_the_same_ticks(expression: str, zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    for start in (utc(2026, 3, 8, 5), utc(2026, 3, 28, 22), utc(2026, 10, 3, 13), utc(2026, 10, 24, 22)):
        tick = next_cron(expression, start, zone)
        for _ in range(40):
            following = next_cron(expression, tick, zone)
            assert previous_cron(expression, following, zone) == following
            assert previous_cron(expression, following - MS, zone) == tick, (expression, zone_name, tick)
            tick = following


def test_previous_cron_reads_cron_parsers_last_weekday() -> None:
    assert previous_cron("0 0 * * 5L", utc(2026, 5, 1), None) == utc(2026, 4, 24)
    assert previous_cron("0 0 * * 5L", utc(2026, 4, 24), None) == utc(2026, 4, 24)


@pytest.mark.parametrize(
    ("expression", "start", "following", "preceding"),
    [
        ("0 0 15 * 5L", utc(2026, 5, 1), [(5, 15), (5, 29), (6, 15), (6, 26), (7, 15), (7, 31)],
         [(4, 24), (4, 15), (3, 27)]),
        ("0 0 * * 1,5L", utc(2026, 5, 1), [(5, 4), (5, 11), (5, 18), (5, 25), (5, 29), (6, 1)],
         [(4, 27), (4, 24), (4, 20)]),
        ("0 0 * * *#2", utc(2026, 5, 1), [(5, 8), (5, 9), (5, 10), (5, 11), (5, 12), (5, 13)],
         [(4, 14), (4, 13), (4, 12)]),
        ("0 0 1,L * 5#2", utc(2026, 5, 1), [(5, 8), (5, 31), (6, 1), (6, 12), (6, 30), (7, 1)],
         [(4, 30), (4, 10), (4, 1)]),
        ("0 0 * * 1L,5L", utc(2026, 5, 1), [(5, 25), (5, 29), (6, 26), (6, 29), (7, 27), (7, 31)],
         [(4, 27), (4, 24), (3, 30)]),
        ("0 0 31 2 1", utc(2026, 5, 16), [(2, 1), (2, 8), (2, 15), (2, 22), (2, 7), (2, 14)],
         [(2, 23), (2, 16), (2, 9)]),
    ],
)  # fmt: skip
def test_cron_day_rules_step_like_cron_parser(
    expression: str, start: datetime, following: list[tuple[int, int]], preceding: list[tuple[int, int]]
) -> None:
    # Occurrences taken from cron-parser 5.10.6 (next() and prev() from `start`, in UTC); the dates
    # after the first wrap of the month belong to the following (or preceding) year.
    def dates_of(ticks: list[datetime]) -> list[tuple[int, int]]:
        return [(tick.month, tick.day) for tick in ticks]

    ticks, at = [], start
    for _ in following:
        at = next_cron(expression, at, None)
        ticks.append(at)
    assert dates_of(ticks) == following
    assert all(tick.time() == datetime.min.time() for tick in ticks)
    ticks, at = [], start
    for _ in preceding:
        found = previous_cron(expression, at - MS, None)
        assert found is not None
        ticks.append(at := found)
    assert dates_of(ticks) == preceding


def test_cron_finds_an_occurrence_decades_away_as_cron_parser_does() -> None:
    # A fifth Monday in February needs a leap year whose February starts on a Monday: after 2072 the
    # next is in 2112 (cron-parser finds it too). The first search gave up after 30 years.
    assert next_cron("15 ? ? FEB 1#5", utc(2073, 7, 25, 15, 22, 49), None) == utc(2112, 2, 29, 0, 15)
    assert previous_cron("15 ? ? FEB 1#5", utc(2111, 1, 1), None) == utc(2072, 2, 29, 23, 15)

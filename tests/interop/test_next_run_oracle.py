"""Node Agenda 6.2.6 as the oracle of agendapy's next-run computation.

Generated job documents (repeatInterval, repeatTimezone, repeatAt, skipDays, startDate, endDate,
lastRunAt) go to Node's ``new Job(agenda, doc).computeNextRunAt()`` (tests/interop/node/
next-run-batch.mjs, one process per batch, the clock frozen at each case's instant) and to
:func:`agendapy.schedule.compute_next_run_at` with the same instant. Every difference must be one of
:data:`agendapy.schedule.divergences.DIVERGENCES`, recognised by the classifier of the same id below.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agendapy.errors import InvalidInput
from agendapy.schedule import REPEAT_AT_FAILURE, compute_next_run_at
from agendapy.schedule.divergences import DIVERGENCES
from agendapy.schedule.repeat_at import read_time_of_day

pytestmark = pytest.mark.node

ZONES = [None, "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
         "Pacific/Auckland", "America/Sao_Paulo", "", "Mars/Olympus"]  # fmt: skip
# DST changes of several zones and years, and calendar edges (month ends, 29 Feb 2028, year end).
EDGES = [
    "2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-10-25T00:15:00Z", "2026-10-25T01:00:00Z",
    "2027-03-28T00:59:59Z", "2027-10-31T00:30:00Z", "2026-03-08T06:30:00Z", "2026-11-01T05:30:00Z",
    "2027-03-14T07:00:00Z", "2027-11-07T06:00:00Z", "2026-04-04T14:45:00Z", "2026-10-03T15:30:00Z",
    "2027-04-03T15:00:00Z", "2026-04-04T13:30:00Z", "2026-09-26T13:59:00Z", "2026-04-30T23:59:59Z",
    "2028-02-28T12:00:00Z", "2028-02-29T23:00:00Z", "2026-12-31T23:59:59.999Z", "2027-01-31T10:00:00Z",
    "2026-06-15T08:59:59.999Z", "2026-07-01T00:00:00Z",
]  # fmt: skip
CRONS = [
    "0 0 * * 5L", "0 0 * * L5", "0 12 * * 1#2", "0 0 L * *", "15 2 * * *", "30 2 * * *", "0 * * * *",
    "*/15 * * * *", "0 9 * * 1-5", "0 0 1 * *", "0 0 29 2 *", "0 0 30 2 *", "0 2 * * *", "0 30 2 * * *",
    "*/10 * * * * *", "0 0 * * MON-FRI", "0 0 1 jan-mar *", "0 0 * * 7", "0 0 L * 5", "* * *",
    "0 0 15W * *", "H 9 * * *", "0 0 1-31/10 * *", "0 0 * * 0,7", "0 0 * * 5#6", "@yearly", "@annually",
    "@weekly", "@daily", "@hourly", "@monthly", "@secondly", "0 0 1 1 * 2026", "*/7 */5 * * *",
    "0 15 10 * * ?", "59 23 31 12 *", "0 0 */2 * * *", "0 0 * * 1L", "5 4 * * sun", "0 0 * * 6-7/1",
]  # fmt: skip
HUMAN = [
    "5 minutes", "2 hours", "1 day", "one week", "3 days and 4 hours", "an hour", "every 5 minutes",
    "500 milliseconds", "1.5 hours", "twenty minutes", "1 month", "1 year", "5000", " 5000 ", "5e3",
    "0", "-5000", "thousand seconds", "10 seconds", "nonsense",
]  # fmt: skip
NUMBERS = [60_000, 3_600_000, 0.4, -5000, 1, 86_400_000, 1500.5, 0]
REPEAT_AT = [
    "9.30", "at 5", "5", "at 5pm", "3:30pm", "15:30", "15:30:20", "noon", "midnight", "9am", "9 am",
    "9.30am", "9.30 pm", "0930", "930", "12am", "12pm", "0:00", "23:59", "24:00", "5:61", "13pm",
    "foo", "tomorrow", "in 5 minutes", "9:30 p.m.", "9.3", "at 9:30", "morning", "evening", "at noon",
    "9:30am!", "at5", "AT 5", "9:30 AM", "2359",
]  # fmt: skip
SKIP_DAYS: list[list[int] | None] = [None, [], [0], [0, 6], [1, 2, 3, 4, 5], [1, 1, 1, 1, 1, 1, 1],
                                     [0, 1, 2, 3, 4, 5, 6], [6]]  # fmt: skip


@dataclass
class Outcome:
    next_run_at: str | None
    fail_reason: str | None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ours(case: dict[str, Any]) -> Outcome:
    doc, now = case["doc"], _parse(case["now"])

    def date(key: str) -> datetime | None:
        return _parse(doc[key]) if doc.get(key) else None

    try:
        result = compute_next_run_at(
            repeat_interval=doc.get("repeatInterval"),
            repeat_timezone=doc.get("repeatTimezone"),
            repeat_at=doc.get("repeatAt"),
            last_run_at=date("lastRunAt"),
            now=now,
            start_date=date("startDate"),
            end_date=date("endDate"),
            skip_days=doc.get("skipDays"),
        )
    except InvalidInput as error:
        return Outcome(None, error.reason)
    return Outcome(_iso(result) if result else None, None)


def run_node(folder: Path, cases: list[dict[str, Any]]) -> list[Outcome]:
    done = subprocess.run(
        ["node", "next-run-batch.mjs"],
        cwd=folder,
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": _path(), "TZ": "UTC"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [Outcome(item["nextRunAt"], item["failReason"]) for item in json.loads(done.stdout)]


def _path() -> str:
    return os.environ.get("PATH", "")


# ---------------------------------------------------------------------------------------------------
# The classifiers: each recognises the differences one divergence explains
# ---------------------------------------------------------------------------------------------------

Classifier = Callable[[dict[str, Any], Outcome, Outcome], bool]


def _zone(case: dict[str, Any]) -> ZoneInfo:
    name = case["doc"].get("repeatTimezone")
    return ZoneInfo(name) if name else ZoneInfo("UTC")


def _interval(case: dict[str, Any]) -> object:
    return case["doc"].get("repeatInterval")


def _is_repeat_at(case: dict[str, Any]) -> bool:
    return not _interval(case) and bool(case["doc"].get("repeatAt"))


def _dst_repeated_time(case: dict[str, Any], node: Outcome, mine: Outcome) -> bool:
    if not (node.next_run_at and mine.next_run_at and isinstance(_interval(case), str)):
        return False
    zone, instant = _zone(case), _parse(node.next_run_at)
    wall = instant.astimezone(zone).replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return first < instant and _parse(mine.next_run_at) > instant  # Node picked the repeated instant


def _dst_half_hour(case: dict[str, Any], node: Outcome, mine: Outcome) -> bool:
    lord_howe = case["doc"].get("repeatTimezone") == "Australia/Lord_Howe"
    if not (lord_howe and isinstance(_interval(case), str) and mine.next_run_at):
        return False
    if node.fail_reason:
        return "loop limit exceeded" in node.fail_reason
    return node.next_run_at is not None and mine.next_run_at < node.next_run_at  # Node skipped a run


def _interval_under_1ms(case: dict[str, Any], node: Outcome, mine: Outcome) -> bool:
    return bool(mine.fail_reason and "at least 1 ms" in mine.fail_reason and not node.fail_reason)


def _repeat_at_timezone(case: dict[str, Any], node: Outcome, mine: Outcome) -> bool:
    name = case["doc"].get("repeatTimezone")
    if not (_is_repeat_at(case) and name and name != "UTC"):
        return False
    unknown = bool(mine.fail_reason and "unknown repeatTimezone" in mine.fail_reason)
    return not mine.fail_reason or (unknown and not node.fail_reason)


def _repeat_at_exact(case: dict[str, Any], node: Outcome, mine: Outcome) -> bool:
    if _is_repeat_at(case) and node.fail_reason == REPEAT_AT_FAILURE and not mine.fail_reason:
        # date.js hands back "now" itself when now is exactly that time, which Agenda reads as invalid.
        return read_time_of_day(case["doc"]["repeatAt"]) is not None
    if not (_is_repeat_at(case) and node.next_run_at and mine.next_run_at):
        return False
    theirs, mine_at = _parse(node.next_run_at), _parse(mine.next_run_at)
    whole = theirs.replace(microsecond=0)
    seconds = read_time_of_day(case["doc"]["repeatAt"])
    extra = timedelta(seconds=seconds.second) if seconds else timedelta(0)
    return mine_at in (whole + extra, whole + extra + timedelta(days=1)) and mine_at > _parse(case["now"])


def _repeat_at_format(case: dict[str, Any], node: Outcome, mine: Outcome) -> bool:
    return _is_repeat_at(case) and mine.fail_reason == REPEAT_AT_FAILURE and not node.fail_reason


def _skip_days_duplicates(case: dict[str, Any], node: Outcome, mine: Outcome) -> bool:
    days = case["doc"].get("skipDays") or []
    return len(days) >= 7 and len(set(days)) < 7 and node.next_run_at is None and not node.fail_reason


def _empty_timezone(case: dict[str, Any], node: Outcome, mine: Outcome) -> bool:
    return case["doc"].get("repeatTimezone") == "" and bool(node.fail_reason) and not mine.fail_reason


def _cron_hash(case: dict[str, Any], node: Outcome, mine: Outcome) -> bool:
    interval = _interval(case)
    return isinstance(interval, str) and "H" in interval and bool(mine.fail_reason)


CLASSIFIERS: dict[str, Classifier | None] = {
    "dst-repeated-time": _dst_repeated_time,
    "dst-half-hour": _dst_half_hour,
    "interval-under-1ms": _interval_under_1ms,
    "repeat-at-timezone": _repeat_at_timezone,
    "repeat-at-exact": _repeat_at_exact,
    "repeat-at-format": _repeat_at_format,
    "skip-days-duplicates": _skip_days_duplicates,
    "empty-timezone": _empty_timezone,
    "cron-hash": _cron_hash,
    # Not reachable here: Node is pinned to TZ=UTC, and the Python API is not exercised.
    "local-time": None,
    "alias-stored-as-cron": None,
}


def compare(folder: Path, cases: list[dict[str, Any]]) -> dict[int, str]:
    """Run both sides; fail on an unexplained difference; return each case's verdict by id.

    A verdict is "equal" or the id of the divergence that explains the difference.
    """
    verdicts: dict[int, str] = {}
    unexplained = []
    for case, node in zip(cases, run_node(folder, cases), strict=True):
        mine = ours(case)
        if node.next_run_at == mine.next_run_at and bool(node.fail_reason) == bool(mine.fail_reason):
            verdicts[case["id"]] = "equal"
            _check_reason(case, node, mine)
            continue
        explained = [key for key, check in CLASSIFIERS.items() if check and check(case, node, mine)]
        if explained:
            verdicts[case["id"]] = explained[0]
        else:
            unexplained.append(f"{json.dumps(case)}\n    node: {node}\n    ours: {mine}")
    assert not unexplained, f"{len(unexplained)} unexplained differences:\n" + "\n".join(unexplained[:25])
    return verdicts


def _check_reason(case: dict[str, Any], node: Outcome, mine: Outcome) -> None:
    """When both refuse, agendapy writes Agenda's failReason text (its prefix where Node adds detail)."""
    if not node.fail_reason or not mine.fail_reason:
        return
    if node.fail_reason == REPEAT_AT_FAILURE:
        assert mine.fail_reason == REPEAT_AT_FAILURE, case
    elif node.fail_reason.startswith("failed to calculate nextRunAt due to invalid repeat interval ("):
        assert mine.fail_reason.startswith("failed to calculate nextRunAt due to "), (case, mine)


def test_every_divergence_has_a_classifier_or_a_reason() -> None:
    assert set(CLASSIFIERS) == {divergence.id for divergence in DIVERGENCES}


# ---------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------


def _case(rng: random.Random, index: int) -> dict[str, Any]:
    now = _parse(rng.choice(EDGES)) + timedelta(milliseconds=rng.choice([0, 0, 1, 345, -1, 999]))
    doc: dict[str, Any] = {}
    kind = rng.choice(["cron", "cron", "cron", "human", "number", "repeat_at", "repeat_at"])
    if kind == "cron":
        doc["repeatInterval"] = rng.choice(CRONS)
    elif kind == "human":
        doc["repeatInterval"] = rng.choice(HUMAN)
    elif kind == "number":
        doc["repeatInterval"] = rng.choice(NUMBERS)
    else:
        doc["repeatAt"] = rng.choice(REPEAT_AT)
    zone = rng.choice(ZONES)
    if zone is not None:
        doc["repeatTimezone"] = zone
    if rng.random() < 0.6:  # last run: just before, at or well before now
        back = rng.choice([0, 1, 1000, 60_000, 3_600_000, 86_400_000])
        doc["lastRunAt"] = _iso(now - timedelta(milliseconds=back))
    if rng.random() < 0.2:
        doc["skipDays"] = rng.choice(SKIP_DAYS)
    if rng.random() < 0.15:
        doc["startDate"] = _iso(now + timedelta(days=rng.choice([-2, 1, 3])))
    if rng.random() < 0.15:
        doc["endDate"] = _iso(now + timedelta(hours=rng.choice([-1, 2, 50])))
    return {"id": index, "now": _iso(now), "doc": doc}


# The issue's examples, each with the verdict it must get: (now, document, verdict).
NAMED: list[tuple[str, dict[str, Any], str]] = [
    ("2026-04-01T00:00:00Z", {"repeatInterval": "0 0 * * 5L"}, "equal"),  # both: 2026-04-24
    ("2026-04-01T00:00:00Z", {"repeatInterval": "0 0 * * L5"}, "equal"),  # both refuse
    ("2026-04-01T13:45:12Z", {"repeatAt": "9.30"}, "equal"),  # both: tomorrow 09:30
    ("2026-04-01T13:45:12.345Z", {"repeatAt": "9.30"}, "repeat-at-exact"),  # Node keeps the .345
    ("2026-04-01T13:45:12.000Z", {"repeatAt": "at 5"}, "equal"),
    ("2026-04-01T13:45:12.000Z", {"repeatAt": "15:30"}, "equal"),
    ("2026-04-01T16:00:00.345Z", {"repeatAt": "15:30"}, "repeat-at-exact"),
    ("2026-04-01T13:45:12Z", {"repeatAt": "foo"}, "equal"),  # both fail with Agenda's reason
    ("2026-04-01T13:45:12Z", {"repeatAt": "tomorrow"}, "repeat-at-format"),
    ("2026-04-01T13:45:12Z", {"repeatAt": "09:00", "repeatTimezone": "Europe/Vienna"}, "repeat-at-timezone"),
    ("2026-10-25T01:00:00Z", {"repeatInterval": "15 2 * * *", "repeatTimezone": "Europe/Berlin",
                              "lastRunAt": "2026-10-25T01:00:00Z"}, "dst-repeated-time"),
    ("2026-10-25T00:00:00Z", {"repeatInterval": "0 * * * *", "repeatTimezone": "Europe/Berlin",
                              "lastRunAt": "2026-10-25T00:00:00Z"}, "equal"),  # hourly runs in both hours
    ("2026-10-03T15:00:00Z", {"repeatInterval": "0 2 * * *", "repeatTimezone": "Australia/Lord_Howe",
                              "lastRunAt": "2026-10-03T14:00:00Z"}, "dst-half-hour"),  # 02:00 skipped
    ("2026-10-03T15:29:58Z", {"repeatInterval": "0 * * * *", "repeatTimezone": "Australia/Lord_Howe",
                              "lastRunAt": "2026-10-03T15:29:58Z"}, "equal"),  # no run in the gap
    ("2026-03-29T00:30:00Z", {"repeatInterval": "30 2 * * *", "repeatTimezone": "Europe/Berlin",
                              "lastRunAt": "2026-03-28T01:30:00Z"}, "equal"),  # skipped 02:30 runs 03:30
    ("2026-05-01T10:00:00Z", {"repeatInterval": "an hour", "lastRunAt": "2026-05-01T09:00:00Z"},
     "interval-under-1ms"),
    ("2026-05-01T10:00:00Z", {"repeatInterval": "every 5 minutes", "lastRunAt": "2026-05-01T09:00:00Z"},
     "interval-under-1ms"),
    ("2026-05-01T10:00:00Z", {"repeatInterval": 0.4, "lastRunAt": "2026-05-01T09:00:00Z"}, "interval-under-1ms"),
    ("2026-05-01T10:00:00Z", {"repeatInterval": -5000, "lastRunAt": "2026-05-01T09:00:00Z"}, "interval-under-1ms"),
    ("2026-05-01T10:00:00Z", {"repeatInterval": "5 minutes", "repeatTimezone": ""}, "empty-timezone"),
    ("2026-05-01T10:00:00Z", {"repeatInterval": "5 minutes", "skipDays": [5, 5, 5, 5, 5, 5, 5]},
     "skip-days-duplicates"),
    ("2026-05-01T10:00:00Z", {"repeatInterval": "H 9 * * *"}, "cron-hash"),
    ("2026-05-01T09:00:00.001Z", {"repeatInterval": "0 9 * * *", "lastRunAt": "2026-05-01T08:59:59.999Z"},
     "equal"),  # Agenda issue #858: the last run 1 ms early still gives the same next run
    ("2028-02-28T12:00:00Z", {"repeatInterval": "0 0 29 2 *"}, "equal"),
    ("2026-12-31T23:59:59.999Z", {"repeatInterval": "59 23 31 12 *", "lastRunAt": "2026-12-31T23:59:00Z"},
     "equal"),
]  # fmt: skip


def test_the_issues_examples_get_their_verdicts(node_helpers: Path) -> None:
    cases = [{"id": index, "now": now, "doc": doc} for index, (now, doc, _) in enumerate(NAMED)]
    verdicts = compare(node_helpers, cases)
    got = {index: verdicts[index] for index in range(len(NAMED))}
    wanted = {index: verdict for index, (_, _, verdict) in enumerate(NAMED)}
    assert got == wanted, [NAMED[index][:2] for index in wanted if got[index] != wanted[index]]


def test_fixed_seed_documents_match_node_or_a_documented_divergence(node_helpers: Path) -> None:
    rng = random.Random(20261207)
    cases = [_case(rng, index) for index in range(1500)]
    counts = Counter(compare(node_helpers, cases).values())
    print(f"\n{len(cases)} cases: {dict(counts)}")
    assert counts["equal"] > len(cases) // 2


_instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
).map(lambda value: value.replace(microsecond=value.microsecond // 1000 * 1000))
_documents = st.fixed_dictionaries(
    {
        "repeatInterval": st.one_of(st.sampled_from(CRONS + HUMAN), st.sampled_from(NUMBERS), st.none()),
        "repeatAt": st.sampled_from(REPEAT_AT),
    },
    optional={
        "repeatTimezone": st.sampled_from([zone for zone in ZONES if zone is not None]),
        "skipDays": st.lists(st.integers(0, 6), max_size=8),
        "lastRunAt": _instants.map(_iso),
    },
)


# Few examples of a large batch each: every example is one Node process, and drawing documents is slow.
@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(st.tuples(_instants, _documents), min_size=60, max_size=80))
def test_generated_documents_match_node_or_a_documented_divergence(
    node_helpers: Path, batch: list[tuple[datetime, dict[str, Any]]]
) -> None:
    cases = [{"id": index, "now": _iso(now), "doc": doc} for index, (now, doc) in enumerate(batch)]
    compare(node_helpers, cases)


# Pieces cron strings are built from, per field (seconds first): every syntax cron-parser knows or
# refuses (names, L, W, #, H, ?, steps on ranges and single values, 7 for Sunday, out-of-range values,
# empty list items). Each field mostly gets pieces valid there, so that many strings are accepted and
# their next runs compared; a few get any piece at all.
_TIME_ATOMS = [
    "*",
    "*",
    "0",
    "0",
    "5",
    "15",
    "30",
    "*/5",
    "*/15",
    "3/2",
    "1-5",
    "1,15",
    "*/90",
    "10-20/3",
    "?",
]
_FIELD_ATOMS = [
    _TIME_ATOMS,
    _TIME_ATOMS,
    ["*", "*", "0", "2", "9", "23", "*/6", "1-5", "0,12", "2/3", "?"],
    ["*", "*", "*", "1", "15", "29", "30", "31", "L", "1,L", "1-31/10", "?"],
    ["*", "*", "*", "1", "2", "12", "jan", "jan-mar", "FEB", "*/3", "?"],
    ["*", "*", "*", "1-5", "MON-FRI", "5L", "0L", "7L", "5#2", "1#5", "0-7", "1-7/2", "sun,sat", "5/2", "7", "?"],
]  # fmt: skip
_ODD_ATOMS = ["59", "60", "*/0", "5-1", "1,,2", "L5", "15W", "LW", "5#6", "H", "foo", "-", "2-", "L-2",
              "1L", "31", "24", "0,7", "L", "mon", "jan"]  # fmt: skip


def _cron_case(rng: random.Random, index: int) -> dict[str, Any]:
    count = rng.choice([3, 4, 5, 5, 5, 5, 6, 6, 7])
    pools = [_ODD_ATOMS, *_FIELD_ATOMS][-count:]  # cron-parser fills missing leading fields
    fields = [rng.choice(_ODD_ATOMS if rng.random() < 0.04 else pool) for pool in pools]
    doc: dict[str, Any] = {"repeatInterval": " ".join(fields)}
    zone = rng.choice(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", None])
    if zone:
        doc["repeatTimezone"] = zone
    now = _parse(rng.choice(EDGES))
    if rng.random() < 0.5:
        doc["lastRunAt"] = _iso(now)
    return {"id": index, "now": _iso(now), "doc": doc}


def test_generated_cron_strings_are_read_as_cron_parser_reads_them(node_helpers: Path) -> None:
    rng = random.Random(17)
    cases = [_cron_case(rng, index) for index in range(1200)]
    verdicts = Counter(compare(node_helpers, cases).values())
    accepted = sum(1 for case in cases if ours(case).next_run_at)
    print(f"\n{len(cases)} cron cases, {accepted} accepted: {dict(verdicts)}")
    assert accepted > len(cases) // 5  # the generator must reach the next-run maths, not only refusals


# The day fields in every form agendapy rewrites for croniter: "L" beside days, weekday "L" and "#"
# beside plain weekdays, both fields restricted (either runs), days some listed month lacks.
_DAY_ATOMS = ["*", "1", "15", "29", "30", "31", "L", "1,L", "5,L", "L,31", "28-31", "30,31", "1-31", "*/1",
              "2/7", "?"]  # fmt: skip
_MONTH_ATOMS = ["*", "*", "2", "4", "2,4", "feb,apr,jun", "4,6,9,11", "2-11/3", "jan-mar", "12"]
_WEEKDAY_ATOMS = ["*", "*", "?", "1-5", "5L", "0L", "7L", "1,5L", "1L,5L", "6L,0", "3,7L", "5#2", "1#5",
                  "0#5", "*#2", "?#3", "2-4#1", "0-7", "1-7/2", "*/1", "sun,sat"]  # fmt: skip


def _day_case(rng: random.Random, index: int) -> dict[str, Any]:
    fields = [rng.choice(["0", "30", "*/20"]), rng.choice(["0", "2", "23", "*/6"]), rng.choice(_DAY_ATOMS),
              rng.choice(_MONTH_ATOMS), rng.choice(_WEEKDAY_ATOMS)]  # fmt: skip
    doc: dict[str, Any] = {"repeatInterval": " ".join(fields)}
    zone = rng.choice(["UTC", "Europe/Berlin", "America/New_York", "Pacific/Auckland", None])
    if zone:
        doc["repeatTimezone"] = zone
    now = _parse(rng.choice(EDGES)) + timedelta(days=rng.choice([0, 0, 400, 3000, 15_000]))
    if rng.random() < 0.5:
        doc["lastRunAt"] = _iso(now)
    return {"id": index, "now": _iso(now), "doc": doc}


def test_generated_cron_day_fields_step_as_cron_parser_steps(node_helpers: Path) -> None:
    rng = random.Random(1713)
    cases = [_day_case(rng, index) for index in range(800)]
    verdicts = Counter(compare(node_helpers, cases).values())
    accepted = sum(1 for case in cases if ours(case).next_run_at)
    print(f"\n{len(cases)} day-field cron cases, {accepted} accepted: {dict(verdicts)}")
    assert accepted > len(cases) // 2

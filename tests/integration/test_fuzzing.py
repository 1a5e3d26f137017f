"""Fuzzing the public API of a connected Agenda with Hypothesis (issue "Fleet reliability", item 7).

Random intervals, cron strings, dates, timezones, job names, data, priorities and filters are thrown at
``every``, ``schedule``, ``now``, ``create`` + ``save``, ``now_debounced``, ``query_jobs``, ``cancel``,
``disable``, ``enable`` and the chainable Job methods. The property, from DESIGN.md section 2:

* each call either succeeds or raises an ``agendapy.InvalidInput`` (a ``ValueError``) whose ``field`` is
  one of the call's arguments and appears in the message; nothing else escapes (no TypeError,
  OverflowError, RecursionError, bson or pymongo errors);
* when it raises, nothing was written: every document of the collection is byte-for-byte unchanged;
* when it succeeds, what it wrote is readable back through ``query_jobs`` and through the raw collection
  with Agenda's field names and types (nextRunAt a date or null, priority an int, repeatInterval a string
  or a number, ...), and it wrote only the jobs it returned;
* bulk calls (``cancel``, ``disable``, ``enable``, ``query_jobs``) touch only documents that match the
  ``id``/``ids``/``name``/``names`` they were given, whatever Python object those are.

Hypothesis drives one connected (never started) Agenda per test function: pytest-asyncio runs each example
on the test's event loop, and the fixtures (``agenda``, ``jobs_collection``) are reused across examples,
hence ``HealthCheck.function_scoped_fixture`` is suppressed. Set ``AGENDAPY_FUZZ_EXAMPLES`` to run more
(or fewer) examples per test.

The ``test_regression_*`` tests at the end pin, one by one, the minimal reproductions that the fuzzing
found, so each bug has a deterministic test that names it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import available_timezones

import bson
import pytest
from bson import CodecOptions, ObjectId
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from agendapy import Agenda, InvalidInput, Job, JobState, UnsafeQuery

# -- settings ----------------------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("AGENDAPY_FUZZ_EXAMPLES", "150"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    print_blob=True,
)

UNSAFE_OPERATORS = ("$where", "$function", "$accumulator", "$expr")


# Documents at BSON's 16 MB limit: a server of this module's own (tests/conftest.py).
pytestmark = pytest.mark.own_mongo_server


MAX_DATA_BYTES = 16 * 1024 * 1024  # BSON's document limit

# -- strategies: scalars and data --------------------------------------------------------------------

SURROGATES = ["\ud800", "a\udfffb", "\udc80x"]

small_text = st.text(max_size=12)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
huge_ints = st.one_of(
    st.integers(min_value=2**63, max_value=2**200), st.integers(min_value=-(2**200), max_value=-(2**63) - 1)
)
bson_datetimes = st.one_of(st.datetimes(), st.datetimes(timezones=st.just(UTC)))

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    int64,
    st.floats(allow_nan=True, allow_infinity=True),
    small_text,
    bson_datetimes,
)

# Values BSON cannot hold (or holds only up to a size/depth), as leaves or keys.
unstorable_leaves = st.one_of(
    st.sets(st.integers(-5, 5), max_size=3),
    st.frozensets(small_text, max_size=2),
    huge_ints,
    st.builds(object),
    st.complex_numbers(max_magnitude=10),
    st.decimals(allow_nan=True),
    st.sampled_from(SURROGATES),
    st.dates(),
    st.just(len),
)


def nest(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = {"a": value} if i % 3 else [value]
    return value


json_trees = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=16,
)

odd_keys = st.one_of(
    st.binary(min_size=1, max_size=3),
    st.integers(),
    st.none(),
    st.tuples(st.integers(0, 3)),
    st.sampled_from(["a\x00b", "\x00", *SURROGATES]),
)

mixed_trees = st.recursive(
    st.one_of(json_scalars, unstorable_leaves),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(st.one_of(st.text(max_size=6), odd_keys), children, max_size=3),
    ),
    max_leaves=10,
)

job_data = st.one_of(
    json_trees,
    json_trees,
    mixed_trees,
    st.integers(90, 260).map(nest),  # deep (mongod refuses ~180+ levels), but fine for a Python repr
    st.dictionaries(st.sampled_from(["$x", "a.b", "", "$where", ".", "$"]), json_scalars, min_size=1),
)

# -- strategies: job names ----------------------------------------------------------------------------

job_names = st.one_of(
    st.text(max_size=24),
    st.text(min_size=490, max_size=530),
    st.sampled_from(
        [
            "",
            " ",
            "\t\n ",
            "\u3000",
            "a\x00b",
            "\x00",
            "x" * 512,
            "x" * 513,
            "é" * 512,
            "send email",
            "$where",
            "a.b",
            "  padded  ",
            *SURROGATES,
        ]
    ),
    st.integers(),
    st.none(),
    st.binary(max_size=4),
    st.floats(),
    st.booleans(),
    st.builds(object),
    st.dictionaries(st.sampled_from(["$ne", "$exists", "$regex", "$gt"]), json_scalars, min_size=1),
    st.just(re.compile(".*")),
)
name_lists = st.one_of(st.lists(job_names, max_size=3), st.tuples(job_names), st.sets(small_text, max_size=2))
names_args = st.one_of(job_names, job_names, name_lists)

# -- strategies: intervals, cron, durations ---------------------------------------------------------

UNITS = [
    "ms", "millisecond", "milliseconds", "s", "sec", "second", "seconds", "m", "min", "minute",
    "minutes", "h", "hour", "hours", "d", "day", "days", "week", "weeks", "month", "months", "year",
    "years", "fortnight", "lightyears", "", "µs", "Minutes",
]  # fmt: skip

numbers = st.one_of(
    st.integers(-(10**6), 10**9),
    st.integers(),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from([0, 0.0, -0.0, 1e-9, 0.0004, 0.0005, 0.001, 1e300, -1e300, 2**63, math.nan, math.inf]),
    st.decimals(allow_nan=True),
)
amounts = st.one_of(
    st.integers(-(10**6), 10**22).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["a", "an", "one", "twenty five", "a hundred and three", "zero", "-1", "0.5", "1e3", ".5", "thousand"]
    ),
)
human_durations = st.builds(lambda a, u: f"{a} {u}".strip(), amounts, st.sampled_from(UNITS))
combined_durations = st.lists(human_durations, min_size=1, max_size=3).map(lambda parts: " and ".join(parts))
iso_durations = st.one_of(
    st.builds(lambda n, u: f"PT{n}{u}", st.integers(-5, 10**13), st.sampled_from("HMSD")),
    st.builds(lambda n, u: f"P{n}{u}", st.integers(-5, 10**9), st.sampled_from("YMWD")),
    st.sampled_from(["P1D", "P2W", "P1Y2M", "PT", "P", "PT0S", "-PT5M", "PT1.5S", "P1DT2H", "pt15m"]),
)
cron_atoms = st.one_of(
    st.just("*"),
    st.just("?"),
    st.integers(-3, 70).map(str),
    st.sampled_from(["mon", "fri", "jan", "dec", "L", "5L", "W", "15W", "1#2", "H", "R", "sun-sat", "LW"]),
    st.text(alphabet="0123456789*/,-LW#?", min_size=1, max_size=5),
)
cron_fields = st.one_of(
    cron_atoms,
    st.tuples(cron_atoms, cron_atoms).map("-".join),
    st.tuples(cron_atoms, st.integers(0, 70)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.lists(cron_atoms, min_size=2, max_size=3).map(",".join),
)
cron_like = st.lists(cron_fields, min_size=4, max_size=7).map(" ".join)
real_crons = st.sampled_from(
    [
        "0 9 * * mon-fri",
        "*/5 * * * *",
        "0 0 29 2 *",
        "0 0 31 2 *",
        "0 */15 * * * *",
        "* * * * * *",
        "30 2 * * *",
        "0 0 1 1 *",
        "@hourly",
        "@secondly",
        "@yearly",
        "@weekdays",
        "@reboot",
        "  0   9 * *  1  ",
    ]
)
duration_mappings = st.dictionaries(
    st.one_of(
        st.sampled_from(
            ["weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds", "years", ""]
        ),
        st.integers(),
        st.none(),
    ),
    st.one_of(numbers, st.text(max_size=3), st.none()),
    max_size=3,
)
timedeltas = st.one_of(
    st.timedeltas(),
    st.sampled_from(
        [
            timedelta(0),
            timedelta(microseconds=1),
            timedelta(microseconds=999),
            timedelta(milliseconds=1),
            timedelta.max,
            timedelta.min,
            timedelta(days=999_999_999),
        ]
    ),
)
durations = st.one_of(
    st.text(max_size=16),
    human_durations,
    combined_durations,
    iso_durations,
    numbers,
    timedeltas,
    duration_mappings,
    st.none(),
    st.builds(object),
    st.lists(st.integers(), max_size=2),
)
intervals = st.one_of(durations, cron_like, real_crons)

# -- strategies: timezones, dates, priorities ----------------------------------------------------------

ZONES = sorted(available_timezones())
timezones = st.one_of(
    st.none(),
    st.sampled_from(ZONES),
    st.sampled_from(
        ["", "utc", "UTC", "../etc/passwd", "Europe/Vienna\x00", "  Asia/Tokyo ", "EST5EDT", *SURROGATES]
    ),
    st.text(max_size=16),
    st.integers(),
    st.timezones(),  # a ZoneInfo object, not a name
)

relative_dates = st.builds(
    lambda template, amount, unit: template.format(f"{amount} {unit}".strip()),
    st.sampled_from(["in {}", "{} from now", "{} ago", "IN {}", "in  {}  "]),
    amounts,
    st.sampled_from(UNITS),
)
dates_ = st.one_of(
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
    bson_datetimes,
    st.text(max_size=16),
    relative_dates,
    st.sampled_from(
        [
            "now",
            "NOW",
            "tomorrow at noon",
            "next monday at 9am",
            "3:30pm",
            "yesterday",
            "in 5",
            "in 0 seconds",
            "in -5 minutes",
            "in 9000 years",
            "9000 years ago",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2024-02-30",
            "",
            "   ",
            "\x00",
        ]
    ),
    st.datetimes().map(datetime.isoformat),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.dates(),
    st.integers(),
    st.floats(),
    st.none(),
)
optional_dates = st.one_of(st.none(), st.none(), dates_)
skip_days = st.one_of(
    st.none(),
    st.lists(st.integers(0, 6), max_size=7),
    st.lists(st.one_of(st.integers(-2, 8), st.booleans(), st.text(max_size=1), st.floats()), max_size=8),
    st.sets(st.integers(0, 6), max_size=7),
    st.text(max_size=3),
    st.integers(),
)

priorities = st.one_of(
    st.integers(-100, 100),
    int64,
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-(2**63) + 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [1e300, -1e300, 2.0**63, 1.5, True, False, None, "lowest", "low", "normal", "high", "highest"]
    ),
    st.sampled_from(["HIGH", " high ", "medium", "", "10", "-20"]),
    st.text(max_size=8),
    st.decimals(allow_nan=True),
)

# -- strategies: filters -----------------------------------------------------------------------------

filter_keys = st.one_of(
    st.sampled_from(
        [
            "x", "k", "a.b", "data", "data.x", "data.k", "name", "priority", "nextRunAt", "type",
            "lockedAt", "repeatInterval", "_id", "", ".", "a..b", "$gt", "$in", "$ne", "$or", "$and",
            "$not", "$exists", "$regex", "$size", "$bogus", "$", "$$x", "$elemMatch",
        ]
    ),
    st.text(max_size=5),
)  # fmt: skip
filter_leaves = st.one_of(
    json_scalars, st.sets(st.integers(0, 3), max_size=2), huge_ints, st.binary(max_size=3)
)
filter_trees = st.recursive(
    filter_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(filter_keys, children, max_size=3)
    ),
    max_leaves=10,
)
filter_mappings = st.dictionaries(filter_keys, filter_trees, max_size=4)
filters = st.one_of(filter_mappings, filter_mappings, filter_trees, job_data)

CODE_OPERANDS = [
    "function() { return true }",
    "sleep(100) || true",
    {"$eq": [1, 1]},
    {"body": "function() { return true }", "args": [], "lang": "js"},
    {"init": "function() {}", "accumulate": "function() {}", "merge": "function() {}", "lang": "js"},
]
plain_keys = st.text(min_size=1, max_size=6).filter(lambda k: not k.startswith("$") and "\x00" not in k)


@st.composite
def unsafe_filters(draw: st.DrawFn) -> dict[str, Any]:
    """A mapping with a code-executing operator as a key at a random depth, among harmless siblings."""
    node: Any = {draw(st.sampled_from(UNSAFE_OPERATORS)): draw(st.sampled_from(CODE_OPERANDS))}
    for _ in range(draw(st.integers(0, 6))):
        wrap = draw(st.sampled_from(["field", "list", "tuple", "and", "or", "elemMatch", "not", "sibling"]))
        if wrap == "field":
            node = {draw(plain_keys): node}
        elif wrap == "list":
            node = [draw(json_scalars), node]
        elif wrap == "tuple":
            node = (node,)
        elif wrap in ("and", "or"):
            node = {f"${wrap}": [node, {draw(plain_keys): draw(json_scalars)}]}
        elif wrap == "elemMatch":
            node = {draw(plain_keys): {"$elemMatch": node}}
        elif wrap == "not":
            node = {draw(plain_keys): {"$not": node}}
        else:
            siblings = draw(st.dictionaries(plain_keys, json_scalars, max_size=2))
            node = {**siblings, draw(plain_keys): node}
    if not isinstance(node, dict):
        node = {draw(plain_keys): node}
    return node


# -- mostly-valid arguments --------------------------------------------------------------------------
# Wild strategies alone are rejected at the first argument, so the database is rarely reached. Each example
# therefore draws at most two arguments from the wild strategies and the others from valid ones.

valid_names = st.one_of(
    st.text(min_size=1, max_size=20).filter(lambda s: bool(s.strip()) and "\x00" not in s),
    st.sampled_from(["send email", "report", "$where", "a.b", "ünï", "x" * 512]),
)
valid_durations = st.one_of(
    st.sampled_from(
        ["5 minutes", "1 hour and 30 minutes", "PT15M", "10ms", "an hour", "1.5 days", "2 weeks"]
    ),
    st.builds(
        lambda n, u: f"{n} {u}",
        st.integers(1, 10_000),
        st.sampled_from(["seconds", "minutes", "hours", "days"]),
    ),
    st.integers(1, 10**7),
    st.floats(min_value=0.001, max_value=1e7),
    st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(days=36_500)),
    st.dictionaries(st.sampled_from(["minutes", "hours", "days"]), st.integers(1, 1000), min_size=1),
)
valid_intervals = st.one_of(valid_durations, real_crons.filter(lambda c: c not in ("0 0 31 2 *", "@reboot")))
valid_dates = st.one_of(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)),
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.sampled_from([UTC, None])
    ),
    st.builds(
        lambda n, u: f"in {n} {u}", st.integers(0, 1000), st.sampled_from(["seconds", "minutes", "days"])
    ),
    st.sampled_from(["now", "tomorrow at noon", "in 20 minutes", "2 hours ago", "2030-01-01T00:00:00Z"]),
)
valid_timezones = st.one_of(
    st.none(),
    st.sampled_from(["UTC", "Europe/Vienna", "Asia/Tokyo", "America/New_York"]),
    st.sampled_from(ZONES),
)
valid_skip_days = st.one_of(st.none(), st.lists(st.integers(0, 6), max_size=3, unique=True))
valid_priorities = st.one_of(
    st.integers(-100, 100), st.sampled_from(["lowest", "low", "normal", "high", "highest"])
)
valid_filters = st.dictionaries(
    st.sampled_from(["data.k", "data.x", "data.tags", "data.nested.k"]),
    st.one_of(
        st.integers(-3, 3),
        st.text(max_size=3),
        st.dictionaries(st.sampled_from(["$gt", "$lt", "$ne"]), st.integers(0, 3), min_size=1, max_size=1),
    ),
    min_size=1,
    max_size=2,
)


def mixed(
    **pairs: tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]],
) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments: each from its (valid, wild) pair, at most two of them wild."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        wild = draw(st.sets(st.sampled_from(sorted(pairs)), max_size=2))
        return {key: draw(pair[1] if key in wild else pair[0]) for key, pair in pairs.items()}

    return build()


# -- the property ------------------------------------------------------------------------------------

RAW = CodecOptions(document_class=RawBSONDocument)
AGENDA_DATE_FIELDS = ("nextRunAt", "lockedAt", "lastRunAt", "lastFinishedAt", "failedAt")


def show(value: Any, limit: int = 300) -> str:
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} too deep to repr>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_of(doc_id: Any) -> bytes:
    return bson.encode({"_id": doc_id})


async def snapshot(coll: Any) -> dict[bytes, bytes]:
    """Every document of the collection as raw BSON, keyed by its encoded _id."""
    raw = coll.with_options(codec_options=RAW)
    return {key_of(doc["_id"]): doc.raw async for doc in raw.find({})}


@dataclass
class Outcome:
    ok: bool
    result: Any
    error: InvalidInput | None
    before: dict[bytes, bytes]
    after: dict[bytes, bytes]

    def changed(self) -> set[bytes]:
        keys = set(self.before) | set(self.after)
        return {k for k in keys if self.before.get(k) != self.after.get(k)}

    def deleted(self) -> set[bytes]:
        return set(self.before) - set(self.after)


async def attempt(coll: Any, label: str, fields: set[str], call: Callable[[], Awaitable[Any]]) -> Outcome:
    """Run one public call and check the error half of the property."""
    if currently_in_test_context():
        note(label)
    before = await snapshot(coll)
    error: InvalidInput | None = None
    try:
        result = await call()
    except InvalidInput as exc:
        error, result = exc, None
    except Exception as exc:
        after = await snapshot(coll)
        wrote = "" if after == before else " AND CHANGED THE COLLECTION"
        raise AssertionError(
            f"{label} raised {type(exc).__module__}.{type(exc).__qualname__}{wrote} "
            f"(expected success or agendapy.InvalidInput): {show(str(exc), 400)}"
        ) from exc
    after = await snapshot(coll)
    if error is not None:
        assert error.field in fields, (
            f"{label} raised {error!r}: field {error.field!r} is not one of {fields}"
        )
        assert error.field in str(error), f"{label}: the message {str(error)!r} does not name the field"
        assert after == before, f"{label} raised {type(error).__name__} but changed the collection"
    return Outcome(error is None, result, error, before, after)


def same_bson(left: Any, right: Any) -> bool:
    return bson.encode({"v": left}) == bson.encode({"v": right})


async def check_stored(agenda: Agenda, coll: Any, job: Job, label: str, *, recurring: bool = False) -> None:
    """The success half: the job's document has Agenda's fields and types and reads back the same."""
    assert isinstance(job, Job), f"{label} returned {job!r}, not a Job"
    assert isinstance(job.id, str), f"{label}: the saved job has no id ({job.id!r})"
    doc_id = ObjectId(job.id) if ObjectId.is_valid(job.id) else job.id
    doc = await coll.find_one({"_id": doc_id})
    assert doc is not None, f"{label}: no document with _id {job.id!r} in the collection"
    context = f"{label}: stored document {show(doc, 600)}"
    assert doc.get("name") == job.name and isinstance(doc["name"], str), context
    assert doc.get("type") in ("normal", "single"), context
    priority = doc.get("priority")
    assert isinstance(priority, int) and not isinstance(priority, bool), f"priority: {context}"
    assert priority == job.priority, f"priority differs from job.priority={job.priority!r}: {context}"
    for field in AGENDA_DATE_FIELDS:
        assert doc.get(field) is None or isinstance(doc[field], datetime), f"{field}: {context}"
    assert doc.get("nextRunAt") == job.next_run_at, (
        f"nextRunAt != job.next_run_at {job.next_run_at}: {context}"
    )
    interval = doc.get("repeatInterval")
    assert interval is None or (isinstance(interval, str | int | float) and not isinstance(interval, bool)), (
        f"repeatInterval: {context}"
    )
    if recurring:
        assert interval, f"a recurring job without repeatInterval: {context}"
        assert doc.get("failReason") is None and not doc.get("failCount"), (
            f"a recurring job that succeeded but is stored as already failed: {context}"
        )
    assert doc.get("repeatTimezone") is None or isinstance(doc["repeatTimezone"], str), context
    assert isinstance(doc.get("disabled", False), bool), context
    fail_count = doc.get("failCount", 0)
    assert isinstance(fail_count, int) and not isinstance(fail_count, bool), context
    assert same_bson(doc.get("data"), job.data), f"data differs from job.data {show(job.data)}: {context}"

    found = await agenda.query_jobs(id=job.id)
    assert found.total == 1 and len(found.jobs) == 1, f"{label}: query_jobs(id={job.id!r}) gave {found!r}"
    back = found.jobs[0]
    assert back.id == job.id and back.name == job.name, f"{label}: read back {back!r}"
    assert back.priority == priority and back.next_run_at == doc.get("nextRunAt"), f"{label}: {back!r}"
    assert back.repeat_interval == interval, f"{label}: read back {back!r}"
    assert same_bson(back.data, doc.get("data")), f"{label}: read back {back!r}"


def wrote_only(outcome: Outcome, jobs: list[Job], label: str) -> None:
    ids = set()
    for job in jobs:
        ids.add(key_of(ObjectId(job.id) if ObjectId.is_valid(job.id or "") else job.id))
    extra = outcome.changed() - ids
    assert not extra, f"{label} changed {len(extra)} document(s) besides the jobs it returned"


async def reset(coll: Any, *, seed: bool = False) -> None:
    """Start each example from the same collection, so that a failure replays (and shrinks) alike."""
    await coll.delete_many({})
    if seed:
        await coll.insert_many(seed_documents())


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- every / schedule / now ----------------------------------------------------------------------------

SCHEDULE_FIELDS = {"name", "names", "data", "when", "start_date", "end_date", "skip_days"}
EVERY_FIELDS = {"name", "names", "data", "interval", "timezone", "start_date", "end_date", "skip_days"}


def call_text(fn: str, args: dict[str, Any], positional: tuple[str, ...]) -> str:
    parts = [show(args[k]) for k in positional]
    parts += [f"{k}={show(v)}" for k, v in args.items() if k not in positional]
    return f"{fn}({', '.join(parts)})"


@FUZZ
@given(
    args=mixed(
        interval=(valid_intervals, intervals),
        names=(st.one_of(valid_names, st.lists(valid_names, min_size=1, max_size=2)), names_args),
        data=(json_trees, job_data),
        timezone=(valid_timezones, timezones),
        skip_immediate=(st.booleans(), st.booleans()),
        start_date=(st.one_of(st.none(), st.none(), valid_dates), optional_dates),
        end_date=(st.one_of(st.none(), st.none(), valid_dates), optional_dates),
        skip_days=(valid_skip_days, skip_days),
    ),
    repeat=st.integers(1, 2),
)
async def test_every_fuzz(agenda: Agenda, jobs_collection: Any, args: dict[str, Any], repeat: int) -> None:
    await reset(jobs_collection)
    label = call_text("agenda.every", args, ("interval", "names", "data"))
    kwargs = {k: v for k, v in args.items() if k not in ("interval", "names", "data")}
    for i in range(repeat):  # a second call (every boot does one) updates the same documents
        outcome = await attempt(
            jobs_collection,
            f"{label} (call {i + 1})",
            EVERY_FIELDS,
            lambda: agenda.every(args["interval"], args["names"], args["data"], **kwargs),
        )
        if not outcome.ok:
            return
        jobs = as_list(outcome.result)
        assert isinstance(outcome.result, Job) == isinstance(args["names"], str), (
            f"{label} returned {outcome.result!r}"
        )
        # A name listed twice yields two Jobs of one document; only the last one saved is current.
        last = {job.id: job for job in jobs}
        for job in jobs:
            assert job.type == "single"
            if last[job.id] is job:
                await check_stored(agenda, jobs_collection, job, label, recurring=True)
        wrote_only(outcome, jobs, label)


@FUZZ
@given(
    interval=st.one_of(cron_like, real_crons),
    tz=st.one_of(valid_timezones, valid_timezones, timezones),
    skip_immediate=st.booleans(),
)
async def test_every_cron_fuzz(
    agenda: Agenda, jobs_collection: Any, interval: str, tz: Any, skip_immediate: bool
) -> None:
    """Cron-shaped strings with random fields, in random timezones."""
    await reset(jobs_collection)
    label = f"agenda.every({interval!r}, 'cron job', timezone={show(tz)}, skip_immediate={skip_immediate})"
    outcome = await attempt(
        jobs_collection,
        label,
        EVERY_FIELDS,
        lambda: agenda.every(interval, "cron job", timezone=tz, skip_immediate=skip_immediate),
    )
    if outcome.ok:
        await check_stored(agenda, jobs_collection, outcome.result, label, recurring=True)
        wrote_only(outcome, [outcome.result], label)


@FUZZ
@given(
    args=mixed(
        when=(valid_dates, dates_),
        names=(st.one_of(valid_names, st.lists(valid_names, min_size=1, max_size=2)), names_args),
        data=(json_trees, job_data),
        start_date=(st.one_of(st.none(), st.none(), valid_dates), optional_dates),
        end_date=(st.one_of(st.none(), st.none(), valid_dates), optional_dates),
        skip_days=(valid_skip_days, skip_days),
    )
)
async def test_schedule_fuzz(agenda: Agenda, jobs_collection: Any, args: dict[str, Any]) -> None:
    await reset(jobs_collection)
    label = call_text("agenda.schedule", args, ("when", "names", "data"))
    kwargs = {k: v for k, v in args.items() if k not in ("when", "names", "data")}
    outcome = await attempt(
        jobs_collection,
        label,
        SCHEDULE_FIELDS,
        lambda: agenda.schedule(args["when"], args["names"], args["data"], **kwargs),
    )
    if outcome.ok:
        jobs = as_list(outcome.result)
        for job in jobs:
            await check_stored(agenda, jobs_collection, job, label)
        wrote_only(outcome, jobs, label)


@FUZZ
@given(args=mixed(name=(valid_names, job_names), data=(json_trees, job_data)))
async def test_now_fuzz(agenda: Agenda, jobs_collection: Any, args: dict[str, Any]) -> None:
    await reset(jobs_collection)
    name, data = args["name"], args["data"]
    label = f"agenda.now({show(name)}, {show(data)})"
    outcome = await attempt(jobs_collection, label, {"name", "data"}, lambda: agenda.now(name, data))
    if outcome.ok:
        await check_stored(agenda, jobs_collection, outcome.result, label)
        wrote_only(outcome, [outcome.result], label)


# -- create + chainable Job methods + save -------------------------------------------------------------

STRATEGIES = ["trailing", "leading", "both", None, 1]


def job_steps(wild: bool) -> st.SearchStrategy[tuple[Any, ...]]:
    pick = (lambda valid, any_: any_) if wild else (lambda valid, any_: valid)
    return st.one_of(
        st.tuples(
            st.just("repeat_every"),
            pick(valid_intervals, intervals),
            pick(valid_timezones, timezones),
            st.booleans(),
        ),
        st.tuples(st.just("schedule"), pick(valid_dates, dates_)),
        st.tuples(st.just("set_priority"), pick(valid_priorities, priorities)),
        st.tuples(st.just("priority ="), pick(valid_priorities, priorities)),
        st.tuples(st.just("unique"), pick(valid_filters, filters), st.booleans()),
        st.tuples(
            st.just("debounce"),
            pick(valid_durations, durations),
            pick(st.one_of(st.none(), valid_durations), st.one_of(st.none(), durations)),
            pick(st.sampled_from(["trailing", "leading"]), st.sampled_from(STRATEGIES)),
        ),
        st.tuples(st.just("disable")),
        st.tuples(st.just("enable")),
    )


JOB_FIELDS = {
    "name",
    "data",
    "interval",
    "timezone",
    "when",
    "priority",
    "unique",
    "delay",
    "max_wait",
    "strategy",
}


def apply_step(job: Job, step: tuple[Any, ...]) -> Job:
    kind, *args = step
    if kind == "repeat_every":
        return job.repeat_every(args[0], timezone=args[1], skip_immediate=args[2])
    if kind == "schedule":
        return job.schedule(args[0])
    if kind == "set_priority":
        return job.set_priority(args[0])
    if kind == "priority =":
        job.priority = args[0]
        return job
    if kind == "unique":
        return job.unique(args[0], insert_only=args[1])
    if kind == "debounce":
        return job.debounce(args[0], max_wait=args[1], strategy=args[2])
    if kind == "disable":
        return job.disable()
    return job.enable()


def describe_steps(steps: list[tuple[Any, ...]]) -> str:
    parts = []
    for kind, *args in steps:
        if kind == "priority =":
            parts.append(f"; job.priority = {show(args[0], 60)}; job")
        else:
            parts.append(f".{kind}({', '.join(show(a, 80) for a in args)})")
    return "".join(parts)


@FUZZ
@given(
    args=mixed(
        name=(valid_names, job_names),
        data=(json_trees, job_data),
        steps=(
            st.lists(job_steps(False), max_size=4),
            st.lists(st.one_of(job_steps(False), job_steps(True)), max_size=4),
        ),
    )
)
async def test_create_chain_save_fuzz(agenda: Agenda, jobs_collection: Any, args: dict[str, Any]) -> None:
    await reset(jobs_collection)
    name, data, steps = args["name"], args["data"], args["steps"]
    label = f"agenda.create({show(name)}, {show(data)}){describe_steps(steps)}.save()"

    async def call() -> Job:
        job = agenda.create(name, data)
        for step in steps:
            returned = apply_step(job, step)
            assert returned is job, f"{step[0]} did not return the job"
        return await job.save()

    outcome = await attempt(jobs_collection, label, JOB_FIELDS, call)
    if outcome.ok:
        await check_stored(agenda, jobs_collection, outcome.result, label)
        wrote_only(outcome, [outcome.result], label)


@FUZZ
@given(
    args=mixed(
        name=(valid_names, job_names),
        data=(json_trees, job_data),
        unique_key=(valid_filters, filters),
        delay=(valid_durations, durations),
        max_wait=(st.one_of(st.none(), valid_durations), st.one_of(st.none(), durations)),
        strategy=(st.sampled_from(["trailing", "leading"]), st.sampled_from(STRATEGIES)),
    ),
    repeat=st.integers(1, 2),
)
async def test_now_debounced_fuzz(
    agenda: Agenda, jobs_collection: Any, args: dict[str, Any], repeat: int
) -> None:
    await reset(jobs_collection)
    label = call_text("agenda.now_debounced", args, ("name", "data", "unique_key", "delay"))
    fields = {"name", "data", "unique", "unique_key", "delay", "max_wait", "strategy"}
    for i in range(repeat):  # a second call debounces onto the first one's document
        outcome = await attempt(
            jobs_collection,
            f"{label} (call {i + 1})",
            fields,
            lambda: agenda.now_debounced(
                args["name"],
                args["data"],
                args["unique_key"],
                args["delay"],
                max_wait=args["max_wait"],
                strategy=args["strategy"],
            ),
        )
        if not outcome.ok:
            return
        await check_stored(agenda, jobs_collection, outcome.result, label)
        wrote_only(outcome, [outcome.result], label)


# -- query_jobs, cancel, disable, enable ------------------------------------------------------------

SEED_IDS = [ObjectId(f"{i:024x}") for i in range(1, 7)]


def seed_documents() -> list[dict[str, Any]]:
    """Six Agenda-shaped documents with fixed ids, restored before each bulk example."""
    base = datetime(2030, 1, 1, tzinfo=UTC)
    rows = [
        ("alpha", {"x": 1}, False, None),
        ("beta", {"x": 2, "tags": ["a", "b"]}, False, None),
        ("beta", {"nested": {"k": "v"}}, True, None),
        ("with space", None, False, "5 minutes"),
        ("ünï", [1, 2], False, 60000),
        ("$where", {"x": "1"}, False, None),
    ]
    docs = []
    for i, (name, data, disabled, interval) in enumerate(rows):
        docs.append(
            {
                "_id": SEED_IDS[i],
                "name": name,
                "priority": i - 2,
                "nextRunAt": base + timedelta(minutes=i),
                "type": "single" if interval else "normal",
                "data": data,
                "lockedAt": None,
                "lastModifiedBy": None,
                "disabled": disabled,
                "repeatInterval": interval,
            }
        )
    return docs


SEED_NAMES = ["alpha", "beta", "with space", "ünï", "$where", "gamma"]

criteria_names = st.one_of(st.sampled_from(SEED_NAMES), job_names)
criteria_ids = st.one_of(
    st.sampled_from([str(i) for i in SEED_IDS]),
    st.sampled_from(SEED_IDS),  # an ObjectId, not its string
    st.text(max_size=24),
    st.integers(),
    st.dictionaries(st.sampled_from(["$ne", "$exists", "$gt", "$in"]), json_scalars, min_size=1),
    st.none(),
)
criteria_lists = st.one_of(
    st.none(),
    st.lists(st.one_of(st.sampled_from(SEED_NAMES), criteria_ids, job_names), max_size=3),
    criteria_names,
    st.sets(st.sampled_from(SEED_NAMES), max_size=2),
    st.dictionaries(st.sampled_from(["$ne", "$exists"]), json_scalars, min_size=1),
)
UNSET = object()


valid_criteria_ids = st.sampled_from([str(i) for i in SEED_IDS])
valid_criteria_names = st.sampled_from(SEED_NAMES)


@st.composite
def criteria(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for cancel/disable/enable (and query_jobs): a random subset of the criteria,
    each mostly valid (a seed name or id, a plain data filter), sometimes anything."""

    def value(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
        return draw(st.one_of(valid, valid, wild))

    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["id"] = value(valid_criteria_ids, criteria_ids)
    if draw(st.integers(0, 3)) == 0:
        out["ids"] = value(st.lists(valid_criteria_ids, max_size=3), criteria_lists)
    if draw(st.booleans()):
        out["name"] = value(valid_criteria_names, criteria_names)
    if draw(st.integers(0, 3)) == 0:
        out["names"] = value(st.lists(valid_criteria_names, max_size=3), criteria_lists)
    if draw(st.integers(0, 3)) == 0:
        out["not_names"] = value(st.lists(valid_criteria_names, max_size=3), criteria_lists)
    if draw(st.booleans()):
        out["data"] = value(st.one_of(valid_filters, json_trees), filters)
    return out


def matches_literal(doc: Mapping[str, Any], kwargs: Mapping[str, Any]) -> str | None:
    """Why ``doc`` must not have been touched by a call with these criteria (None if it may have been)."""
    name, doc_id = doc.get("name"), doc.get("_id")
    if kwargs.get("name") is not None and not (isinstance(kwargs["name"], str) and kwargs["name"] == name):
        return f"its name {name!r} is not name={show(kwargs['name'])}"
    names = kwargs.get("names")
    if names is not None and not any(isinstance(n, str) and n == name for n in names):
        return f"its name {name!r} is not in names={show(names)}"
    if kwargs.get("id") is not None and not (kwargs["id"] == str(doc_id) or kwargs["id"] == doc_id):
        return f"its _id {doc_id!r} is not id={show(kwargs['id'])}"
    ids = kwargs.get("ids")
    if ids is not None and not any(i == str(doc_id) or i == doc_id for i in ids):
        return f"its _id {doc_id!r} is not in ids={show(ids)}"
    not_names = kwargs.get("not_names")
    if not_names is not None and any(isinstance(n, str) and n == name for n in not_names):
        return f"its name {name!r} is in not_names={show(not_names)}"
    return None


def decode(raw: bytes | None) -> dict[str, Any]:
    return {} if raw is None else bson.decode(raw, codec_options=CodecOptions(tz_aware=True, tzinfo=UTC))


CRITERIA_FIELDS = {"id", "ids", "name", "names", "not_names", "data"}


@FUZZ
@given(
    op=st.sampled_from(["cancel", "disable", "enable"]),
    kwargs=criteria(),
)
async def test_bulk_changes_fuzz(
    agenda: Agenda, jobs_collection: Any, op: str, kwargs: dict[str, Any]
) -> None:
    await reset(jobs_collection, seed=True)
    label = f"agenda.{op}({', '.join(f'{k}={show(v)}' for k, v in kwargs.items())})"
    outcome = await attempt(jobs_collection, label, CRITERIA_FIELDS, lambda: getattr(agenda, op)(**kwargs))
    if not outcome.ok:
        return
    count = outcome.result
    assert isinstance(count, int) and not isinstance(count, bool), f"{label} returned {count!r}"
    touched = outcome.changed()
    assert count == len(touched), f"{label} returned {count} but changed {len(touched)} document(s)"
    if op == "cancel":
        assert touched == outcome.deleted(), f"{label} changed documents it did not delete"
    for key in touched:
        before, after = decode(outcome.before.get(key)), decode(outcome.after.get(key))
        why = matches_literal(before, kwargs)
        assert why is None, f"{label} {'deleted' if op == 'cancel' else 'changed'} {show(before)}: {why}"
        if op != "cancel":
            assert {k: v for k, v in before.items() if k != "disabled"} == {
                k: v for k, v in after.items() if k != "disabled"
            }, f"{label} changed more than `disabled` of {show(before)}"
            assert after["disabled"] is (op == "disable"), f"{label}: {show(after)}"


QUERY_FIELDS = CRITERIA_FIELDS | {"state", "search", "sort", "skip", "limit", "include_disabled"}
SORT_KEYS = ["next_run_at", "nextRunAt", "last_run_at", "priority", "name", "data", "bogus", "$where", ""]
sorts = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(SORT_KEYS),
        st.sampled_from(["asc", "desc", 1, -1, 0, "ASC", None, 2, True]),
        max_size=3,
    ),
    st.lists(st.sampled_from(SORT_KEYS), max_size=2),
    st.sampled_from(SORT_KEYS),
    st.integers(),
)
pages = st.one_of(
    st.integers(0, 10), st.integers(), huge_ints, st.floats(), st.booleans(), st.none(), st.text(max_size=2)
)


@FUZZ
@given(
    kwargs=criteria(),
    more=mixed(
        state=(
            st.one_of(
                st.none(),
                st.none(),
                st.sampled_from(list(JobState)),
                st.sampled_from([s.value for s in JobState]),
            ),
            st.one_of(
                st.text(max_size=8),
                st.integers(),
                st.lists(st.integers(), max_size=1),
                st.sampled_from(["RUNNING"]),
            ),
        ),
        search=(
            st.one_of(st.none(), st.sampled_from(["a", "bet", ".*", "(", "ü"])),
            st.one_of(
                st.text(max_size=6),
                st.sampled_from(["\x00", *SURROGATES]),
                st.integers(),
                st.binary(max_size=2),
            ),
        ),
        sort=(
            st.one_of(
                st.none(),
                st.dictionaries(st.sampled_from(SORT_KEYS[:6]), st.sampled_from(["asc", "desc"]), max_size=2),
            ),
            sorts,
        ),
        skip=(st.integers(0, 8), pages),
        limit=(st.integers(0, 8), pages),
        include_disabled=(st.booleans(), st.one_of(st.none(), st.integers(0, 1), st.text(max_size=1))),
    ),
)
async def test_query_jobs_fuzz(
    agenda: Agenda, jobs_collection: Any, kwargs: dict[str, Any], more: dict[str, Any]
) -> None:
    await reset(jobs_collection, seed=True)
    options = {**kwargs, **more}
    options.pop("not_names", None)  # query_jobs has no not_names
    label = f"agenda.query_jobs({', '.join(f'{k}={show(v)}' for k, v in options.items())})"
    outcome = await attempt(jobs_collection, label, QUERY_FIELDS, lambda: agenda.query_jobs(**options))
    assert outcome.after == outcome.before, f"{label} changed the collection"
    if not outcome.ok:
        return
    result = outcome.result
    assert isinstance(result.total, int) and result.total >= len(result.jobs), f"{label}: {result!r}"
    by_id = {str(d["_id"]): d for d in map(decode, outcome.before.values())}
    for job in result.jobs:
        assert isinstance(job, Job) and job.id in by_id, f"{label} returned {job!r}"
        why = matches_literal(by_id[job.id], options)
        assert why is None, f"{label} returned {job.name!r} ({job.id}): {why}"
        assert isinstance(job.priority, int) and isinstance(job.state, JobState)


# -- code-executing operators anywhere in a filter --------------------------------------------------------


@FUZZ
@given(
    flt=unsafe_filters(),
    target=st.sampled_from(["unique", "now_debounced", "cancel", "disable", "enable", "query_jobs"]),
)
async def test_code_operators_are_refused_at_any_depth(
    agenda: Agenda, jobs_collection: Any, flt: dict[str, Any], target: str
) -> None:
    await reset(jobs_collection, seed=True)
    calls: dict[str, tuple[str, set[str], Callable[[], Awaitable[Any]]]] = {
        "unique": (
            "agenda.create('u').unique(F).save()",
            {"unique"},
            lambda: agenda.create("u").unique(flt).save(),
        ),
        "now_debounced": (
            "agenda.now_debounced('u', {}, F, 5)",
            {"unique", "unique_key"},
            lambda: agenda.now_debounced("u", {}, flt, 5),
        ),
        "cancel": ("agenda.cancel(data=F)", {"data"}, lambda: agenda.cancel(data=flt)),
        "disable": ("agenda.disable(data=F)", {"data"}, lambda: agenda.disable(data=flt)),
        "enable": ("agenda.enable(data=F)", {"data"}, lambda: agenda.enable(data=flt)),
        "query_jobs": ("agenda.query_jobs(data=F)", {"data"}, lambda: agenda.query_jobs(data=flt)),
    }
    text, fields, call = calls[target]
    label = f"{text} with F = {show(flt, 600)}"
    outcome = await attempt(jobs_collection, label, fields, call)
    assert not outcome.ok, f"{label} succeeded: a filter with a code-executing operator reached the server"
    assert isinstance(outcome.error, UnsafeQuery), f"{label} raised {outcome.error!r}, expected UnsafeQuery"


# -- sizes and depths Hypothesis should not generate -------------------------------------------------------

LIMIT_SLACK = 64 * 1024  # agendapy keeps this much of the 16 MiB for the job's own fields


@pytest.mark.parametrize(
    "size",
    [MAX_DATA_BYTES - LIMIT_SLACK - 1024, MAX_DATA_BYTES - 100, MAX_DATA_BYTES + 1, 17 * 1024 * 1024],
    ids=["just-under-agendapy-limit", "just-under-16MiB", "just-over-16MiB", "17MiB"],
)
@pytest.mark.parametrize("api", ["now", "every", "schedule", "save", "query_jobs", "cancel"])
async def test_data_near_the_bson_limit(agenda: Agenda, jobs_collection: Any, size: int, api: str) -> None:
    data = {"blob": "x" * size}
    await agenda.now("small", {"x": 1})
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "now": lambda: agenda.now("big", data),
        "every": lambda: agenda.every("5 minutes", "big", data),
        "schedule": lambda: agenda.schedule("in 5 minutes", "big", data),
        "save": lambda: agenda.create("big", data).set_priority("high").save(),
        "query_jobs": lambda: agenda.query_jobs(data=data),
        "cancel": lambda: agenda.cancel(data=data),
    }
    label = f"agenda.{api}(... data of {size} bytes ...)"
    outcome = await attempt(jobs_collection, label, {"data"}, calls[api])
    if outcome.ok and isinstance(outcome.result, Job):
        await check_stored(agenda, jobs_collection, outcome.result, label)
    if size > MAX_DATA_BYTES:
        assert not outcome.ok, f"{label} succeeded with data larger than a BSON document"


async def test_unique_key_and_data_together_beyond_the_bson_limit(
    agenda: Agenda, jobs_collection: Any
) -> None:
    """Each part fits, but the upsert (query + update) cannot: an InvalidInput, nothing written."""
    data = {"blob": "x" * (9 * 1024 * 1024)}
    key = {"data.key": "k" * (9 * 1024 * 1024)}
    outcome = await attempt(
        jobs_collection,
        "agenda.now_debounced('big', 9 MiB data, {'data.key': 9 MiB string}, 5)",
        {"data", "unique", "unique_key"},
        lambda: agenda.now_debounced("big", data, key, 5),
    )
    if outcome.ok:
        await check_stored(agenda, jobs_collection, outcome.result, "now_debounced")


@pytest.mark.parametrize("depth", [120, 400, 5000])
@pytest.mark.parametrize("api", ["now", "query_jobs", "cancel", "unique"])
async def test_deeply_nested_data(agenda: Agenda, jobs_collection: Any, depth: int, api: str) -> None:
    """Nesting deeper than MongoDB stores (mongod refuses past ~100-180 levels) or than Python recursion."""
    value = nest(depth)
    calls: dict[str, tuple[set[str], Callable[[], Awaitable[Any]]]] = {
        "now": ({"data"}, lambda: agenda.now("deep", value)),
        "query_jobs": ({"data"}, lambda: agenda.query_jobs(data={"v": value})),
        "cancel": ({"data"}, lambda: agenda.cancel(data={"v": value})),
        "unique": ({"unique"}, lambda: agenda.create("deep").unique({"data.v": value}).save()),
    }
    fields, call = calls[api]
    outcome = await attempt(jobs_collection, f"agenda {api} with data nested {depth} deep", fields, call)
    if outcome.ok and isinstance(outcome.result, Job):
        await check_stored(agenda, jobs_collection, outcome.result, f"{api} nested {depth}")


# -- the minimal reproductions found by the fuzzing (each fails until its bug is fixed) ------------------


async def test_regression_priority_beyond_int64_is_refused(agenda: Agenda, jobs_collection: Any) -> None:
    # Found: job.set_priority(2**70).save() raised OverflowError from bson.
    for priority in (2**63, -(2**63) - 1, 2**70, 1e300):
        outcome = await attempt(
            jobs_collection,
            f"agenda.create('p').set_priority({priority!r}).save()",
            {"priority"},
            lambda p=priority: agenda.create("p").set_priority(p).save(),
        )
        assert not outcome.ok


async def test_regression_name_with_lone_surrogate_is_refused(agenda: Agenda, jobs_collection: Any) -> None:
    # Found: agenda.now("\ud800") raised UnicodeEncodeError from bson (a ValueError, not InvalidJobName).
    outcome = await attempt(jobs_collection, "agenda.now('\\ud800')", {"name"}, lambda: agenda.now("\ud800"))
    assert not outcome.ok


async def test_regression_data_too_deep_for_python_is_invalid_data(
    agenda: Agenda, jobs_collection: Any
) -> None:
    # Found: agenda.now("deep", <dict nested 5000 deep>) raised RecursionError from bson.
    await attempt(
        jobs_collection, "agenda.now('deep', nest(5000))", {"data"}, lambda: agenda.now("deep", nest(5000))
    )


async def test_regression_unique_query_that_bson_cannot_hold(agenda: Agenda, jobs_collection: Any) -> None:
    # Found: job.unique({"data.x": {1, 2}}).save() raised bson InvalidDocument, {"x": 2**70} OverflowError.
    for query in ({"data.x": {1, 2}}, {"data.x": 2**70}, {"data.x": object()}, {"data.\x00": 1}):
        await attempt(
            jobs_collection,
            f"agenda.create('u').unique({show(query)}).save()",
            {"unique"},
            lambda q=query: agenda.create("u").unique(q).save(),
        )


@pytest.mark.parametrize(
    ("api", "flt"),
    [
        ("unique", {"$bogus": 1}),
        ("unique", {"data.x": {"$in": 5}}),
        ("query_jobs", {"x": {"$bogus": 1}}),
        ("query_jobs", {"x": {"$in": 5}}),
        ("disable", {"x": {"$bogus": 1}}),
        ("cancel", {"x": {"$regex": "("}}),
    ],
)
async def test_regression_filter_the_server_rejects(
    agenda: Agenda, jobs_collection: Any, api: str, flt: Any
) -> None:
    # Found: these raised pymongo OperationFailure / WriteError instead of InvalidInput naming the field.
    await agenda.now("seed", {"x": 1})
    calls: dict[str, tuple[set[str], Callable[[], Awaitable[Any]]]] = {
        "unique": ({"unique"}, lambda: agenda.create("u").unique(flt).save()),
        "query_jobs": ({"data"}, lambda: agenda.query_jobs(data=flt)),
        "disable": ({"data"}, lambda: agenda.disable(data=flt)),
        "cancel": ({"data"}, lambda: agenda.cancel(data=flt)),
    }
    fields, call = calls[api]
    await attempt(jobs_collection, f"{api} with filter {flt!r}", fields, call)


@pytest.mark.parametrize("api", ["cancel", "disable", "query_jobs"])
@pytest.mark.parametrize(
    "criterion",
    [
        {"name": {"$ne": None}},
        {"id": {"$ne": None}},
        {"names": [re.compile(".*")]},
        {"ids": [{"$exists": True}]},
    ],
    ids=["name-operator", "id-operator", "names-regex", "ids-operator"],
)
async def test_regression_non_string_criteria_match_only_literally(
    agenda: Agenda, jobs_collection: Any, api: str, criterion: dict[str, Any]
) -> None:
    # Found: agenda.cancel(name={"$ne": None}) deleted every job in the collection.
    await jobs_collection.insert_many(seed_documents())
    outcome = await attempt(
        jobs_collection,
        f"agenda.{api}(**{criterion!r})",
        CRITERIA_FIELDS,
        lambda: getattr(agenda, api)(**criterion),
    )
    if outcome.ok:
        touched = len(outcome.result.jobs) if api == "query_jobs" else len(outcome.changed())
        assert touched == 0, f"agenda.{api}(**{criterion!r}) matched {touched} job(s) that have string names"


async def test_regression_unique_query_sets_agenda_fields_to_wrong_types(
    agenda: Agenda, jobs_collection: Any
) -> None:
    # Found: unique({"priority": "zz", "nextRunAt": "s"}, insert_only=True) stored priority "zz" and
    # nextRunAt "s" (the upsert copies the query's equality fields into the new document).
    label = "agenda.create('u').unique({'priority': 'zz', 'nextRunAt': 's'}, insert_only=True).save()"
    outcome = await attempt(
        jobs_collection,
        label,
        {"unique"},
        lambda: agenda.create("u").unique({"priority": "zz", "nextRunAt": "s"}, insert_only=True).save(),
    )
    if outcome.ok:
        await check_stored(agenda, jobs_collection, outcome.result, label)


@pytest.mark.parametrize("sort", [["name"], "name", 5])
async def test_regression_sort_that_is_not_a_mapping(agenda: Agenda, jobs_collection: Any, sort: Any) -> None:
    # Found: agenda.query_jobs(sort=["name"]) raised AttributeError ('list' object has no attribute 'items').
    await attempt(
        jobs_collection, f"agenda.query_jobs(sort={sort!r})", {"sort"}, lambda: agenda.query_jobs(sort=sort)
    )


@pytest.mark.parametrize("page", ["skip", "limit"])
async def test_regression_skip_and_limit_beyond_int64(
    agenda: Agenda, jobs_collection: Any, page: str
) -> None:
    # Found: agenda.query_jobs(limit=2**70) raised OverflowError from bson.
    await attempt(
        jobs_collection,
        f"agenda.query_jobs({page}=2**70)",
        {page},
        lambda: agenda.query_jobs(**{page: 2**70}),
    )


async def test_regression_search_that_is_not_a_string(agenda: Agenda, jobs_collection: Any) -> None:
    # query_jobs(search=5): re.escape(5) raises TypeError unless search is checked.
    await attempt(
        jobs_collection, "agenda.query_jobs(search=5)", {"search"}, lambda: agenda.query_jobs(search=5)
    )


async def test_regression_debounce_delay_beyond_the_calendar(agenda: Agenda, jobs_collection: Any) -> None:
    # Found: agenda.now_debounced("d", {}, {"data.k": 1}, timedelta.max) raised OverflowError (date value
    # out of range) while saving.
    await attempt(
        jobs_collection,
        "agenda.now_debounced('d', {}, {'data.k': 1}, timedelta.max)",
        {"delay"},
        lambda: agenda.now_debounced("d", {}, {"data.k": 1}, timedelta.max),
    )


async def test_regression_every_with_an_interval_whose_next_run_overflows(
    agenda: Agenda, jobs_collection: Any
) -> None:
    # Found: agenda.every(timedelta.max, "t", skip_immediate=True) succeeded but stored a job that had already
    # failed (failReason set, nextRunAt null), so it never runs.
    label = "agenda.every(timedelta.max, 't', skip_immediate=True)"
    outcome = await attempt(
        jobs_collection, label, EVERY_FIELDS, lambda: agenda.every(timedelta.max, "t", skip_immediate=True)
    )
    if outcome.ok:
        await check_stored(agenda, jobs_collection, outcome.result, label, recurring=True)


@pytest.mark.parametrize("key", [None, 5, "abc", {"a": 1}])
async def test_regression_unique_on_id_keeps_the_job_reachable(
    agenda: Agenda, jobs_collection: Any, key: Any
) -> None:
    # Found: agenda.now_debounced("d", None, {"_id": None}, 5) saved a document with _id null and returned a job
    # whose id is the string "None"; query_jobs(id=job.id), get_job(job.id) and job.remove() cannot find it.
    label = f"agenda.create('u').unique({{'_id': {key!r}}}).save()"
    outcome = await attempt(
        jobs_collection, label, {"unique"}, lambda: agenda.create("u").unique({"_id": key}).save()
    )
    if outcome.ok:
        await check_stored(agenda, jobs_collection, outcome.result, label)


@pytest.mark.parametrize(
    "criterion",
    [
        {"name": object()},
        {"id": {"$in": None}},
        {"name": {1, 2}},
        {"id": 2**70},
        {"names": [b"\xff", {"$gt": 1}]},
    ],
    ids=["name-object", "id-in-none", "name-set", "id-huge-int", "names-odd"],
)
@pytest.mark.parametrize("api", ["cancel", "disable", "query_jobs"])
async def test_regression_criteria_values_bson_or_the_server_rejects(
    agenda: Agenda, jobs_collection: Any, api: str, criterion: dict[str, Any]
) -> None:
    # Found: agenda.cancel(name=object()) raised bson InvalidDocument; agenda.cancel(id={"$in": None}) raised
    # pymongo WriteError ("$in needs an array").
    await jobs_collection.insert_many(seed_documents())
    await attempt(
        jobs_collection,
        f"agenda.{api}(**{show(criterion)})",
        CRITERIA_FIELDS,
        lambda: getattr(agenda, api)(**criterion),
    )


async def test_regression_search_with_a_lone_surrogate(agenda: Agenda, jobs_collection: Any) -> None:
    # Found: agenda.query_jobs(search="\ud800") raised UnicodeEncodeError from bson.
    await attempt(
        jobs_collection,
        "agenda.query_jobs(search='\\ud800')",
        {"search"},
        lambda: agenda.query_jobs(search="\ud800"),
    )

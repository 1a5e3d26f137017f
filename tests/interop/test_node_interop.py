"""Interoperability with Node Agenda 6.2.6 + @agendajs/mongo-backend 4.0.3 on one shared collection.

Node jobs run in agendapy, agendapy jobs run in Node, a mixed fleet drains one queue without a duplicate,
Node leaves a job alone while agendapy runs it, and both compute the same next run from any stored
repeatInterval (numbers, human strings, cron with timezones, across DST changes). The Node side is the scripts in ``tests/interop/node``
(see each script's header for its arguments); they exit on their own, and the tests wait on events, the
scripts' exit or the database, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agendapy import Agenda, Job

from support import EventLog, wait_until

pytestmark = [pytest.mark.node, pytest.mark.timeout(90)]

RESULTS = "interopRuns"
SECOND = timedelta(seconds=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: str | None) -> datetime | None:
    """A date printed by a Node script (JSON.stringify: ISO-8601 with Z)."""
    return None if value is None else datetime.fromisoformat(value)


def ms(value: datetime) -> datetime:
    """Truncated to what BSON stores."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def by_name(inspected: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in inspected["jobs"]:
        out[job["name"]].append(job)
    return out


def overview_of(inspected: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in inspected["overview"]}


def next_run_by_agendapy(doc: dict[str, Any]) -> datetime | None:
    """What agendapy computes as the next run of a stored recurring document after its ``lastRunAt``."""
    job = Job(
        name=doc["name"],
        repeat_interval=doc["repeatInterval"],
        repeat_timezone=doc.get("repeatTimezone"),
        last_run_at=doc["lastRunAt"],
    )
    return job.compute_next_run_at().next_run_at


async def only(collection: Any, **flt: Any) -> dict[str, Any]:
    docs = await collection.find(flt).to_list()
    assert len(docs) == 1, f"expected one document matching {flt}, found {len(docs)}: {docs}"
    return docs[0]


# -- 1. Node -> Python ------------------------------------------------------------------------------------

#: seed.mjs's PAYLOAD as agendapy must read it (Node Dates are BSON dates, i.e. aware UTC datetimes).
NODE_PAYLOAD = {
    "user": {"id": 42, "name": "Zoë", "roles": ["admin", "ops"], "address": {"city": "Köln", "zip": "50667"}},
    "when": datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=UTC),
    "items": [
        {"sku": "A-1", "qty": 2, "price": 9.5, "at": datetime(2025, 1, 1, tzinfo=UTC)},
        {"sku": "B-2", "qty": 1, "price": 0.1, "at": None},
    ],
    "matrix": [[1, 2], [3, [4, "five"]]],
    "flag": True,
    "nothing": None,
    "empty": {},
    "none": [],
}
NODE_ONE_OFF = ("node-now", "node-later", "node-prio")
NODE_RECURRING = ("node-every", "node-every-ms", "node-cron")
#: what Node's every() stored as repeatInterval; a number is milliseconds in documents
NODE_INTERVALS: dict[str, str | int] = {
    "node-every": "1 second",
    "node-every-ms": 1000,
    "node-cron": "*/1 * * * * *",
}


async def test_jobs_saved_by_node_run_in_agendapy(node: Any, make_agenda: Any, jobs_collection: Any) -> None:
    seeded = (await node.run("seed.mjs", "--later-ms", "1500"))["jobs"]
    saved = {(job["name"], job["data"].get("rank")): job for job in seeded}
    before = {doc["_id"]: doc for doc in await jobs_collection.find({}).to_list()}
    assert len(before) == 7

    agenda: Agenda = await make_agenda(name="py-worker", max_concurrency=1)
    seen: list[dict[str, Any]] = []

    async def handler(job: Job) -> None:
        seen.append(
            {
                "id": job.id,
                "name": job.name,
                "data": job.data,
                "priority": job.priority,
                "type": job.type,
                "repeat_interval": job.repeat_interval,
                "repeat_timezone": job.repeat_timezone,
                "last_run_at": job.last_run_at,
                "ran_at": utcnow(),
            }
        )

    for name in NODE_ONE_OFF + NODE_RECURRING:
        agenda.define(name, handler)
    log = EventLog(agenda, *(f"complete:{n}" for n in NODE_ONE_OFF + NODE_RECURRING), "fail", "error")
    await agenda.start()
    wanted = {
        "node-now": 1,
        "node-later": 1,
        "node-prio": 2,
        "node-every": 2,
        "node-every-ms": 2,
        "node-cron": 2,
    }
    for name, count in wanted.items():
        await log.wait(f"complete:{name}", count, timeout=20)
    await agenda.stop()
    assert log.count("fail") == 0, log.calls
    assert log.count("error") == 0, log.calls

    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in seen:
        runs[run["name"]].append(run)
    # one-off jobs ran exactly once, with Node's data, type and priority as Node wrote them
    assert [r["data"] for r in runs["node-now"]] == [NODE_PAYLOAD]
    assert [r["data"] for r in runs["node-later"]] == [{"step": "later"}]
    assert runs["node-later"][0]["ran_at"] >= iso(saved[("node-later", None)]["nextRunAt"])
    # same nextRunAt: the 'high' job (priority 10) is claimed before the 'low' one (priority -10)
    assert [(r["data"]["rank"], r["priority"]) for r in runs["node-prio"]] == [("high", 10), ("low", -10)]
    assert {r["type"] for r in runs["node-now"] + runs["node-later"] + runs["node-prio"]} == {"normal"}
    # recurring jobs: Node's every() documents, read as stored
    for name, kind in (("node-every", "human"), ("node-every-ms", "ms"), ("node-cron", "cron")):
        assert all(r["type"] == "single" for r in runs[name]), runs[name]
        assert all(r["data"] == {"kind": kind} for r in runs[name]), runs[name]
        assert all(r["repeat_interval"] == NODE_INTERVALS[name] for r in runs[name]), runs[name]
    assert {r["repeat_timezone"] for r in runs["node-cron"]} == {"Europe/Berlin"}
    for name in ("node-every", "node-every-ms"):
        starts = [r["last_run_at"] for r in runs[name]]
        assert all(b - a >= SECOND for a, b in pairwise(starts)), (name, starts)

    # the documents are what Node expects after a run
    for doc in await jobs_collection.find({"name": {"$in": list(NODE_ONE_OFF)}}).to_list():
        old = before[doc["_id"]]
        assert doc["lockedAt"] is None, doc
        assert doc.get("lockToken") is None, doc
        assert doc["nextRunAt"] is None, doc
        assert doc["lastRunAt"] is not None, doc
        assert doc["lastFinishedAt"] >= doc["lastRunAt"], doc
        assert doc["failedAt"] is None, doc
        assert doc["failReason"] is None, doc
        assert doc["failCount"] in (0, None), doc
        assert doc["lastModifiedBy"] == "py-worker"
        for key in ("type", "priority", "data", "repeatInterval", "repeatTimezone", "repeatAt", "disabled"):
            assert doc[key] == old[key], (key, doc, old)
    for name in NODE_RECURRING:
        doc = await only(jobs_collection, name=name)
        old = before[doc["_id"]]
        assert doc["type"] == "single"
        assert doc["repeatInterval"] == old["repeatInterval"] == NODE_INTERVALS[name]
        assert type(doc["repeatInterval"]) is type(NODE_INTERVALS[name])
        assert doc["repeatTimezone"] == old["repeatTimezone"]
        assert doc["data"] == old["data"]
        assert doc["lockedAt"] is None, doc
        assert doc.get("lockToken") is None, doc
        assert doc["lastFinishedAt"] >= doc["lastRunAt"] > old["nextRunAt"] - SECOND, doc
        assert doc["nextRunAt"] > doc["lastRunAt"], doc
    for name in ("node-every", "node-every-ms"):
        every = await only(jobs_collection, name=name)
        assert every["nextRunAt"] == every["lastRunAt"] + SECOND, every  # Agenda: lastRunAt + interval
    cron = await only(jobs_collection, name="node-cron")
    assert cron["nextRunAt"] == cron["lastRunAt"].replace(microsecond=0) + SECOND  # the next whole second

    # and Node reads them back: one-offs completed, recurring ones repeating, nothing running or failed
    inspected = await node.run("inspect.mjs")
    jobs = by_name(inspected)
    for name in NODE_ONE_OFF:
        assert {j["state"] for j in jobs[name]} == {"completed"}, jobs[name]
    for name in NODE_RECURRING:
        assert [j["state"] for j in jobs[name]] == ["repeating"], jobs[name]
    overview = overview_of(inspected)
    assert overview["node-prio"]["completed"] == 2
    assert overview["node-prio"]["total"] == 2
    assert sum(e["running"] + e["failed"] for e in overview.values()) == 0, overview


# -- 2. Python -> Node ------------------------------------------------------------------------------------

TOKYO = ZoneInfo("Asia/Tokyo")
PY_PAYLOAD = {
    "user": {"id": 7, "name": "Zoë", "tags": ["a", "b"], "nested": {"deep": {"deeper": [1, {"x": None}]}}},
    "at": datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=UTC),
    "tokyo": datetime(2024, 3, 1, 9, 0, tzinfo=TOKYO),
    "list": [datetime(2025, 1, 1, tzinfo=UTC), 2.5, "s", True, None, [], {}],
    "big": 2**40,
    "unicode": "日本語 ✓",
}
PY_ONE_OFF = ("py-now", "py-later", "py-unique")
PY_RECURRING = ("py-every", "py-every-ms", "py-cron-tz")


async def test_jobs_saved_by_agendapy_run_in_node(
    node: Any, make_agenda: Any, jobs_collection: Any, client: Any, db_name: str
) -> None:
    agenda: Agenda = await make_agenda(name="py-scheduler")
    # Far enough ahead that it is still "scheduled" when Node inspects it on a loaded machine (Node's
    # start-up alone can take over a second there).
    later_at = ms(utcnow() + timedelta(seconds=4))
    await agenda.now("py-now", PY_PAYLOAD)
    await agenda.schedule(later_at, "py-later", {"step": "later"})
    await agenda.every("1 second", "py-every", {"kind": "human"})
    await agenda.every(timedelta(seconds=1), "py-every-ms", {"kind": "timedelta"})
    # Seconds cron whose hour field only matches in Tokyo: a reader that ignored repeatTimezone would
    # put the next run hours away and never run it twice.
    hour = datetime.now(TOKYO).hour
    cron = f"* * {hour},{(hour + 1) % 24} * * *"
    await agenda.every(cron, "py-cron-tz", {"kind": "cron"}, timezone="Asia/Tokyo")
    first = await agenda.create("py-unique", {"key": "k1", "v": 1}).unique({"data.key": "k1"}).save()
    second = await agenda.create("py-unique", {"key": "k1", "v": 2}).unique({"data.key": "k1"}).save()
    assert first.id == second.id
    before = {doc["name"]: doc for doc in await jobs_collection.find({}).to_list()}
    assert len(before) == 6

    # Node reads agendapy's documents before running them
    inspected = await node.run("inspect.mjs")
    states = {name: [j["state"] for j in jobs] for name, jobs in by_name(inspected).items()}
    assert states == {
        "py-now": ["queued"],
        "py-later": ["scheduled"],
        "py-unique": ["queued"],
        "py-every": ["repeating"],
        "py-every-ms": ["repeating"],
        "py-cron-tz": ["repeating"],
    }
    assert {e["name"]: e["total"] for e in inspected["overview"]} == dict.fromkeys(states, 1)

    done = await node.run(
        "worker.mjs",
        "--define", ",".join(PY_ONE_OFF + PY_RECURRING),
        "--until-runs", "py-now=1,py-later=1,py-unique=1,py-every=2,py-every-ms=2,py-cron-tz=2",
        "--timeout-ms", "20000",
    )  # fmt: skip
    assert done["event"] == "done", done

    results = client[db_name][RESULTS]
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    async for run in results.find({}, sort=[("ranAt", 1)]):
        runs[run["name"]].append(run)
    assert [r["data"] for r in runs["py-now"]] == [PY_PAYLOAD]
    assert [r["data"] for r in runs["py-later"]] == [{"step": "later"}]
    assert runs["py-later"][0]["ranAt"] >= later_at
    assert [r["data"] for r in runs["py-unique"]] == [{"key": "k1", "v": 2}]
    assert runs["py-unique"][0]["jobId"] == first.id
    assert all(r["attrs"]["type"] == "normal" for name in PY_ONE_OFF for r in runs[name])
    for name, data in (("py-every", "human"), ("py-every-ms", "timedelta"), ("py-cron-tz", "cron")):
        assert len(runs[name]) >= 2, runs[name]
        assert all(r["data"] == {"kind": data} and r["attrs"]["type"] == "single" for r in runs[name])
        assert all(r["attrs"]["repeatInterval"] == before[name]["repeatInterval"] for r in runs[name])
        starts = [r["attrs"]["lastRunAt"] for r in runs[name]]
        assert all(b > a for a, b in pairwise(starts)), starts
    assert {r["attrs"]["repeatTimezone"] for r in runs["py-cron-tz"]} == {"Asia/Tokyo"}

    # Node's stop() unlocks the jobs it had claimed but not started with `$unset: {lockedAt}`
    # (mongo-backend unlockJobs), so after a Node worker an unlocked job may have no lockedAt at all.
    for name in PY_ONE_OFF:
        doc = await only(jobs_collection, name=name)
        assert doc.get("lockedAt", "absent") in (None, "absent"), doc
        assert doc["nextRunAt"] is None, doc
        assert doc["lastFinishedAt"] >= doc["lastRunAt"], doc
        assert doc["lastModifiedBy"] == "node-worker"
    for name in PY_RECURRING:
        doc = await only(jobs_collection, name=name)
        assert doc["type"] == "single", doc
        assert doc.get("lockedAt", "absent") in (None, "absent"), doc
        assert doc["repeatInterval"] == before[name]["repeatInterval"], doc
        assert doc["repeatTimezone"] == before[name]["repeatTimezone"], doc
        assert doc["lastModifiedBy"] == "node-worker"
        assert doc["nextRunAt"] > doc["lastRunAt"], doc
        # Node computed nextRunAt from what agendapy stored, and agendapy computes the same instant
        assert next_run_by_agendapy(doc) == doc["nextRunAt"], (name, doc)
    for name in ("py-every", "py-every-ms"):
        doc = await only(jobs_collection, name=name)
        assert doc["nextRunAt"] == doc["lastRunAt"] + SECOND, doc
    cron_doc = await only(jobs_collection, name="py-cron-tz")
    assert cron_doc["nextRunAt"].microsecond == 0
    assert cron_doc["nextRunAt"].astimezone(TOKYO).hour in (hour, (hour + 1) % 24)

    inspected = await node.run("inspect.mjs")
    jobs = by_name(inspected)
    for name in PY_ONE_OFF:
        assert [j["state"] for j in jobs[name]] == ["completed"], jobs[name]
    for name in PY_RECURRING:
        assert [j["state"] for j in jobs[name]] == ["repeating"], jobs[name]
    assert sorted(inspected["byState"]["completed"]) == sorted(str(before[n]["_id"]) for n in PY_ONE_OFF)


# -- 3. Mixed fleet ------------------------------------------------------------------------------------

FLEET_SIZE = 40


async def test_node_and_agendapy_workers_share_one_queue(
    node: Any, make_agenda: Any, jobs_collection: Any, client: Any, db_name: str
) -> None:
    results = client[db_name][RESULTS]
    node_worker = await node.start(
        "worker.mjs",
        "--define", "fleet",
        "--name", "node-worker",
        "--delay-ms", "50",
        "--concurrency", "5",
        "--lock-limit", "5",
        "--until-results", str(FLEET_SIZE),
        "--timeout-ms", "30000",
    )  # fmt: skip
    await node_worker.wait_event("ready")

    worker: Agenda = await make_agenda(name="py-worker")

    @worker.define("fleet", concurrency=5)
    async def fleet(job: Job) -> None:
        await asyncio.sleep(0.05)
        await results.insert_one({"jobId": job.id, "name": job.name, "worker": "py-worker", "data": job.data})

    errors = EventLog(worker, "fail", "error")
    await worker.start()

    scheduler: Agenda = await make_agenda(name="py-scheduler")
    ids = [(await scheduler.now("fleet", {"i": i})).id for i in range(FLEET_SIZE)]

    done = await node_worker.finish(within=40)
    assert done["event"] == "done", done

    async def all_finished() -> bool:
        finished = {"name": "fleet", "lockedAt": None, "lastFinishedAt": {"$ne": None}}
        return await jobs_collection.count_documents(finished) == FLEET_SIZE

    await wait_until(all_finished, timeout=20)
    await worker.stop()
    assert errors.calls == []

    records = await results.find({}).to_list()
    counts = Counter(r["jobId"] for r in records)
    duplicates = {job_id: n for job_id, n in counts.items() if n > 1}
    missing = set(ids) - set(counts)
    assert not duplicates, f"jobs run more than once: {duplicates}"
    assert not missing, f"jobs never run: {missing}"
    assert set(counts) == set(ids)
    assert len(records) == FLEET_SIZE
    ran_by = {r["jobId"]: r["worker"] for r in records}
    assert set(ran_by.values()) == {"node-worker", "py-worker"}, Counter(ran_by.values())
    for doc in await jobs_collection.find({"name": "fleet"}).to_list():
        assert doc["lastModifiedBy"] == ran_by[str(doc["_id"])], doc  # the worker that ran it saved its state
        assert doc["nextRunAt"] is None, doc
        assert doc["failedAt"] is None, doc
    assert {r["data"]["i"] for r in records} == set(range(FLEET_SIZE))


# -- 4. A job agendapy is running ----------------------------------------------------------------------


async def test_node_leaves_a_job_agendapy_is_running_alone(
    node: Any, make_agenda: Any, jobs_collection: Any, client: Any, db_name: str
) -> None:
    agenda: Agenda = await make_agenda(name="py-holder")
    started, release = asyncio.Event(), asyncio.Event()
    ran: list[str | None] = []

    @agenda.define("held")
    async def held(job: Job) -> None:
        ran.append(job.id)
        started.set()
        await release.wait()

    log = EventLog(agenda, "complete:held", "fail", "error")
    job = await agenda.now("held", {"n": 1})
    await agenda.start()
    await asyncio.wait_for(started.wait(), 15)

    doc = await only(jobs_collection, name="held")
    assert doc["lockedAt"] is not None, doc
    assert doc["lastRunAt"] is not None, doc
    token = doc.get("lockToken")
    assert isinstance(token, str), doc
    assert token, doc

    # Node reads it as running ...
    inspected = await node.run("inspect.mjs")
    assert inspected["byState"]["running"] == [job.id], inspected
    assert overview_of(inspected)["held"]["running"] == 1

    # ... and a Node worker that defines the same name polls for it repeatedly without taking it
    done = await node.run(
        "worker.mjs", "--define", "held", "--until-polls", "held=5", "--timeout-ms", "15000"
    )
    assert done["polls"]["held"] >= 5, done
    assert done["locked"] == {}, done
    assert done["runs"] == {}, done
    doc = await only(jobs_collection, name="held")
    assert doc["lockToken"] == token, doc
    assert doc["lastModifiedBy"] == "py-holder", doc
    assert doc["lockedAt"] is not None

    release.set()
    await log.wait("complete:held")
    await agenda.stop()
    assert log.count("fail") == 0, log.calls
    assert log.count("error") == 0, log.calls
    assert ran == [job.id]
    assert await client[db_name][RESULTS].count_documents({}) == 0

    doc = await only(jobs_collection, name="held")
    assert doc["lockedAt"] is None, doc
    assert doc.get("lockToken") is None, doc
    assert doc["lastFinishedAt"] >= doc["lastRunAt"], doc
    assert doc["nextRunAt"] is None, doc
    inspected = await node.run("inspect.mjs")
    assert [j["state"] for j in by_name(inspected)["held"]] == ["completed"], inspected
    assert inspected["byState"]["completed"] == [job.id]
    assert overview_of(inspected)["held"]["completed"] == 1


# -- 5. One schedule, one answer ------------------------------------------------------------------------

#: Interval forms saved with agendapy's every() (what it stores must mean the same to Node).
PY_FORMS: list[tuple[Any, str | None]] = [
    ("1 second", None),
    ("1.5 seconds", None),
    ("90 minutes", None),
    ("1 hour and 30 minutes", None),
    ("1.5 days", None),
    ("2 weeks", None),
    ("an hour", None),
    (1.5, None),
    (timedelta(minutes=15), None),
    ("PT15M", None),
    ({"hours": 2}, None),
    ("0 9 * * mon-fri", "America/New_York"),
    ("30 1 * * *", "America/New_York"),
    ("30 2 * * *", "Europe/Berlin"),
    ("0 0 1 * *", "Europe/Berlin"),
    ("*/10 * * * * *", "Asia/Tokyo"),
    ("0 */2 * * *", "Asia/Kolkata"),
    ("0 0 L * *", None),
    ("0 9 * * *", None),
]
#: Interval forms saved with Node's every() (what Node stores must mean the same to agendapy).
NODE_FORMS: list[tuple[Any, str | None]] = [
    (5000, None),
    ("5000", None),
    ("2 hours 30 minutes", None),
    ("one hour", None),
    ("three days", None),
    ("1 week", None),
    ("*/5 * * * *", None),
    ("0 12 * * MON", "America/New_York"),
    ("0 30 2 * * *", "Europe/Berlin"),
]
#: Around DST changes (US 2026-03-08 and 2026-11-01, EU 2026-03-29 and 2026-10-25) and a year's end.
LAST_RUNS = (
    "2026-03-07T14:00:00.123Z",
    "2026-03-29T00:30:00.000Z",
    "2026-10-24T23:59:59.500Z",
    "2026-11-01T05:30:00.000Z",
    "2026-12-31T23:59:59.999Z",
)


async def test_node_and_agendapy_compute_the_same_next_run(node: Any, make_agenda: Any) -> None:
    agenda: Agenda = await make_agenda(name="py-scheduler")
    for i, (interval, timezone) in enumerate(PY_FORMS):
        await agenda.every(interval, f"py-{i}", timezone=timezone)
    node_forms = [[interval, timezone, f"node-{i}"] for i, (interval, timezone) in enumerate(NODE_FORMS)]
    computed = await node.run(
        "next-run.mjs", "--last-run-at", ",".join(LAST_RUNS), "--every", json.dumps(node_forms)
    )
    results = computed["results"]
    assert len(results) == (len(PY_FORMS) + len(NODE_FORMS)) * len(LAST_RUNS)

    differences = []
    for result in results:
        job = await agenda.get_job(result["id"])
        assert job is not None
        job.last_run_at = iso(result["lastRunAt"])
        job.compute_next_run_at()
        node_next = iso(result["nextRunAt"])
        if job.next_run_at != node_next or result["failReason"] is not None:
            differences.append(
                f"{result['name']} {result['repeatInterval']!r} tz={result['repeatTimezone']} "
                f"last={result['lastRunAt']}: node {node_next} ({result['failReason']}), "
                f"agendapy {job.next_run_at} ({job.fail_reason})"
            )
    assert not differences, "\n".join(differences)

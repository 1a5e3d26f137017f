"""Interoperability with Node Agenda 6.2.6 + @agendajs/postgres-backend 3.0.6 on one shared table.

The same promises as on MongoDB (test_node_interop.py), on PostgreSQL's ``agenda_jobs`` table: jobs Node
saves run in an agendapy worker, jobs agendapy saves run in a Node worker, Node reads agendapy's rows with
its own API, a mixed fleet drains one queue without a duplicate, and each side's ``NOTIFY`` wakes the
other's idle worker long before its next poll. The Node side is the scripts in ``tests/interop/node``
(``--url postgresql://...`` selects Node's PostgreSQL backend).

Node stores ``data`` as JSONB, so a JavaScript ``Date`` inside it reaches agendapy as its ISO string.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agendapy import Agenda, Job

from support import EventLog, wait_until

postgres = pytest.importorskip("agendapy.store.postgres", reason="the PostgreSQL store is not built yet")
psycopg = pytest.importorskip("psycopg")

pytestmark = [pytest.mark.node, pytest.mark.timeout(120)]

MakePgAgenda = Callable[..., Awaitable[Agenda]]
RESULTS = "interop_runs"
#: An idle worker's poll interval in the wake-up tests: a run well before it proves the NOTIFY woke it.
IDLE_POLL_S = 60.0

#: seed.mjs's PAYLOAD as agendapy reads it from Node's JSONB (Dates became ISO strings in JSON).
NODE_PAYLOAD = {
    "user": {"id": 42, "name": "Zoë", "roles": ["admin", "ops"], "address": {"city": "Köln", "zip": "50667"}},
    "when": "2024-02-29T12:34:56.789Z",
    "items": [
        {"sku": "A-1", "qty": 2, "price": 9.5, "at": "2025-01-01T00:00:00.000Z"},
        {"sku": "B-2", "qty": 1, "price": 0.1, "at": None},
    ],
    "matrix": [[1, 2], [3, [4, "five"]]],
    "flag": True,
    "nothing": None,
    "empty": {},
    "none": [],
}


@pytest.fixture
async def make_pg_agenda(pg_url: str) -> AsyncIterator[MakePgAgenda]:
    """Connected Agendas on this test's PostgreSQL database (process_every 50 ms unless given)."""
    made: list[Agenda] = []

    async def make(**options: Any) -> Agenda:
        options.setdefault("process_every", 0.05)
        agenda = Agenda(postgres.PostgresJobStore(pg_url), **options)
        made.append(agenda)
        await agenda.connect()
        return agenda

    try:
        yield make
    finally:
        for agenda in made:
            await agenda.stop(grace=1.0)
            await agenda.close()


async def rows(pg_url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    """The rows of one query, as dicts (a short-lived connection of the test's own)."""
    from psycopg.rows import dict_row

    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(sql, params)
        return list(await cur.fetchall())


def iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def by_name(inspected: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for job in inspected["jobs"]:
        out.setdefault(job["name"], []).append(job)
    return out


# -- 1. Node -> Python ------------------------------------------------------------------------------------


async def test_jobs_node_saves_on_postgres_run_in_agendapy(
    node_pg: Any, make_pg_agenda: MakePgAgenda
) -> None:
    seeded = await node_pg.run("seed.mjs", "--later-ms", "1500")
    saved = by_name(seeded)
    worker = await make_pg_agenda(name="py-worker")
    runs: list[tuple[str, str, Any, datetime]] = []
    changed = asyncio.Event()

    async def record(job: Job) -> None:
        runs.append((job.name, str(job.id), job.data, datetime.now(UTC)))
        changed.set()

    for name in ("node-now", "node-later", "node-every", "node-every-ms", "node-cron", "node-prio"):
        worker.define(name, concurrency=1)(record)
    errors = EventLog(worker, "fail", "error")
    await worker.start()

    def count(name: str) -> int:
        return sum(1 for run in runs if run[0] == name)

    await wait_until(
        lambda: count("node-now") == 1 and count("node-later") == 1 and count("node-prio") == 2
        and min(count("node-every"), count("node-every-ms"), count("node-cron")) >= 2,
        timeout=30,
    )  # fmt: skip
    await worker.stop()
    assert errors.calls == []

    (now_run,) = [run for run in runs if run[0] == "node-now"]
    assert now_run[1] == saved["node-now"][0]["id"]  # Node's UUID is agendapy's job id
    assert now_run[2] == NODE_PAYLOAD
    (later_run,) = [run for run in runs if run[0] == "node-later"]
    later_due = iso(saved["node-later"][0]["nextRunAt"])
    assert later_due is not None and later_run[3] >= later_due
    assert later_run[2] == {"step": "later"}
    # Same nextRunAt: Node's 'high' (10) runs before its 'low' (-10), as Node's own sort does.
    assert [run[2]["rank"] for run in runs if run[0] == "node-prio"] == ["high", "low"]
    assert {run[2]["kind"] for run in runs if run[0] in ("node-every", "node-every-ms", "node-cron")} == {
        "human",
        "ms",
        "cron",
    }

    inspected = await node_pg.run("inspect.mjs")
    states = {job["name"]: job for job in inspected["jobs"]}
    assert states["node-now"]["state"] == "completed"
    assert states["node-now"]["lastModifiedBy"] == "py-worker"
    assert states["node-now"]["lockedAt"] is None
    every = states["node-every"]
    assert every["repeatInterval"] == "1 second" and every["lockedAt"] is None
    assert every["lastRunAt"] is not None and iso(every["nextRunAt"]) > iso(every["lastRunAt"])  # type: ignore[operator]
    assert states["node-cron"]["repeatTimezone"] == "Europe/Berlin"


# -- 2. Python -> Node ------------------------------------------------------------------------------------


async def test_jobs_agendapy_saves_on_postgres_run_in_node(
    node_pg: Any, make_pg_agenda: MakePgAgenda, pg_url: str
) -> None:
    scheduler = await make_pg_agenda(name="py-scheduler")
    payload = {"order": 7, "lines": [{"sku": "X", "qty": 3}], "note": "grüße", "ok": True, "none": None}
    now_job = await scheduler.now("py-now", payload)
    later_job = await scheduler.schedule(datetime.now(UTC) + timedelta(seconds=1), "py-later", {"step": 2})
    every_job = await scheduler.every("1 second", "py-every", {"kind": "every"})
    await scheduler.close()

    worker = await node_pg.start(
        "worker.mjs",
        "--define", "py-now,py-later,py-every",
        "--results", RESULTS,
        "--until-runs", "py-now=1,py-later=1,py-every=2",
        "--timeout-ms", "40000",
    )  # fmt: skip
    done = await worker.finish(within=60)
    assert done["event"] == "done", done
    assert done["runs"]["py-now"] == 1 and done["runs"]["py-later"] == 1

    recorded = [row["doc"] for row in await rows(pg_url, f'SELECT doc FROM "{RESULTS}" ORDER BY id')]
    by_job = {doc["jobId"]: doc for doc in recorded}
    assert by_job[str(now_job.id)]["data"] == payload
    assert by_job[str(later_job.id)]["data"] == {"step": 2}
    every_runs = [doc for doc in recorded if doc["jobId"] == str(every_job.id)]
    assert len(every_runs) >= 2
    assert every_runs[0]["attrs"]["repeatInterval"] == "1 second"

    inspected = await node_pg.run("inspect.mjs", "--names", "py-now,py-later")
    assert {job["name"]: job["state"] for job in inspected["jobs"]} == {
        "py-now": "completed",
        "py-later": "completed",
    }


# -- 3. Node reads agendapy's rows ---------------------------------------------------------------------


async def test_agendapy_reads_rows_node_wrote(node_pg: Any, make_pg_agenda: MakePgAgenda) -> None:
    seeded = by_name(await node_pg.run("seed.mjs", "--later-ms", "60000"))
    agenda = await make_pg_agenda()
    jobs = {job.name: job for job in (await agenda.query_jobs()).jobs if job.name != "node-prio"}
    now_job = jobs["node-now"]
    assert str(now_job.id) == seeded["node-now"][0]["id"]
    assert now_job.data == NODE_PAYLOAD and now_job.type == "normal"
    assert now_job.next_run_at == iso(seeded["node-now"][0]["nextRunAt"])
    assert jobs["node-later"].next_run_at == iso(seeded["node-later"][0]["nextRunAt"])
    assert jobs["node-every"].repeat_interval == "1 second" and jobs["node-every"].type == "single"
    assert jobs["node-every-ms"].repeat_interval == 1000  # VARCHAR "1000": milliseconds, as on MongoDB
    assert jobs["node-cron"].repeat_timezone == "Europe/Berlin"
    prio = {job.data["rank"]: job.priority for job in (await agenda.query_jobs(name="node-prio")).jobs}
    assert prio == {"high": 10, "low": -10}
    fetched = await agenda.get_job(str(now_job.id))
    assert fetched is not None and fetched.data == NODE_PAYLOAD
    overview = {entry["name"]: entry for entry in await agenda.jobs_overview()}
    assert overview["node-prio"]["total"] == 2


async def test_node_reads_recurring_rows_agendapy_wrote(node_pg: Any, make_pg_agenda: MakePgAgenda) -> None:
    agenda = await make_pg_agenda(name="py-scheduler")
    await agenda.every("5 minutes", "py-five", {"k": 1}, timezone="Europe/Berlin")
    window = (datetime(2030, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))
    await agenda.every(
        "0 9 * * *",
        "py-cron",
        timezone="America/New_York",
        skip_immediate=True,
        start_date=window[0],
        end_date=window[1],
        skip_days=[0, 6],
    )
    later = await agenda.schedule(datetime.now(UTC) + timedelta(hours=1), "py-later", {"n": [1, 2]})
    stored = {job.name: job for job in (await agenda.query_jobs()).jobs}

    inspected = await node_pg.run("inspect.mjs", "--names", "py-five,py-cron,py-later")
    jobs = {job["name"]: job for job in inspected["jobs"]}
    five, cron = jobs["py-five"], jobs["py-cron"]
    assert five["repeatInterval"] == "5 minutes" and five["repeatTimezone"] == "Europe/Berlin"
    assert five["type"] == "single" and five["data"] == {"k": 1}
    assert iso(five["nextRunAt"]) == stored["py-five"].next_run_at
    assert cron["repeatInterval"] == "0 9 * * *" and cron["repeatTimezone"] == "America/New_York"
    assert iso(cron["nextRunAt"]) == stored["py-cron"].next_run_at
    assert (iso(cron["startDate"]), iso(cron["endDate"])) == window and cron["skipDays"] == [0, 6]
    assert jobs["py-later"]["id"] == str(later.id) and jobs["py-later"]["data"] == {"n": [1, 2]}
    assert jobs["py-later"]["state"] == "scheduled"
    overview = {entry["name"]: entry for entry in inspected["overview"]}
    assert overview["py-five"]["repeating"] == 1 and overview["py-cron"]["repeating"] == 1


async def test_node_reads_a_failure_agendapy_saved(node_pg: Any, make_pg_agenda: MakePgAgenda) -> None:
    agenda = await make_pg_agenda(name="py-worker")

    @agenda.define("py-broken")
    async def broken(job: Job) -> None:
        raise RuntimeError("python says no")

    fails = EventLog(agenda, "fail")
    await agenda.start()
    broken_job = await agenda.now("py-broken", {"attempt": 1})
    await fails.wait("fail")
    await agenda.stop()

    inspected = await node_pg.run("inspect.mjs", "--names", "py-broken")
    (failed,) = inspected["jobs"]
    assert failed["id"] == str(broken_job.id)
    assert failed["state"] == "failed"
    assert failed["failReason"] == "python says no" and failed["failCount"] == 1
    assert failed["lockedAt"] is None and failed["failedAt"] is not None
    assert failed["lastModifiedBy"] == "py-worker"
    assert {entry["name"]: entry["failed"] for entry in inspected["overview"]} == {"py-broken": 1}


# -- 4. One queue, two runtimes ------------------------------------------------------------------------

FLEET_SIZE = 40


async def test_node_and_agendapy_workers_share_one_postgres_queue(
    node_pg: Any, make_pg_agenda: MakePgAgenda, pg_url: str
) -> None:
    node_worker = await node_pg.start(
        "worker.mjs",
        "--define", "fleet",
        "--name", "node-worker",
        "--results", RESULTS,
        "--delay-ms", "50",
        "--concurrency", "5",
        "--lock-limit", "5",
        "--until-results", str(FLEET_SIZE),
        "--timeout-ms", "40000",
    )  # fmt: skip
    await node_worker.wait_event("ready")

    worker = await make_pg_agenda(name="py-worker")

    @worker.define("fleet", concurrency=5)
    async def fleet(job: Job) -> None:
        await asyncio.sleep(0.05)
        record = {"jobId": str(job.id), "name": job.name, "worker": "py-worker", "data": job.data}
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(f'INSERT INTO "{RESULTS}" (doc) VALUES (%s)', (json.dumps(record),))

    errors = EventLog(worker, "fail", "error")
    await worker.start()
    scheduler = await make_pg_agenda(name="py-scheduler")
    ids = [str((await scheduler.now("fleet", {"i": i})).id) for i in range(FLEET_SIZE)]

    done = await node_worker.finish(within=60)
    assert done["event"] == "done", done

    async def all_finished() -> bool:
        finished = await rows(
            pg_url,
            "SELECT count(*) AS n FROM agenda_jobs WHERE name = 'fleet' AND locked_at IS NULL"
            " AND last_finished_at IS NOT NULL",
        )
        return bool(finished[0]["n"] == FLEET_SIZE)

    await wait_until(all_finished, timeout=30)
    await worker.stop()
    assert errors.calls == []

    records = [row["doc"] for row in await rows(pg_url, f'SELECT doc FROM "{RESULTS}"')]
    counts = Counter(doc["jobId"] for doc in records)
    assert not {job_id: n for job_id, n in counts.items() if n > 1}, "jobs run more than once"
    assert set(counts) == set(ids), f"never run: {set(ids) - set(counts)}"
    ran_by = {doc["jobId"]: doc["worker"] for doc in records}
    assert set(ran_by.values()) == {"node-worker", "py-worker"}, Counter(ran_by.values())
    for row in await rows(pg_url, "SELECT id::text, last_modified_by, next_run_at FROM agenda_jobs"):
        assert row["last_modified_by"] == ran_by[row["id"]], row  # the worker that ran it saved its state
        assert row["next_run_at"] is None, row


async def test_node_leaves_a_job_agendapy_is_running_alone_on_postgres(
    node_pg: Any, make_pg_agenda: MakePgAgenda, pg_url: str
) -> None:
    agenda = await make_pg_agenda(name="py-holder")
    started, release = asyncio.Event(), asyncio.Event()
    ran: list[str] = []

    @agenda.define("held")
    async def held(job: Job) -> None:
        ran.append(str(job.id))
        started.set()
        await release.wait()

    log = EventLog(agenda, "complete:held", "fail", "error")
    job = await agenda.now("held", {"n": 1})
    await agenda.start()
    await asyncio.wait_for(started.wait(), 15)
    (row,) = await rows(
        pg_url, "SELECT locked_at, lock_token, last_run_at FROM agenda_jobs WHERE name = 'held'"
    )
    assert row["locked_at"] is not None and row["last_run_at"] is not None, row
    token = row["lock_token"]
    assert isinstance(token, str) and token, row

    # Node reads it as running, and a Node worker defining the same name polls for it without taking it.
    inspected = await node_pg.run("inspect.mjs")
    assert inspected["byState"]["running"] == [str(job.id)], inspected
    done = await node_pg.run(
        "worker.mjs",
        "--define",
        "held",
        "--results",
        RESULTS,
        "--until-polls",
        "held=5",
        "--timeout-ms",
        "20000",
    )
    assert done["polls"]["held"] >= 5, done
    assert done["locked"] == {} and done["runs"] == {}, done
    (row,) = await rows(pg_url, "SELECT lock_token, last_modified_by FROM agenda_jobs WHERE name = 'held'")
    assert row == {"lock_token": token, "last_modified_by": "py-holder"}

    release.set()
    await log.wait("complete:held")
    await agenda.stop()
    assert log.count("fail") == 0 and log.count("error") == 0, log.calls
    assert ran == [str(job.id)]
    (row,) = await rows(
        pg_url,
        "SELECT locked_at, lock_token, next_run_at, last_finished_at FROM agenda_jobs WHERE name = 'held'",
    )
    assert row["locked_at"] is None and row["lock_token"] is None and row["next_run_at"] is None, row
    inspected = await node_pg.run("inspect.mjs")
    assert inspected["byState"]["completed"] == [str(job.id)], inspected


# -- 5. Wake-ups: NOTIFY both ways ---------------------------------------------------------------------
#
# Node's channels are Agenda's defaults: "agenda:jobs" and "agenda:jobs:state" (PostgresBackend hands its
# unset channelName to the channel, whose default is Agenda's, whatever its own log line says).


async def test_a_node_notify_wakes_an_idle_agendapy_worker(
    node_pg: Any, make_pg_agenda: MakePgAgenda
) -> None:
    worker = await make_pg_agenda(name="py-worker", process_every=IDLE_POLL_S)
    started: dict[str, datetime] = {}
    ran = asyncio.Event()

    @worker.define("woken")
    async def woken(job: Job) -> None:
        started[str(job.id)] = datetime.now(UTC)
        ran.set()

    @worker.define("warm-up")
    async def warm_up(job: Job) -> None:
        ran.set()

    # A job due at start: once it ran, the worker's first poll is behind it and the next is a minute away.
    await worker.now("warm-up")
    await worker.start()
    await asyncio.wait_for(ran.wait(), 20)
    ran.clear()

    saved = await node_pg.run("notify.mjs", "--now", "woken", "--data", '{"from": "node"}')
    assert saved["notifications"] is True
    await asyncio.wait_for(ran.wait(), 20)  # well before the next poll, IDLE_POLL_S after the first
    (job,) = saved["jobs"]
    latency = started[job["id"]] - iso(saved["savedAt"])  # type: ignore[operator]
    print(f"Node NOTIFY -> agendapy start: {latency.total_seconds() * 1000:.0f} ms")
    assert latency < timedelta(seconds=IDLE_POLL_S)


async def test_an_agendapy_notify_wakes_an_idle_node_worker(
    node_pg: Any, make_pg_agenda: MakePgAgenda
) -> None:
    node_worker = await node_pg.start(
        "worker.mjs",
        "--define", "woken",
        "--results", RESULTS,
        "--process-every", str(int(IDLE_POLL_S * 1000)),
        "--until-runs", "woken=1",
        "--timeout-ms", "40000",
    )  # fmt: skip
    await node_worker.wait_event("ready")  # start() has run Node's first poll: the next is a minute away
    scheduler = await make_pg_agenda(name="py-scheduler")
    saved_at = datetime.now(UTC)
    job = await scheduler.now("woken", {"from": "python"})
    run = await node_worker.wait_event("run", within=30)
    woke_after = datetime.now(UTC) - saved_at
    assert run["jobId"] == str(job.id) and run["data"] == {"from": "python"}
    print(f"agendapy NOTIFY -> Node start: <= {woke_after.total_seconds() * 1000:.0f} ms")
    done = await node_worker.finish(within=30)
    assert done["runs"] == {"woken": 1}


# -- 6. Job logs ----------------------------------------------------------------------------------------


async def test_job_logs_are_shared_with_node_on_postgres(node_pg: Any, make_pg_agenda: MakePgAgenda) -> None:
    agenda = await make_pg_agenda(name="py-worker", logging=True)
    if type(agenda.store.logs).__name__ != "PostgresLogStore":
        pytest.skip("the PostgreSQL store keeps no job log in Node's table yet")

    @agenda.define("py-failing")
    async def failing(job: Job) -> None:
        raise RuntimeError("python says no")

    events = EventLog(agenda, "complete")
    await agenda.start()
    job = await agenda.now("py-failing")
    await events.wait("complete")
    await agenda.stop()
    read = await node_pg.run("logs.mjs", "--read", str(job.id))
    # Both sides order by the timestamp alone (milliseconds): entries of one millisecond come in any order.
    entries = {e["event"]: e for e in read["entries"]}
    assert len(read["entries"]) == 3 and set(entries) == {"start", "fail", "complete"}
    assert [iso(entries[e]["timestamp"]) for e in ("start", "fail", "complete")] == sorted(
        iso(e["timestamp"])
        for e in read["entries"]  # type: ignore[type-var]
    )
    assert entries["fail"]["error"] == "python says no" and entries["fail"]["level"] == "error"
    assert {e["agendaName"] for e in read["entries"]} == {"py-worker"}

    ran = await node_pg.run("logs.mjs", "--run", "node-failing", "--fail", "--name", "node-worker")
    result = await agenda.get_logs(job_id=ran["jobId"], sort="asc")
    by_event = {e.event: e for e in result.entries}
    assert len(result.entries) == 4 and set(by_event) == {"locked", "start", "fail", "complete"}
    lifecycle = [by_event[e].timestamp for e in ("locked", "start", "fail", "complete")]
    assert lifecycle == sorted(lifecycle)
    assert by_event["fail"].error == "node says no" and by_event["locked"].level == "debug"
    assert {e.agenda_name for e in result.entries} == {"node-worker"}
    assert await agenda.clear_logs(job_name="node-failing") == 4


# -- 7. Fleet events from Node's state channel -------------------------------------------------------------


async def test_runs_of_a_node_worker_are_heard_on_postgres(
    node_pg: Any, make_pg_agenda: MakePgAgenda
) -> None:
    # On PostgreSQL Node announces each step of a run on "<channel>:state": agendapy's fleet events hear them.
    watcher = await make_pg_agenda(process_every=0.1, fleet_events=True, name="py-web")
    events = EventLog(watcher, "start", "success", "complete", "fail")
    await watcher.start()
    node_worker = await node_pg.start(
        "worker.mjs",
        "--define", "node-fleet",
        "--name", "node-worker",
        "--results", RESULTS,
        "--delay-ms", "50",
        "--until-runs", "node-fleet=2",
        "--timeout-ms", "30000",
    )  # fmt: skip
    await node_worker.wait_event("ready")
    jobs = [await watcher.now("node-fleet", {"i": i}) for i in range(2)]
    finished = [await watcher.wait_for(job, timeout=30) for job in jobs]
    assert [job.data for job in finished] == [{"i": 0}, {"i": 1}]
    await events.wait("complete", count=2, timeout=30)
    await node_worker.finish(within=30)

    assert events.count("fail") == 0
    for event in ("start", "success", "complete"):
        seen: list[Job] = [args[0] for args in events.args(event)]
        assert sorted(str(job.id) for job in seen) == sorted(str(job.id) for job in jobs)
        assert {(job.remote, job.worker) for job in seen} == {(True, "node-worker")}

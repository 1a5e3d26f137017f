"""agendapy's public API on PostgreSQL, chosen by the URL: scheduling, a worker, the workers list and
activity, job logs, the dashboard's JSON API, metrics, SyncAgenda and the default-database variable."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pg_support
import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agendapy import Agenda, Job
from agendapy.dashboard import create_app
from agendapy.metrics import instrument
from agendapy.sync import SyncAgenda

from support import EventLog, wait_until

MakeAgenda = pg_support.MakeAgenda
make_pg_agenda = pg_support.make_pg_agenda


async def _rows(pg_url: str, query: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
        return await (await conn.execute(query)).fetchall()


async def test_a_postgres_url_schedules_into_node_agendas_table(
    make_pg_agenda: MakeAgenda, pg_url: str
) -> None:
    agenda = await make_pg_agenda()
    assert type(agenda.store).__name__ == "PostgresJobStore"
    once = await agenda.schedule("in 1 hour", "report", {"to": "ops"})
    await agenda.now("send email", {"n": 1})
    await agenda.every("5 minutes", "cleanup")
    await agenda.every("10 minutes", "cleanup")  # one row per recurring name, updated in place

    listed = (await agenda.query_jobs(sort={"name": "asc"})).jobs
    assert [job.name for job in listed] == ["cleanup", "report", "send email"]
    assert [j.repeat_interval for j in listed if j.name == "cleanup"] == ["10 minutes"]
    fetched = await agenda.get_job(str(once.id))
    assert fetched is not None and fetched.data == {"to": "ops"}

    rows = await _rows(pg_url, "SELECT name, type, data FROM agenda_jobs ORDER BY name")
    assert [(r["name"], r["type"]) for r in rows] == [
        ("cleanup", "single"),
        ("report", "normal"),
        ("send email", "normal"),
    ]
    assert rows[1]["data"] == {"to": "ops"}


async def test_a_pool_object_selects_postgres_and_stays_open(pg_url: str) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(pg_url, kwargs={"autocommit": True}, open=False)
    await pool.open()
    try:
        agenda = Agenda(pool)
        await agenda.now("ping")
        assert [j.name for j in (await agenda.query_jobs()).jobs] == ["ping"]
        await agenda.close()
        async with pool.connection() as conn:  # the caller's pool is the caller's to close
            await conn.execute("SELECT 1")
    finally:
        await pool.close()


async def test_a_worker_runs_jobs_and_lists_itself_with_its_activity(
    make_pg_agenda: MakeAgenda, pg_url: str
) -> None:
    # The workers' and activity tables named by the MongoDB-named options.
    agenda = await make_pg_agenda(
        name="pg-worker-1",
        heartbeat_every=0.1,
        workers_collection="app_workers",
        activity_collection="app_activity",
    )
    seen: list[Any] = []

    @agenda.define("send email")
    async def send(job: Job) -> None:
        seen.append(job.data)

    log = EventLog(agenda, "success")
    await agenda.start()
    await agenda.now("send email", {"to": "a"})
    await agenda.schedule("in 0.2 seconds", "send email", {"to": "b"})
    await log.wait("success", count=2, timeout=20)
    assert sorted(d["to"] for d in seen) == ["a", "b"]

    async def listed_live() -> bool:
        workers = await agenda.workers()
        return [(w.name, w.state) for w in workers] == [("pg-worker-1", "live")] and workers[0].done == 2

    await wait_until(listed_live, timeout=20)

    async def counted() -> bool:
        return sum(m["done"] for m in await agenda.activity(3)) == 2

    await wait_until(counted, timeout=20)
    await agenda.stop()
    stopped = await agenda.workers(include_stopped=True)
    assert [(w.name, w.state) for w in stopped] == [("pg-worker-1", "stopped")]
    assert await agenda.workers() == []
    assert [r["name"] for r in await _rows(pg_url, "SELECT name FROM app_workers")] == ["pg-worker-1"]
    assert [r["done"] for r in await _rows(pg_url, "SELECT sum(done) AS done FROM app_activity")] == [2]


async def test_fleet_events_reach_another_process_on_postgres(make_pg_agenda: MakeAgenda) -> None:
    runner = await make_pg_agenda(name="pg-runner")
    listener = await make_pg_agenda(name="pg-listener", fleet_events=True)

    @runner.define("remote job")
    async def remote_job(job: Job) -> None:
        pass

    heard = EventLog(listener, "success")
    await listener.start()
    await runner.start()
    job = await runner.now("remote job")
    (args,) = await heard.wait("success", timeout=20)
    assert args[0].id == job.id and args[0].remote


async def test_job_logs_on_postgres(make_pg_agenda: MakeAgenda) -> None:
    agenda = await make_pg_agenda(logging=True)

    @agenda.define("logged")
    async def logged(job: Job) -> None:
        pass

    log = EventLog(agenda, "complete")
    await agenda.start()
    job = await agenda.now("logged")
    await log.wait("complete", timeout=20)
    await agenda.stop()
    result = await agenda.get_logs(job_id=job.id, sort="asc")
    assert [e.event for e in result.entries][:1] == ["start"] and result.total >= 2
    assert await agenda.clear_logs(job_name="logged") == result.total


async def test_the_dashboard_api_lists_postgres_jobs(make_pg_agenda: MakeAgenda) -> None:
    agenda = await make_pg_agenda()
    await agenda.now("send email", {"to": "ops"})
    await agenda.every("1 hour", "cleanup")
    app = create_app(agenda, insecure_no_auth=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        listing = (await http.get("/api/jobs")).json()
        names = sorted(j["name"] for j in listing["jobs"])
        assert names == ["cleanup", "send email"] and listing["total"] == 2
        overview = (await http.get("/api/overview")).json()
        assert overview["overview"]["totals"]["total"] == 2
        assert (await http.get("/api/workers")).status_code == 200
        assert (await http.get("/api/activity")).status_code == 200


async def test_the_dashboard_api_shows_one_postgres_job_with_its_runs(make_pg_agenda: MakeAgenda) -> None:
    agenda = await make_pg_agenda()
    job = await agenda.now("send email", {"to": "ops"})
    app = create_app(agenda, insecure_no_auth=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        one = await http.get(f"/api/jobs/{job.id}")
        assert one.status_code == 200, one.text
        assert one.json()["job"]["data"] == {"to": "ops"}
        missing = await http.get("/api/jobs/not-a-uuid")
        assert missing.status_code == 404


async def test_metrics_read_a_postgres_agenda(make_pg_agenda: MakeAgenda) -> None:
    agenda = await make_pg_agenda()
    await agenda.now("send email")
    await agenda.schedule("in 1 hour", "report")
    registry = CollectorRegistry()
    metrics = instrument(agenda, registry, refresh_every=0)
    try:
        await metrics.refresh()
        text = generate_latest(registry).decode()
    finally:
        metrics.close()
    assert "agendapy_queue_depth 1.0" in text  # the due one, not the one an hour away


async def test_metrics_list_the_postgres_fleet(make_pg_agenda: MakeAgenda) -> None:
    agenda = await make_pg_agenda(name="pg-metrics-1", heartbeat_every=0.1)
    registry = CollectorRegistry()
    metrics = instrument(agenda, registry, refresh_every=0)
    try:
        await agenda.start()
        await metrics.refresh()
        text = generate_latest(registry).decode()
    finally:
        metrics.close()
    assert 'agendapy_workers{state="live"} 1.0' in text
    assert re.search(r'agendapy_worker_up\{[^}]*worker="pg-metrics-1"\} 1\.0', text)


async def test_the_dashboard_answers_503_while_postgres_is_unreachable() -> None:
    agenda = Agenda("postgresql://u:secret@127.0.0.1:1/x?connect_timeout=2")
    app = create_app(agenda, insecure_no_auth=True)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as http:
            response = await http.get("/api/jobs")
        assert response.status_code == 503, response.text
        assert "secret" not in response.text
    finally:
        await agenda.close()


def test_sync_agenda_on_postgres(pg_url: str) -> None:
    with SyncAgenda(pg_url, name="sync-pg") as agenda:
        agenda.now("ping", {"n": 1})
        assert [j.name for j in agenda.query_jobs().jobs] == ["ping"]


async def test_agenda_without_db_uses_a_postgres_database_url(pg_url: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("AGENDAPY_DATABASE_URL", pg_url)
    monkeypatch.delenv("AGENDAPY_MONGO_URL", raising=False)
    agenda = Agenda()
    try:
        await agenda.now("ping")
        assert type(agenda.store).__name__ == "PostgresJobStore"
        assert [j.name for j in (await agenda.query_jobs()).jobs] == ["ping"]
    finally:
        await agenda.close()


async def test_mongodb_naming_options_are_refused_at_once(pg_url: str) -> None:
    with pytest.raises(ValueError, match="collection"):
        Agenda(pg_url, collection="myJobs")


async def test_a_custom_table_name(make_pg_agenda: MakeAgenda, pg_url: str) -> None:
    agenda = await make_pg_agenda(table="app_jobs")
    await agenda.now("ping")
    assert [r["name"] for r in await _rows(pg_url, "SELECT name FROM app_jobs")] == ["ping"]

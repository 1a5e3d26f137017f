"""Prometheus metrics of a started Agenda: counters, the duration histogram, the gauges, the endpoints."""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from bson import ObjectId
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agendapy import Agenda, Job, backoff
from agendapy.metrics import instrument, metrics_app, serve_metrics

from support import EventLog, wait_until


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a text exposition, keyed by (sample name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /, **labels: str
) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


async def test_counters_and_durations_after_runs(agenda: Agenda) -> None:
    registry = CollectorRegistry()
    metrics = instrument(agenda, registry, refresh_every=0)

    @agenda.define("ok")
    async def ok(job: Job) -> None:
        await asyncio.sleep(0.05)

    @agenda.define("bad", backoff=backoff.constant(delay=0.05, max_retries=1))
    async def bad(job: Job) -> None:
        raise RuntimeError("boom")

    log = EventLog(agenda, "complete")
    for _ in range(3):
        await agenda.now("ok")
    await agenda.now("bad")
    await agenda.start()
    await log.wait("complete", count=5)  # 3 ok + 2 attempts of bad (one retry, then exhausted)
    await agenda.stop()

    samples = scrape(generate_latest(registry).decode())
    assert value(samples, "agendapy_jobs_started_total", name="ok") == 3
    assert value(samples, "agendapy_jobs_succeeded_total", name="ok") == 3
    assert value(samples, "agendapy_jobs_failed_total", name="ok") is None
    assert value(samples, "agendapy_jobs_started_total", name="bad") == 2
    assert value(samples, "agendapy_jobs_failed_total", name="bad") == 2
    assert value(samples, "agendapy_jobs_retried_total", name="bad") == 1
    assert value(samples, "agendapy_job_duration_seconds_count", name="ok") == 3
    total = value(samples, "agendapy_job_duration_seconds_sum", name="ok")
    assert total is not None and 0.15 <= total < 10
    assert value(samples, "agendapy_job_duration_seconds_bucket", name="ok", le="0.05") == 0
    assert value(samples, "agendapy_job_duration_seconds_bucket", name="ok", le="+Inf") == 3
    metrics.close()


async def test_gauges_show_running_locked_and_queue_depth(agenda: Agenda) -> None:
    registry = CollectorRegistry()
    metrics = instrument(agenda, registry, refresh_every=0)
    release = asyncio.Event()

    @agenda.define("slow", concurrency=1)
    async def slow(job: Job) -> None:
        await asyncio.wait_for(release.wait(), 10)

    log = EventLog(agenda, "start", "complete")
    await agenda.now("slow")
    await agenda.now("slow")  # waits for the first: concurrency 1
    for n in range(3):  # due, but no definition here: counted in the queue depth only
        await agenda.now("elsewhere", {"n": n})
    await agenda.start()
    await log.wait("start")

    async def both_locked() -> bool:
        await metrics.refresh()
        return registry.get_sample_value("agendapy_jobs_locked", {"name": "slow"}) == 2

    await wait_until(both_locked)

    samples = scrape(generate_latest(registry).decode())
    assert value(samples, "agendapy_jobs_running", name="slow") == 1
    assert value(samples, "agendapy_jobs_locked", name="slow") == 2
    depth = value(samples, "agendapy_queue_depth")
    assert depth is not None and depth >= 3
    refreshed = value(samples, "agendapy_stats_refreshed_timestamp_seconds")
    assert refreshed is not None and abs(refreshed - datetime.now(UTC).timestamp()) < 60

    release.set()
    await log.wait("complete", count=2)
    await agenda.stop()
    await metrics.refresh()
    samples = scrape(generate_latest(registry).decode())
    assert value(samples, "agendapy_jobs_running", name="slow") == 0  # not started: this process runs none
    assert value(samples, "agendapy_jobs_locked", name="slow") == 0
    metrics.close()


async def test_worker_gauges_show_the_fleet_live_and_lost(make_agenda: Any) -> None:
    agenda = await make_agenda(name="gauged-1", heartbeat_every=1.0)
    registry = CollectorRegistry()
    metrics = instrument(agenda, registry, refresh_every=0)
    agenda.define("work", lambda job: None)
    workers = agenda.store.database["agendaWorkers"]  # type: ignore[attr-defined]
    await workers.insert_one(
        {"name": "gone-2", "host": "h2", "pid": 7, "heartbeatEvery": 1.0, "lastSeen": None}
    )
    log = EventLog(agenda, "complete")
    await agenda.start()
    await agenda.now("work")
    await log.wait("complete")

    async def reported() -> bool:
        await metrics.refresh()
        return registry.get_sample_value("agendapy_worker_runs_done", _labels(agenda)) == 1

    await wait_until(reported)
    assert registry.get_sample_value("agendapy_workers", {"state": "live"}) == 1
    assert registry.get_sample_value("agendapy_workers", {"state": "lost"}) == 1
    assert registry.get_sample_value("agendapy_worker_up", _labels(agenda)) == 1
    assert (
        registry.get_sample_value("agendapy_worker_up", {"worker": "gone-2", "host": "h2", "pid": "7"}) == 0
    )
    seen = registry.get_sample_value("agendapy_worker_last_seen_timestamp_seconds", _labels(agenda))
    assert seen is not None and abs(seen - datetime.now(UTC).timestamp()) < 60
    metrics.close()


def _labels(agenda: Agenda) -> dict[str, str]:
    import os
    import socket

    return {"worker": "gauged-1", "host": socket.gethostname(), "pid": str(os.getpid())}


async def test_the_background_task_refreshes_the_gauges(agenda: Agenda) -> None:
    registry = CollectorRegistry()
    metrics = instrument(agenda, registry, refresh_every=0.05)
    await agenda.now("elsewhere")
    await agenda.start()

    def depth() -> float | None:
        return value(scrape(generate_latest(registry).decode()), "agendapy_queue_depth")

    # Waited for, not read after 0.3 s: on a loaded machine the first refresh may come later.
    await wait_until(lambda: depth() == 1, timeout=30)
    metrics.close()


async def test_lock_lost_is_counted(agenda: Agenda, jobs_collection: Any) -> None:
    registry = CollectorRegistry()
    metrics = instrument(agenda, registry, refresh_every=0)
    finish = asyncio.Event()

    @agenda.define("victim", lock_lifetime=0.3)
    async def victim(job: Job) -> None:
        await asyncio.wait_for(finish.wait(), 10)

    log = EventLog(agenda, "start", "lock lost", "complete")
    job = await agenda.now("victim")
    await agenda.start()
    await log.wait("start")
    thief_lock = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    await jobs_collection.update_one({"_id": ObjectId(job.id)}, {"$set": {"lockedAt": thief_lock}})
    await log.wait("lock lost")
    finish.set()
    await log.wait("complete")
    assert registry.get_sample_value("agendapy_lock_lost_total", {"name": "victim"}) == 1
    assert registry.get_sample_value("agendapy_jobs_failed_total", {"name": "victim"}) == 1
    metrics.close()


async def test_asgi_app_refreshes_and_serves_the_exposition(agenda: Agenda) -> None:
    registry = CollectorRegistry()
    await agenda.now("elsewhere")
    app = metrics_app(agenda, registry)
    metrics = instrument(agenda, registry)  # the same object the app uses
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = scrape(response.text)
        assert value(samples, "agendapy_queue_depth") == 1  # refreshed by the scrape itself

        openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")

        refused = await client.post("/metrics")
        assert refused.status_code == 405
    metrics.close()


async def test_the_app_mounts_as_a_starlette_route(agenda: Agenda) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    registry = CollectorRegistry()
    web = Starlette(routes=[Route("/metrics", metrics_app(agenda, registry))])
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "agendapy_queue_depth 0.0" in response.text
    instrument(agenda, registry).close()


async def test_http_server_serves_metrics(agenda: Agenda) -> None:
    registry = CollectorRegistry()

    @agenda.define("ok")
    async def ok(job: Job) -> None:
        pass

    log = EventLog(agenda, "complete")
    server = serve_metrics(agenda, 0, addr="127.0.0.1", registry=registry)
    try:
        await agenda.now("ok")
        await agenda.start()
        await log.wait("complete")
        url = f"http://127.0.0.1:{server.port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read().decode())
    finally:
        server.close()
        server.metrics.close()
    samples = scrape(body)
    assert value(samples, "agendapy_jobs_succeeded_total", name="ok") == 1


async def test_metrics_server_listens_on_loopback_unless_told_otherwise(agenda: Agenda) -> None:
    from agendapy.cli import worker

    server = serve_metrics(agenda, 0, registry=CollectorRegistry())
    try:
        # The endpoint has no authentication: nothing beyond this machine reaches it by default.
        assert server.server.server_address[0] == "127.0.0.1"
    finally:
        server.close()
        server.metrics.close()
    (host_option,) = [p for p in worker.params if p.name == "metrics_host"]
    assert host_option.default == "127.0.0.1"


async def test_instrument_is_idempotent_and_one_registry_holds_one_agenda(make_agenda: Any) -> None:
    first: Agenda = await make_agenda()
    second: Agenda = await make_agenda()
    registry = CollectorRegistry()
    metrics = instrument(first, registry)
    assert instrument(first, registry) is metrics
    with pytest.raises(ValueError, match="another Agenda"):
        instrument(second, registry)
    metrics.close()
    again = instrument(second, registry)  # closing freed the names
    assert again is not metrics
    again.close()


def test_instrument_in_another_registry_is_refused() -> None:
    agenda = Agenda("mongodb://127.0.0.1:1/x")
    metrics = instrument(agenda, CollectorRegistry())
    with pytest.raises(ValueError, match="another registry"):
        instrument(agenda, CollectorRegistry())
    metrics.close()


def test_a_clear_error_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'agendapy\[metrics\]'"):
        instrument(Agenda("mongodb://127.0.0.1:1/x"), None)

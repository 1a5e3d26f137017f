"""OpenTelemetry spans around runs, checked with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agendapy import Agenda, Job, backoff
from agendapy.tracing import instrument_tracing

from support import EventLog


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def runs(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == f"agendapy.run {name}"]


async def test_a_successful_run_is_one_span_with_the_job_attributes(
    agenda: Agenda, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    agenda.name = "worker-7"
    instrument_tracing(agenda, provider)
    child_tracer = provider.get_tracer("test")

    @agenda.define("send email")
    async def send(job: Job) -> None:
        with child_tracer.start_as_current_span("smtp"):
            await asyncio.sleep(0.01)

    log = EventLog(agenda, "complete")
    job = await agenda.now("send email", {"to": "a@example.com"})
    await agenda.start()
    await log.wait("complete")

    (span,) = runs(exporter, "send email")
    assert span.kind is SpanKind.CONSUMER
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes["agendapy.job.id"] == job.id
    assert attributes["agendapy.job.name"] == "send email"
    assert attributes["agendapy.job.attempt"] == 1
    assert attributes["agendapy.job.fail_count"] == 0
    assert attributes["agendapy.worker"] == "worker-7"
    assert attributes["agendapy.run.outcome"] == "succeeded"
    assert "agendapy.job.repeat_interval" not in attributes
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time - span.start_time >= 10_000_000  # ns: it covers the handler

    (child,) = [s for s in exporter.get_finished_spans() if s.name == "smtp"]
    assert child.parent is not None and child.parent.span_id == span.context.span_id
    assert child.context.trace_id == span.context.trace_id


async def test_a_sync_handlers_spans_are_children_too(
    agenda: Agenda, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    instrument_tracing(agenda, provider)
    child_tracer = provider.get_tracer("test")

    @agenda.define("blocking")
    def blocking(job: Job) -> None:
        with child_tracer.start_as_current_span("work"):
            pass

    log = EventLog(agenda, "complete")
    await agenda.now("blocking")
    await agenda.start()
    await log.wait("complete")
    (span,) = runs(exporter, "blocking")
    (child,) = [s for s in exporter.get_finished_spans() if s.name == "work"]
    assert child.parent is not None and child.parent.span_id == span.context.span_id


async def test_failures_set_error_status_and_record_retries(
    agenda: Agenda, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    instrument_tracing(agenda, provider)

    @agenda.define("flaky", backoff=backoff.constant(delay=0.05, max_retries=1))
    async def flaky(job: Job) -> None:
        raise RuntimeError("smtp down")

    log = EventLog(agenda, "complete")
    await agenda.now("flaky")
    await agenda.start()
    await log.wait("complete", count=2)

    first, second = sorted(runs(exporter, "flaky"), key=lambda s: s.start_time or 0)
    for span in (first, second):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "RuntimeError: smtp down"
        (exception,) = [e for e in span.events if e.name == "exception"]
        assert (exception.attributes or {})["exception.message"] == "smtp down"
        assert (span.attributes or {})["agendapy.run.outcome"] == "failed"
    assert (first.attributes or {})["agendapy.job.attempt"] == 1
    assert (second.attributes or {})["agendapy.job.attempt"] == 2
    assert (second.attributes or {})["agendapy.job.fail_count"] == 1
    (retry,) = [e for e in first.events if e.name == "retry"]
    assert (retry.attributes or {})["agendapy.retry.attempt"] == 1
    assert (retry.attributes or {})["agendapy.retry.delay_seconds"] == pytest.approx(0.05)
    assert [e.name for e in second.events if e.name.startswith("retry")] == ["retry exhausted"]


async def test_recurring_runs_carry_their_interval(
    agenda: Agenda, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    instrument_tracing(agenda, provider)

    @agenda.define("tick")
    async def tick(job: Job) -> None:
        pass

    log = EventLog(agenda, "complete")
    await agenda.every("1 hour", "tick")
    await agenda.start()
    await log.wait("complete")
    (span,) = runs(exporter, "tick")
    assert (span.attributes or {})["agendapy.job.repeat_interval"] == "1 hour"


async def test_a_lost_lock_is_a_span_event(
    agenda: Agenda, provider: TracerProvider, exporter: InMemorySpanExporter, jobs_collection: Any
) -> None:
    instrument_tracing(agenda, provider)
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
    (span,) = runs(exporter, "victim")
    assert "lock lost" in [e.name for e in span.events]
    assert span.status.status_code is StatusCode.ERROR


async def test_close_removes_the_listeners(
    agenda: Agenda, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = instrument_tracing(agenda, provider)
    assert instrument_tracing(agenda, provider) is tracing

    @agenda.define("quiet")
    async def quiet(job: Job) -> None:
        pass

    tracing.close()
    log = EventLog(agenda, "complete")
    await agenda.now("quiet")
    await agenda.start()
    await log.wait("complete")
    assert exporter.get_finished_spans() == ()
    assert instrument_tracing(agenda, provider) is not tracing


def test_a_clear_error_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    with pytest.raises(ImportError, match=r"pip install 'agendapy\[otel\]'"):
        instrument_tracing(Agenda("mongodb://127.0.0.1:1/x"))

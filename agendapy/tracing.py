"""OpenTelemetry spans around job runs (the ``otel`` extra: ``pip install 'agendapy[otel]'``).

``instrument_tracing(agenda)`` opens a span ``agendapy.run <job name>`` at each run's ``start`` event
and ends it at ``complete``. While it is open the span is the current one in the run's task, so spans
that the handler (or a library it calls) starts are its children. Configure an SDK tracer provider and
exporter as usual; without one, OpenTelemetry's API makes these spans no-ops.
"""

from __future__ import annotations

import importlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .agenda import Agenda
    from .job import Job
    from .run import RetryDetails

__all__ = ["SPAN_PREFIX", "AgendaTracing", "instrument_tracing"]

log = logging.getLogger("agendapy.tracing")

#: Span names are ``"agendapy.run <job name>"``.
SPAN_PREFIX = "agendapy.run"

_INSTALL_HINT = "agendapy.tracing needs opentelemetry-api: pip install 'agendapy[otel]'"

_by_agenda: weakref.WeakKeyDictionary[Agenda, AgendaTracing] = weakref.WeakKeyDictionary()


def _otel() -> tuple[ModuleType, ModuleType]:
    try:
        return importlib.import_module("opentelemetry.trace"), importlib.import_module(
            "opentelemetry.context"
        )
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc


def _version() -> str:
    try:
        return version("agendapy")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass
class _OpenRun:
    span: Span
    token: object
    outcome: str | None = None


class AgendaTracing:
    """The span listeners on one Agenda (made by :func:`instrument_tracing`); ``close()`` removes them.

    Span attributes: ``agendapy.job.id``, ``agendapy.job.name``, ``agendapy.job.type``,
    ``agendapy.job.priority``, ``agendapy.job.attempt`` (``fail_count + 1``), ``agendapy.job.fail_count``,
    ``agendapy.job.repeat_interval`` and ``agendapy.job.interval_started_at``/``_ended_at`` when set,
    ``agendapy.worker`` when the Agenda has a name, and at the end ``agendapy.run.outcome``
    (succeeded, failed or interrupted). A failed run records the exception and sets the status to
    ERROR; a backoff retry, an exhausted retry and a lost lock add span events.
    """

    def __init__(self, agenda: Agenda, tracer_provider: TracerProvider | None = None) -> None:
        trace, context = _otel()
        self._trace = trace
        self._context = context
        self.tracer: Tracer = trace.get_tracer("agendapy", _version(), tracer_provider=tracer_provider)
        self._agenda_ref = weakref.ref(agenda)
        self._worker = agenda.name
        self._open: dict[str | int, _OpenRun] = {}
        self._listeners: list[tuple[str, Callable[..., Any]]] = [
            ("start", self._on_start),
            ("success", self._on_success),
            ("fail", self._on_fail),
            ("retry", self._on_retry),
            ("retry exhausted", self._on_retry_exhausted),
            ("lock lost", self._on_lock_lost),
            ("complete", self._on_complete),
        ]
        for event, listener in self._listeners:
            agenda.on(event, listener)

    @staticmethod
    def _key(job: Job) -> str | int:
        return job.id if job.id is not None else id(job)

    def _attributes(self, job: Job) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "agendapy.job.name": job.name,
            "agendapy.job.type": job.type,
            "agendapy.job.priority": job.priority,
            "agendapy.job.attempt": job.fail_count + 1,
            "agendapy.job.fail_count": job.fail_count,
        }
        if job.id is not None:
            attributes["agendapy.job.id"] = job.id
        if job.repeat_interval:
            attributes["agendapy.job.repeat_interval"] = str(job.repeat_interval)
        if job.interval_started_at is not None:
            attributes["agendapy.job.interval_started_at"] = job.interval_started_at.isoformat()
        if job.interval_ended_at is not None:
            attributes["agendapy.job.interval_ended_at"] = job.interval_ended_at.isoformat()
        agenda = self._agenda_ref()
        worker = agenda.name if agenda is not None else self._worker
        if worker:
            attributes["agendapy.worker"] = worker
        return attributes

    def _on_start(self, job: Job) -> None:
        span = self.tracer.start_span(
            f"{SPAN_PREFIX} {job.name}", kind=self._trace.SpanKind.CONSUMER, attributes=self._attributes(job)
        )
        # Make it current for the rest of this run's task, so the handler's spans are its children.
        token = self._context.attach(self._trace.set_span_in_context(span))
        stale = self._open.pop(self._key(job), None)
        if stale is not None:  # a run that never completed (cancelled): close it rather than leak it
            stale.span.set_attribute("agendapy.run.outcome", "interrupted")
            stale.span.end()
        self._open[self._key(job)] = _OpenRun(span=span, token=token)

    def _on_success(self, job: Job) -> None:
        run = self._open.get(self._key(job))
        if run is not None:
            run.outcome = "succeeded"

    def _on_fail(self, error: BaseException, job: Job) -> None:
        run = self._open.get(self._key(job))
        if run is None:
            return
        run.outcome = "failed"
        run.span.record_exception(error)
        description = f"{type(error).__name__}: {error}".rstrip(": ")
        run.span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, description))

    def _on_retry(self, job: Job, details: RetryDetails) -> None:
        run = self._open.get(self._key(job))
        if run is not None:
            run.span.add_event(
                "retry",
                {
                    "agendapy.retry.attempt": details.attempt,
                    "agendapy.retry.delay_seconds": details.delay,
                    "agendapy.retry.next_run_at": details.next_run_at.isoformat(),
                },
            )

    def _on_retry_exhausted(self, error: BaseException, job: Job) -> None:
        run = self._open.get(self._key(job))
        if run is not None:
            run.span.add_event("retry exhausted", {"agendapy.job.fail_count": job.fail_count})

    def _on_lock_lost(self, job: Job) -> None:
        run = self._open.get(self._key(job))
        if run is not None:
            run.span.add_event("lock lost")

    def _on_complete(self, job: Job) -> None:
        run = self._open.pop(self._key(job), None)
        if run is None:
            return
        run.span.set_attribute("agendapy.run.outcome", run.outcome or "interrupted")
        try:
            self._context.detach(run.token)
        except Exception:  # detached elsewhere: the span still ends
            log.debug("could not detach the run's context", exc_info=True)
        run.span.end()

    def close(self) -> None:
        """Remove the listeners and end the spans still open."""
        agenda = self._agenda_ref()
        if agenda is not None:
            for event, listener in self._listeners:
                agenda.off(event, listener)
            if _by_agenda.get(agenda) is self:
                del _by_agenda[agenda]
        for run in self._open.values():
            run.span.set_attribute("agendapy.run.outcome", run.outcome or "interrupted")
            run.span.end()
        self._open.clear()


def instrument_tracing(agenda: Agenda, tracer_provider: TracerProvider | None = None) -> AgendaTracing:
    """Wrap each run of ``agenda`` in a span ``agendapy.run <job name>``; returns its AgendaTracing.

    Args:
        agenda: the Agenda whose runs to trace (calling this again returns the same object).
        tracer_provider: where the spans go (default: OpenTelemetry's global provider).

    Raises:
        ImportError: opentelemetry-api is not installed.
    """
    existing = _by_agenda.get(agenda)
    if existing is not None:
        return existing
    tracing = AgendaTracing(agenda, tracer_provider)
    _by_agenda[agenda] = tracing
    return tracing

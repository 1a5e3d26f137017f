"""Prometheus metrics for an Agenda (the ``metrics`` extra: ``pip install 'agendapy[metrics]'``).

``instrument(agenda)`` adds event listeners that count runs and time them, and a collector that reports
what this worker holds. Expose them with ``serve_metrics(agenda, port)`` (a small HTTP server thread,
what ``agendapy worker --metrics-port`` uses) or mount ``metrics_app(agenda)`` in an ASGI application.
prometheus-client is imported only when one of these is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from .errors import NotRunning

if TYPE_CHECKING:
    from threading import Thread
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry

    from .agenda import Agenda
    from .job import Job
    from .run import RetryDetails
    from .workers import WorkerInfo

__all__ = [
    "DEFAULT_BUCKETS",
    "AgendaMetrics",
    "MetricsApp",
    "MetricsServer",
    "Snapshot",
    "instrument",
    "metrics_app",
    "serve_metrics",
]

log = logging.getLogger("agendapy.metrics")

#: Run-duration histogram buckets (seconds): jobs last from milliseconds to hours.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip

_INSTALL_HINT = "agendapy.metrics needs prometheus-client: pip install 'agendapy[metrics]'"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_by_agenda: weakref.WeakKeyDictionary[Agenda, AgendaMetrics] = weakref.WeakKeyDictionary()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, AgendaMetrics] = weakref.WeakKeyDictionary()


def _prometheus() -> ModuleType:
    try:
        return importlib.import_module("prometheus_client")
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc


@dataclass(frozen=True)
class Snapshot:
    """What the gauges report, as :meth:`AgendaMetrics.refresh` last read it from the Agenda."""

    names: tuple[str, ...] = ()
    running: dict[str, int] = field(default_factory=dict)
    locked: dict[str, int] = field(default_factory=dict)
    queue_depth: int | None = None
    refreshed_at: float | None = None  # Unix time
    #: The registered workers of the whole fleet (None: not read yet).
    workers: tuple[WorkerInfo, ...] | None = None


class AgendaMetrics:
    """The Prometheus metrics of one Agenda, registered in one registry (made by :func:`instrument`).

    Counters and the histogram are exact: event listeners update them as runs happen. The gauges
    (``jobs_running``, ``jobs_locked``, ``queue_depth``) are read at scrape time from a snapshot:
    ``running_stats()`` is asynchronous and counts due jobs with a query, so a background task on the
    Agenda's event loop refreshes the snapshot every ``refresh_every`` seconds (and :func:`metrics_app`
    refreshes it on each scrape). Between refreshes they can be that old;
    ``stats_refreshed_timestamp_seconds`` says when they were read. Running and locked counts are
    this process's (0 while the Agenda is not started); the queue depth is the collection's.
    """

    def __init__(
        self,
        agenda: Agenda,
        registry: CollectorRegistry,
        *,
        namespace: str = "agendapy",
        refresh_every: float = 5.0,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        prom = _prometheus()
        self._agenda_ref = weakref.ref(agenda)
        self.registry = registry
        self.namespace = namespace
        self.refresh_every = refresh_every
        self._snapshot = Snapshot(names=tuple(agenda.definitions))
        self._started_at: dict[str | int, float] = {}
        self._task: asyncio.Task[None] | None = None

        def counter(name: str, doc: str) -> Counter:
            made: Counter = prom.Counter(name, doc, ["name"], namespace=namespace, registry=registry)
            return made

        self.jobs_started = counter("jobs_started_total", "Runs started, per job name.")
        self.jobs_succeeded = counter("jobs_succeeded_total", "Runs that succeeded, per job name.")
        self.jobs_failed = counter("jobs_failed_total", "Runs that failed, per job name.")
        self.jobs_retried = counter("jobs_retried_total", "Failed runs rescheduled by a backoff strategy.")
        self.lock_lost = counter("lock_lost_total", "Runs whose lock another worker took over.")
        self.job_duration: Histogram = prom.Histogram(
            "job_duration_seconds",
            "Run time from start to complete (handler and state saves), per job name.",
            ["name"],
            namespace=namespace,
            buckets=tuple(buckets),
            registry=registry,
        )
        self._collector = _StateCollector(self)
        registry.register(cast("Collector", self._collector))
        self._listeners: list[tuple[str, Callable[..., Any]]] = [
            ("ready", self._on_ready),
            ("start", self._on_start),
            ("success", self._on_success),
            ("fail", self._on_fail),
            ("retry", self._on_retry),
            ("complete", self._on_complete),
            ("lock lost", self._on_lock_lost),
        ]
        for event, listener in self._listeners:
            agenda.on(event, listener)
        self._closed = False

    @property
    def agenda(self) -> Agenda | None:
        """The instrumented Agenda (None once it was garbage-collected)."""
        return self._agenda_ref()

    # -- event listeners ----------------------------------------------------------------------------

    @staticmethod
    def _key(job: Job) -> str | int:
        return job.id if job.id is not None else id(job)

    def _on_ready(self) -> None:
        self._ensure_refreshing()

    def _on_start(self, job: Job) -> None:
        self._ensure_refreshing()
        self.jobs_started.labels(job.name).inc()
        self._started_at[self._key(job)] = time.monotonic()

    def _on_success(self, job: Job) -> None:
        self.jobs_succeeded.labels(job.name).inc()

    def _on_fail(self, error: BaseException, job: Job) -> None:
        self.jobs_failed.labels(job.name).inc()

    def _on_retry(self, job: Job, details: RetryDetails) -> None:
        self.jobs_retried.labels(job.name).inc()

    def _on_lock_lost(self, job: Job) -> None:
        self.lock_lost.labels(job.name).inc()

    def _on_complete(self, job: Job) -> None:
        started = self._started_at.pop(self._key(job), None)
        if started is not None:
            self.job_duration.labels(job.name).observe(time.monotonic() - started)

    # -- gauges ---------------------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The values the gauges report now."""
        return self._snapshot

    async def refresh(self) -> None:
        """Read running and locked counts (``running_stats``) and the queue depth now.

        Nothing is read from a database that is not connected yet; a failed read keeps the last values.
        """
        agenda = self.agenda
        if agenda is None:
            return
        names = tuple(agenda.definitions)
        running: dict[str, int] = {}
        locked: dict[str, int] = {}
        depth: int | None = None
        if agenda.is_running:
            try:
                stats = await agenda.running_stats()
            except NotRunning:
                pass
            else:
                for name, status in stats.job_status.items():
                    running[name] = int(status.get("running", 0))
                    locked[name] = int(status.get("locked", 0))
                depth = stats.total_queue_size_db
        if depth is None:
            try:
                depth = await agenda.store.queue_size(datetime.now(UTC))
            except RuntimeError:  # not connected: nothing to count yet
                depth = self._snapshot.queue_depth
        workers = self._snapshot.workers
        if agenda.is_connected:
            try:
                workers = tuple(await agenda.workers())
            except Exception as exc:
                log.debug("could not read the workers for the metrics: %s", exc)
        self._snapshot = Snapshot(
            names=names,
            running=running,
            locked=locked,
            queue_depth=depth,
            refreshed_at=time.time(),
            workers=workers,
        )

    def _ensure_refreshing(self) -> None:
        if self._closed or self.refresh_every <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._task = loop.create_task(self._refreshing(), name="agendapy metrics refreshing")

    async def _refreshing(self) -> None:
        while not self._closed and self.agenda is not None:
            try:
                await self.refresh()
            except Exception as exc:
                log.debug("could not refresh the metrics snapshot: %s", exc)
            await asyncio.sleep(self.refresh_every)

    def start(self) -> None:
        """Start refreshing the gauges on the running event loop (also done at the ``ready`` event)."""
        self._ensure_refreshing()

    def close(self) -> None:
        """Remove the listeners, stop refreshing and unregister every metric from the registry."""
        if self._closed:
            return
        self._closed = True
        agenda = self.agenda
        if agenda is not None:
            for event, listener in self._listeners:
                agenda.off(event, listener)
            if _by_agenda.get(agenda) is self:
                del _by_agenda[agenda]
        if self._task is not None and not self._task.done():
            with contextlib.suppress(RuntimeError):  # its event loop is already closed
                self._task.cancel()
        if _by_registry.get(self.registry) is self:
            del _by_registry[self.registry]
        for collector in (
            self.jobs_started,
            self.jobs_succeeded,
            self.jobs_failed,
            self.jobs_retried,
            self.lock_lost,
            self.job_duration,
            cast("Collector", self._collector),
        ):
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the text format that ``accept`` asks for: (body, content type)."""
        prom = _prometheus()
        encoder, content_type = prom.exposition.choose_encoder(accept)
        return cast(bytes, encoder(self.registry)), cast(str, content_type)


class _StateCollector:
    """Builds the gauges from the latest snapshot at each scrape (any thread)."""

    def __init__(self, metrics: AgendaMetrics) -> None:
        self._metrics = metrics

    def _worker_families(self) -> dict[str, GaugeMetricFamily]:
        core = importlib.import_module("prometheus_client.core")
        m = self._metrics
        prefix = f"{m.namespace}_" if m.namespace else ""
        labels = ["worker", "host", "pid"]
        return {
            "count": core.GaugeMetricFamily(
                f"{prefix}workers",
                "Registered worker processes of the whole fleet, by state (live, lost).",
                labels=["state"],
            ),
            "up": core.GaugeMetricFamily(
                f"{prefix}worker_up", "1 while a registered worker is live, 0 once it is lost.", labels=labels
            ),
            "running": core.GaugeMetricFamily(
                f"{prefix}worker_jobs_running", "Runs in progress, per worker.", labels=labels
            ),
            "locked": core.GaugeMetricFamily(
                f"{prefix}worker_jobs_locked", "Jobs held locked, per worker.", labels=labels
            ),
            "done": core.GaugeMetricFamily(
                f"{prefix}worker_runs_done",
                "Runs a worker finished successfully since it started.",
                labels=labels,
            ),
            "failed": core.GaugeMetricFamily(
                f"{prefix}worker_runs_failed", "Runs that failed in a worker since it started.", labels=labels
            ),
            "last_seen": core.GaugeMetricFamily(
                f"{prefix}worker_last_seen_timestamp_seconds",
                "A worker's last heartbeat (Unix time).",
                labels=labels,
            ),
        }

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        core = importlib.import_module("prometheus_client.core")
        m = self._metrics
        every = f"refreshed every {m.refresh_every:g} s" if m.refresh_every > 0 else "refreshed on scrape"
        prefix = f"{m.namespace}_" if m.namespace else ""
        return (
            core.GaugeMetricFamily(
                f"{prefix}jobs_running",
                f"Runs in progress in this process, per job name ({every}).",
                labels=["name"],
            ),
            core.GaugeMetricFamily(
                f"{prefix}jobs_locked",
                f"Jobs this process holds locked (waiting or running), per job name ({every}).",
                labels=["name"],
            ),
            core.GaugeMetricFamily(
                f"{prefix}queue_depth", f"Jobs due in the database (nextRunAt before now; {every})."
            ),
            core.GaugeMetricFamily(
                f"{prefix}stats_refreshed_timestamp_seconds",
                "When the running, locked and queue-depth gauges were last read (Unix time).",
            ),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()
        yield from self._worker_families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        running, locked, depth, refreshed = self._families()
        snapshot = self._metrics.snapshot
        for name in sorted(set(snapshot.names) | set(snapshot.running) | set(snapshot.locked)):
            running.add_metric([name], snapshot.running.get(name, 0))
            locked.add_metric([name], snapshot.locked.get(name, 0))
        yield running
        yield locked
        if snapshot.queue_depth is not None:
            depth.add_metric([], snapshot.queue_depth)
            yield depth
        if snapshot.refreshed_at is not None:
            refreshed.add_metric([], snapshot.refreshed_at)
            yield refreshed
        if snapshot.workers is not None:
            yield from self._collect_workers(snapshot.workers)

    def _collect_workers(self, workers: tuple[WorkerInfo, ...]) -> Iterator[GaugeMetricFamily]:
        families = self._worker_families()
        for state in ("live", "lost"):
            families["count"].add_metric([state], sum(1 for w in workers if w.state == state))
        for worker in workers:
            labels = [worker.name, worker.host, str(worker.pid)]
            families["up"].add_metric(labels, 1 if worker.state == "live" else 0)
            families["running"].add_metric(labels, worker.running)
            families["locked"].add_metric(labels, worker.locked)
            families["done"].add_metric(labels, worker.done)
            families["failed"].add_metric(labels, worker.failed)
            if worker.last_seen is not None:
                families["last_seen"].add_metric(labels, worker.last_seen.timestamp())
        yield from families.values()


def instrument(
    agenda: Agenda,
    registry: CollectorRegistry | None = None,
    *,
    namespace: str = "agendapy",
    refresh_every: float = 5.0,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
) -> AgendaMetrics:
    """Count and time the runs of ``agenda`` in Prometheus metrics; returns its :class:`AgendaMetrics`.

    Metrics (with the default namespace): counters ``agendapy_jobs_started_total``,
    ``agendapy_jobs_succeeded_total``, ``agendapy_jobs_failed_total``, ``agendapy_jobs_retried_total``,
    ``agendapy_lock_lost_total``, histogram ``agendapy_job_duration_seconds`` (all labelled ``name``),
    gauges ``agendapy_jobs_running{name}``, ``agendapy_jobs_locked{name}``, ``agendapy_queue_depth``
    and ``agendapy_stats_refreshed_timestamp_seconds``. Calling it again for the same Agenda returns
    the same object.

    Args:
        agenda: the Agenda whose events to count.
        registry: where to register (default: prometheus-client's global ``REGISTRY``). One registry
            holds the metrics of one Agenda; give each further Agenda its own ``CollectorRegistry()``.
        namespace: the metric name prefix ("" for none).
        refresh_every: seconds between refreshes of the gauges (0: only when :meth:`AgendaMetrics.refresh`
            is awaited, as :func:`metrics_app` does on each scrape).
        buckets: the duration histogram's buckets, in seconds.

    Raises:
        ImportError: prometheus-client is not installed.
        ValueError: the Agenda is instrumented in another registry, or the registry holds another
            Agenda's metrics.
    """
    prom = _prometheus()
    target: CollectorRegistry = registry if registry is not None else prom.REGISTRY
    existing = _by_agenda.get(agenda)
    if existing is not None:
        if existing.registry is not target:
            raise ValueError("this Agenda is already instrumented in another registry")
        return existing
    holder = _by_registry.get(target)
    if holder is not None:
        if holder.agenda is not None:
            raise ValueError(
                "this registry already holds another Agenda's metrics: pass "
                "registry=prometheus_client.CollectorRegistry() for each further Agenda"
            )
        holder.close()  # its Agenda is gone; free the metric names
    metrics = AgendaMetrics(agenda, target, namespace=namespace, refresh_every=refresh_every, buckets=buckets)
    _by_agenda[agenda] = metrics
    _by_registry[target] = metrics
    metrics.start()
    return metrics


@dataclass
class MetricsServer:
    """The HTTP server of :func:`serve_metrics` (a daemon thread); ``close()`` stops it."""

    metrics: AgendaMetrics
    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        """The port it listens on (useful after asking for port 0)."""
        return int(self.server.server_address[1])

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(
    agenda: Agenda,
    port: int,
    addr: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Instrument ``agenda`` and serve ``/metrics`` on ``addr:port`` from a daemon thread (port 0: any
    free port).

    The endpoint has no authentication, and job names are in it: it listens on loopback unless ``addr``
    says otherwise (``"0.0.0.0"`` for a scraper on another host, behind your network policy).
    """
    prom = _prometheus()
    metrics = instrument(agenda, registry)
    server, thread = prom.start_http_server(port, addr=addr, registry=metrics.registry)
    return MetricsServer(metrics=metrics, server=server, thread=thread)


class MetricsApp:
    """The ASGI app of :func:`metrics_app` (a class, so frameworks mount it as an app, not a view)."""

    def __init__(self, metrics: AgendaMetrics, *, refresh_timeout: float = 2.0) -> None:
        self.metrics = metrics
        self.refresh_timeout = refresh_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            headers = [(b"allow", b"GET, HEAD")]
            await _respond(send, 405, b"method not allowed\n", "text/plain; charset=utf-8", headers)
            return
        try:
            await asyncio.wait_for(self.metrics.refresh(), self.refresh_timeout)
        except Exception as exc:  # a slow or unreachable database must not break the scrape
            log.debug("metrics refresh on scrape failed: %s", exc)
        accept = ""
        for key, value in scope.get("headers", []):
            if key.lower() == b"accept":
                accept = value.decode("latin-1")
        body, content_type = self.metrics.exposition(accept)
        await _respond(send, 200, b"" if method == "HEAD" else body, content_type)


def metrics_app(
    agenda: Agenda,
    registry: CollectorRegistry | None = None,
    *,
    refresh_timeout: float = 2.0,
) -> MetricsApp:
    """An ASGI app serving the metrics of ``agenda`` (instrumenting it), to mount at ``/metrics``.

    Starlette: ``Route("/metrics", metrics_app(agenda))``; FastAPI: ``app.mount("/metrics", ...)``.
    Each scrape first refreshes the gauges (for at most ``refresh_timeout`` seconds; on a timeout it
    serves the last values), so they are current when the app runs on the Agenda's event loop.
    """
    return MetricsApp(instrument(agenda, registry), refresh_timeout=refresh_timeout)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type.encode("latin-1")), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The agendapy side of ``benchmarks/compare.py``: a worker module run through the real CLI.

    python -m agendapy worker bench_worker:agenda --mongo-url URL --name w0

Configured by environment variables (all optional except where said), so the harness runs the very
same module for every workload:

``BENCH_COLLECTION``           the jobs collection (default ``agendaJobs``)
``BENCH_JOB_NAME``             the job name to define (default ``bench-noop``); the handler does nothing
``BENCH_PROCESS_EVERY``        seconds; unset = agendapy's default
``BENCH_MAX_CONCURRENCY``      unset = agendapy's default
``BENCH_DEFAULT_CONCURRENCY``  unset = agendapy's default
``BENCH_AGENDA_OPTIONS``       a JSON object of further ``Agenda(...)`` keyword arguments (A/B runs), e.g.
                               ``{"change_streams": false}``
``BENCH_RESULTS``              a collection: the handler records ``{jobId, t0: data.t0, t1}`` there, ``t1``
                               being ``time.time()`` in ms at handler start (the latency workload)
``BENCH_COUNTS_FILE``          turns on command counting: a ``pymongo.monitoring.CommandListener`` counts
                               every command this process sends (and its server time, per command name)
                               from the Agenda's ``ready`` event on; on SIGUSR2 the counts are written
                               to this file as JSON and counting stops.

Prints ``{"event": "ready", "t": <epoch ms>, "pid": ...}`` on stdout when the Agenda is connected.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

from pymongo import monitoring

from agendapy import Agenda, Job


class _CommandCounter(monitoring.CommandListener):
    """Counts started commands and sums their durations, per command name."""

    def __init__(self) -> None:
        self.enabled = False
        self.counts: Counter[str] = Counter()
        self.micros: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.enabled:
            self.counts[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if self.enabled:
            self.micros[event.command_name] += event.duration_micros

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if self.enabled:
            self.micros[event.command_name] += event.duration_micros

    def write(self, path: str) -> None:
        snapshot = {
            "counts": dict(self.counts),
            "ms": {name: micros / 1000.0 for name, micros in self.micros.items()},
        }
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(snapshot, f)
        os.replace(tmp, path)


_counts_file = os.environ.get("BENCH_COUNTS_FILE")
_counter: _CommandCounter | None = None
if _counts_file:
    # Registered before the Agenda creates its client: listeners apply to clients created afterwards.
    _counter = _CommandCounter()
    monitoring.register(_counter)

    def _freeze(signum: int, frame: Any) -> None:
        assert _counter is not None and _counts_file is not None
        _counter.write(_counts_file)
        _counter.enabled = False

    signal.signal(signal.SIGUSR2, _freeze)


options: dict[str, Any] = {}
for env, option, kind in (
    ("BENCH_PROCESS_EVERY", "process_every", float),
    ("BENCH_MAX_CONCURRENCY", "max_concurrency", int),
    ("BENCH_DEFAULT_CONCURRENCY", "default_concurrency", int),
):
    value = os.environ.get(env)
    if value:
        options[option] = kind(value)
options.update(json.loads(os.environ.get("BENCH_AGENDA_OPTIONS") or "{}"))

agenda = Agenda(collection=os.environ.get("BENCH_COLLECTION", "agendaJobs"), **options)
JOB_NAME = os.environ.get("BENCH_JOB_NAME", "bench-noop")
RESULTS = os.environ.get("BENCH_RESULTS")


@agenda.define(JOB_NAME)
async def noop(job: Job) -> None:
    if RESULTS:
        t1 = time.time() * 1000.0
        data = job.data if isinstance(job.data, dict) else {}
        await agenda.store.database[RESULTS].insert_one(
            {"jobId": job.id, "t0": data.get("t0"), "t1": t1, "lib": "agendapy"}
        )


@agenda.on("ready")
def _ready() -> None:
    if _counter is not None:
        _counter.enabled = True
    sys.stdout.write(json.dumps({"event": "ready", "t": time.time() * 1000.0, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()

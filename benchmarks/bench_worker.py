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
``BENCH_HANDLER``              ``noop`` (default) or ``counter``: the handler does one ``update_one``
                               (``$inc`` of one counter document in ``bench_counter``)
``BENCH_RESULTS``              a collection: the handler records ``{jobId, t0: data.t0, t1}`` there, ``t1``
                               being ``time.time()`` in ms at handler start (the latency workload)
``BENCH_COUNTS_FILE``          turns on command counting (``bench_counting``) from the Agenda's ``ready``
                               event on; on SIGUSR2 the counts are written to this file as JSON and
                               counting stops.

Prints ``{"event": "ready", "t": <epoch ms>, "pid": ...}`` on stdout when the Agenda is connected.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from bench_counting import install

from agendapy import Agenda, Job

# Registered before the Agenda creates its client: listeners apply to clients created afterwards.
_counter = install(os.environ.get("BENCH_COUNTS_FILE"))


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


COUNTER = os.environ.get("BENCH_HANDLER", "noop") == "counter"


@agenda.define(JOB_NAME)
async def noop(job: Job) -> None:
    if COUNTER:
        await agenda.store.database["bench_counter"].update_one(
            {"_id": "jobs"}, {"$inc": {"n": 1}}, upsert=True
        )
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

"""The agendapy side of ``benchmarks/compare.py --store postgres``: a worker module run through the CLI.

    python -m agendapy worker pg_worker:agenda --name w0

Its Agenda carries a ``PostgresJobStore`` on ``$BENCH_PG_URL`` (so no URL option is given). Configured by
environment variables, all optional except ``BENCH_PG_URL``:

``BENCH_JOB_NAME``             the job to define (default ``bench-noop``); the handler does nothing
``BENCH_PROCESS_EVERY``        seconds; unset = agendapy's default
``BENCH_MAX_CONCURRENCY``      unset = agendapy's default
``BENCH_DEFAULT_CONCURRENCY``  unset = agendapy's default
``BENCH_RESULTS``              set: the handler inserts ``(lib, job_id, t0 = data.t0, t1 = now in ms)``
                               into ``bench_results`` (the latency workload)

Prints ``{"event": "ready", "t": <epoch ms>, "pid": ...}`` on stdout when the Agenda is connected.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from agendapy import Agenda, Job
from agendapy.store.postgres import PostgresJobStore

options: dict[str, Any] = {}
for env, option, kind in (
    ("BENCH_PROCESS_EVERY", "process_every", float),
    ("BENCH_MAX_CONCURRENCY", "max_concurrency", int),
    ("BENCH_DEFAULT_CONCURRENCY", "default_concurrency", int),
):
    value = os.environ.get(env)
    if value:
        options[option] = kind(value)

store = PostgresJobStore(os.environ["BENCH_PG_URL"])
agenda = Agenda(store, **options)
JOB_NAME = os.environ.get("BENCH_JOB_NAME", "bench-noop")
RESULTS = bool(os.environ.get("BENCH_RESULTS"))


@agenda.define(JOB_NAME)
async def noop(job: Job) -> None:
    if RESULTS:
        t1 = time.time() * 1000.0
        data = job.data if isinstance(job.data, dict) else {}
        async with store.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO bench_results (lib, job_id, t0, t1) VALUES (%s, %s, %s, %s)",
                ("agendapy", str(job.id), data.get("t0"), t1),
            )


@agenda.on("ready")
def _ready() -> None:
    sys.stdout.write(json.dumps({"event": "ready", "t": time.time() * 1000.0, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()

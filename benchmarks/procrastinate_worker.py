"""The procrastinate side of ``benchmarks/compare.py --store postgres`` (procrastinate 3.10, PyPI).

    python benchmarks/procrastinate_worker.py --url postgresql://... [--concurrency 20] [--results]

One task ``bench_noop`` whose body does nothing (with ``--results`` it inserts ``(lib, job_id, t0, t1)``
into ``bench_results``, as the other workers do). The worker keeps procrastinate's defaults apart from
``--concurrency`` (LISTEN/NOTIFY on, polling every 5 s as the fallback, finished jobs kept). Prints
``{"event": "ready", ...}`` once it runs; SIGTERM stops it gracefully (procrastinate's own handling).
Also imported by the harness for ``app`` (schema and bulk deferral).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import procrastinate

TASK = "bench_noop"


def make_app(url: str, results: bool = False) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name=TASK, pass_context=True)
    async def bench_noop(context: procrastinate.JobContext, t0: float | None = None) -> None:
        if results:
            t1 = time.time() * 1000.0
            job_id = context.job.id if context.job is not None else None
            await app.connector.execute_query_async(
                "INSERT INTO bench_results (lib, job_id, t0, t1)"
                " VALUES (%(lib)s, %(job_id)s, %(t0)s, %(t1)s)",
                lib="procrastinate",
                job_id=str(job_id),
                t0=t0,
                t1=t1,
            )

    return app


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--results", action="store_true")
    args = p.parse_args(argv)
    app = make_app(args.url, args.results)
    options: dict[str, Any] = {"install_signal_handlers": True}
    if args.concurrency:
        options["concurrency"] = args.concurrency
    async with app.open_async():
        sys.stdout.write(json.dumps({"event": "ready", "t": time.time() * 1000.0, "pid": os.getpid()}) + "\n")
        sys.stdout.flush()
        await app.run_worker_async(**options)


if __name__ == "__main__":
    asyncio.run(main())

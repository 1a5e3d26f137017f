"""The APScheduler 4 side of ``benchmarks/compare.py``: one worker process (PyPI ``apscheduler==4.0.0a6``).

    python benchmarks/aps_worker.py --url mongodb://host:port --database aps_100_1w --name aps-w0

``AsyncScheduler(MongoDBDataStore(...), role=worker, max_concurrent_jobs=N)`` runs the task
``bench-noop`` (configured with ``max_running_jobs=None``: APScheduler's default is one running job per
task across the whole fleet). Its default event broker is local to the process: APScheduler has no
MongoDB event broker, so a worker learns of jobs that other processes add only when one of its own
jobs is released (it then acquires again) or at start; jobs added while it is idle wait until then.

Environment: ``BENCH_HANDLER`` (``noop`` or ``counter``: one ``update_one`` ``$inc`` on
``bench_counter``, through PyMongo's async client) and ``BENCH_COUNTS_FILE`` (command counts, see
``bench_counting``; the file also carries ``last_release``, the epoch seconds of the last job this
worker released, and ``released``). Prints ``{"event": "ready", ...}`` once its scheduler is running.
SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

from bench_counting import install

TASK_ID = "bench-noop"
_released: dict[str, Any] = {"released": 0, "last_release": None}
_counter = install(os.environ.get("BENCH_COUNTS_FILE"), extra=lambda: dict(_released))


async def main() -> None:
    from apscheduler import AsyncScheduler, JobReleased, SchedulerRole
    from apscheduler.datastores.mongodb import MongoDBDataStore
    from pymongo import AsyncMongoClient

    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--name", default="aps-worker")
    p.add_argument("--max-concurrent-jobs", type=int, default=20)
    args = p.parse_args()

    counter_client: AsyncMongoClient[Any] = AsyncMongoClient(args.url)
    counters = counter_client[args.database]["bench_counter"]
    use_counter = os.environ.get("BENCH_HANDLER", "noop") == "counter"

    async def handler() -> None:
        if use_counter:
            await counters.update_one({"_id": "jobs"}, {"$inc": {"n": 1}}, upsert=True)

    def released(event: Any) -> None:
        _released["released"] += 1
        _released["last_release"] = time.time()

    store = MongoDBDataStore(args.url, database=args.database)
    async with AsyncScheduler(
        store, identity=args.name, role=SchedulerRole.worker, max_concurrent_jobs=args.max_concurrent_jobs
    ) as scheduler:
        await scheduler.configure_task(TASK_ID, func=handler, max_running_jobs=None)
        scheduler.subscribe(released, {JobReleased})
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(scheduler.stop()))
        await scheduler.start_in_background()
        if _counter is not None:
            _counter.enabled = True
        sys.stdout.write(json.dumps({"event": "ready", "t": time.time() * 1000.0, "pid": os.getpid()}) + "\n")
        sys.stdout.flush()
        await scheduler.wait_until_stopped()
    await counter_client.close()


async def add_jobs(url: str, database: str, count: int) -> None:
    """Configure the task and add ``count`` jobs (the harness's producer; not timed)."""
    from apscheduler import AsyncScheduler
    from apscheduler.datastores.mongodb import MongoDBDataStore

    async def placeholder() -> None:  # the workers configure the real callable
        pass

    store = MongoDBDataStore(url, database=database)
    async with AsyncScheduler(store, role="scheduler") as scheduler:
        await scheduler.configure_task(TASK_ID, func=placeholder, max_running_jobs=None)
        for start in range(0, count, 50):
            await asyncio.gather(*(scheduler.add_job(TASK_ID) for _ in range(min(50, count - start))))


if __name__ == "__main__":
    asyncio.run(main())

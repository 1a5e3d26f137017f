"""How fast one worker drains a backlog of one job name, alone and beside other defined names.

    python benchmarks/one_name_backlog.py [--mongo-url URL] [--jobs 300] [--others 0,4,10] [--process-every 1]

A service usually defines several names; a backlog of one of them should be claimed as its runs end,
whatever the others are doing. For each count of other (idle) names, the worker drains ``--jobs``
no-op jobs of the busy name (default concurrency 5, ``max_concurrency`` 20) and the table prints the
time and the rate. With a claim only at each poll the rate would be about ten jobs per
``process_every``.

Without ``--mongo-url`` it starts the embedded database (the ``embedded`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from embedded_db import database_url

from agendapy import Agenda, Job


async def drain(url: str, jobs: int, others: int, process_every: float) -> float:
    """Seconds from ``start()`` until ``jobs`` jobs of one name ran, with ``others`` idle names defined."""
    agenda = Agenda(url, collection=f"backlog_{others}", process_every=process_every, name="bench")
    await agenda.connect()
    await agenda.cancel_all()
    done = asyncio.Event()
    ran = 0

    def busy(job: Job) -> None:
        nonlocal ran
        ran += 1
        if ran == jobs:
            done.set()

    agenda.define("busy", busy)
    for n in range(others):
        agenda.define(f"idle-{n}", lambda job: None)
    await agenda.now_many("busy", [{"n": n} for n in range(jobs)])
    began = time.perf_counter()
    await agenda.start()
    await asyncio.wait_for(done.wait(), 600)
    took = time.perf_counter() - began
    await agenda.stop()
    await agenda.cancel_all()
    await agenda.close()
    return took


async def main(url: str, jobs: int, others: list[int], process_every: float) -> None:
    rows = [(count, await drain(url, jobs, count, process_every)) for count in others]
    print(f"{jobs} no-op jobs of one name, process_every {process_every:g} s\n")
    print("| other names defined | time | jobs/s |")
    print("|---:|---:|---:|")
    for count, took in rows:
        print(f"| {count} | {took:.2f} s | {jobs / took:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mongo-url", help="a database URL (default: start the embedded database)")
    parser.add_argument("--jobs", type=int, default=300, help="jobs in the backlog")
    parser.add_argument("--others", default="0,4,10", help="counts of other names, comma-separated")
    parser.add_argument("--process-every", type=float, default=1.0, help="the worker's poll, seconds")
    args = parser.parse_args()
    counts = [int(part) for part in args.others.split(",") if part.strip()]
    with database_url(args.mongo_url, "one_name_backlog") as url:
        asyncio.run(main(url, args.jobs, counts, args.process_every))

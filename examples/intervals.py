"""Interval runs: each interval once across a fleet, handed to the handler, and a job that waits for
the runs of another job to cover its interval.

    python examples/intervals.py

"load" runs every 2 seconds and "report" every 4; "report" requires "load", so the report for
[10:00:00, 10:00:04) starts only after both loads of [10:00:00, 10:00:02) and [10:00:02, 10:00:04)
succeeded. Two workers run both jobs; no interval runs twice.
"""

from __future__ import annotations

import asyncio

from agendapy import Agenda, Job


def span(job: Job) -> str:
    assert job.interval_started_at and job.interval_ended_at
    return f"[{job.interval_started_at:%H:%M:%S}, {job.interval_ended_at:%H:%M:%S})"


def make_worker(name: str) -> Agenda:
    agenda = Agenda(name=name, process_every=0.1)

    @agenda.define("load", once_per_interval=True)
    async def load(job: Job) -> None:
        print(f"{name}: load   {span(job)}")

    @agenda.define("report", once_per_interval=True)
    async def report(job: Job) -> None:
        print(f"{name}: report {span(job)}")

    return agenda


async def main() -> None:
    workers = [make_worker("worker-1"), make_worker("worker-2")]
    first = workers[0]
    await first.connect()
    await first.cancel(names=["load", "report"])
    reports = asyncio.Event()
    count = 0

    def reported(job: Job) -> None:
        nonlocal count
        count += 1
        if count == 3:
            reports.set()

    for agenda in workers:
        agenda.on("success:report", reported)
        await agenda.start()
    await first.every("*/2 * * * * *", "load")
    await asyncio.sleep(4.5)  # let "load" cover a whole report interval before the report exists
    await first.every("*/4 * * * * *", "report", requires=["load"])
    await asyncio.wait_for(reports.wait(), 30)
    for agenda in workers:
        await agenda.stop()

    print("\nrun history of 'report' (newest first):")
    for run in await first.runs("report", limit=3):
        interval = f"{run.interval_started_at:%H:%M:%S}-{run.interval_ended_at:%H:%M:%S}"
        print(f"  {interval} {run.status} by {run.worker}")
    for agenda in workers:
        await agenda.close()


if __name__ == "__main__":
    asyncio.run(main())

"""Fixed delay: the next run starts a set time after the previous one *finished*, so slow runs never
overlap and a worker that was down for hours runs once, not once per missed interval.

    python examples/fixed_delay.py
"""

from __future__ import annotations

import asyncio
import random
import time

from agendapy import Agenda, Job

agenda = Agenda(name="poller", process_every=0.1)
finished_at: list[float] = []
four_runs = asyncio.Event()


@agenda.define("poll inbox")
async def poll_inbox(job: Job) -> None:
    started = time.monotonic()
    if finished_at:
        print(f"started {started - finished_at[-1]:.2f} s after the previous run finished")
    await asyncio.sleep(random.uniform(0.2, 0.6))  # a run of varying length
    finished_at.append(time.monotonic())
    if len(finished_at) == 4:
        four_runs.set()


async def main() -> None:
    await agenda.connect()
    await agenda.cancel(name="poll inbox")
    await agenda.every("1 second", "poll inbox", fixed_delay=True)
    await agenda.start()
    await asyncio.wait_for(four_runs.wait(), 30)
    await agenda.close()


if __name__ == "__main__":
    asyncio.run(main())

"""Checkpoints: a long job that processes a list in chunks, stops when asked, and resumes elsewhere.

    python examples/chunked_import.py

A first worker starts the import and is stopped halfway (as a deploy's SIGTERM would stop it); a
second worker picks the job up at once and carries on from the last checkpoint instead of starting over.
"""

from __future__ import annotations

import asyncio

from agendapy import Agenda, Interrupted, Job

ROWS = list(range(1, 101))
CHUNK = 10


def make_worker(name: str) -> Agenda:
    agenda = Agenda(name=name, process_every=0.1)

    @agenda.define("import rows")
    async def import_rows(job: Job) -> None:
        start = (job.checkpoint_state or {}).get("next", 0)
        if start:
            print(f"{name}: resuming at row {ROWS[start]}")
        for offset in range(start, len(ROWS), CHUNK):
            if job.stop_requested:  # a graceful stop was asked for: leave, the checkpoint is saved
                print(f"{name}: asked to stop, leaving at row {ROWS[offset]}")
                raise Interrupted  # not a failure: unlocked at once, resumed from the checkpoint
            chunk = ROWS[offset : offset + CHUNK]
            await asyncio.sleep(0.1)  # the real work: write `chunk` somewhere
            await job.checkpoint({"next": offset + CHUNK})
            print(f"{name}: imported rows {chunk[0]}-{chunk[-1]}")
        print(f"{name}: import finished")

    return agenda


async def main() -> None:
    first, second = make_worker("worker-1"), make_worker("worker-2")
    await first.connect()
    await first.cancel(name="import rows")
    done = asyncio.Event()
    second.on("success:import rows", lambda job: done.set())

    await first.now("import rows")
    await first.start()
    await asyncio.sleep(0.55)  # about half the chunks
    await first.stop(grace=2)  # what the worker CLI does on SIGTERM
    await second.start()
    await asyncio.wait_for(done.wait(), 30)
    await second.close()
    await first.close()


if __name__ == "__main__":
    asyncio.run(main())

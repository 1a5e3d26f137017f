"""What running a job in a child process costs, and what it saves.

    python benchmarks/fork_overhead.py [--mongo-url URL] [--runs 100] [--leak-runs 1000]

Prints a table:

1. the time per run of a handler that does nothing, one run at a time: in the worker (a thread),
   forked with ``forkserver`` and forked with ``spawn``; the difference is the overhead of a fork;
2. the worker's resident memory before and after runs of a handler that keeps 5 MB each time it
   runs: forked (``--leak-runs`` runs), and in the worker itself (50 runs, for contrast).

Without ``--mongo-url`` it starts the embedded database (the ``embedded`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fork_handlers  # the children import it by this name
from embedded_db import database_url

from agendapy import Agenda
from agendapy.fork import ForkMethod


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_batch(
    url: str, collection: str, handler: Any, runs: int, *, fork: bool, method: ForkMethod, concurrency: int
) -> float:
    """Seconds to run ``runs`` jobs of ``handler`` to completion."""
    agenda = Agenda(
        url,
        collection=collection,
        process_every=0.05,
        max_concurrency=concurrency,
        default_concurrency=concurrency,
        fork_method=method,
        history="none",
    )
    agenda.define("bench", handler, fork=fork)
    done = 0
    finished = asyncio.Event()

    def complete(job: Any) -> None:
        nonlocal done
        done += 1
        if done >= runs:
            finished.set()

    agenda.on("complete", complete)
    await agenda.now_many("bench", [{"n": n} for n in range(runs)])
    started = time.perf_counter()
    await agenda.start()
    await asyncio.wait_for(finished.wait(), timeout=max(600.0, runs * 2.0))
    elapsed = time.perf_counter() - started
    await agenda.cancel_all()
    await agenda.close()
    return elapsed


async def main(url: str, runs: int, leak_runs: int) -> None:
    noop, leak = fork_handlers.noop, fork_handlers.leak
    rows: list[tuple[str, str]] = []
    # One forked run first per method: the fork server starts once per worker process.
    for method in ("forkserver", "spawn"):
        await run_batch(url, "warm", noop, 1, fork=True, method=method, concurrency=1)
    inline = await run_batch(url, "inline", noop, runs, fork=False, method="spawn", concurrency=1)
    label = f"no-op handler in the worker, {runs} runs one at a time"
    rows.append((label, f"{inline / runs * 1000:.1f} ms/run"))
    for method in ("forkserver", "spawn"):
        forked = await run_batch(url, method, noop, runs, fork=True, method=method, concurrency=1)
        per_run = forked / runs * 1000
        overhead = (forked - inline) / runs * 1000
        rows.append((f"no-op handler forked ({method}), {runs} runs one at a time", f"{per_run:.1f} ms/run"))
        rows.append((f"  overhead of {method} per run", f"{overhead:.1f} ms"))

    before = rss_mib()
    await run_batch(url, "leak", leak, leak_runs, fork=True, method="forkserver", concurrency=2)
    after = rss_mib()
    kept = leak_runs * fork_handlers.LEAK_BYTES / 2**20
    rows.append((f"worker RSS before {leak_runs} forked runs keeping 5 MB each", f"{before:.0f} MiB"))
    rows.append((f"worker RSS after them (the children kept {kept:.0f} MiB)", f"{after:.0f} MiB"))

    inline_runs = 50
    before = rss_mib()
    await run_batch(url, "leak-inline", leak, inline_runs, fork=False, method="spawn", concurrency=2)
    after = rss_mib()
    rows.append((f"worker RSS before {inline_runs} such runs in the worker itself", f"{before:.0f} MiB"))
    rows.append(("worker RSS after them", f"{after:.0f} MiB"))

    width = max(len(label) for label, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for label, value in rows:
        print(f"| {label.ljust(width)} | {value} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mongo-url", help="a database URL (default: start the embedded database)")
    parser.add_argument("--runs", type=int, default=100, help="runs per overhead measurement")
    parser.add_argument("--leak-runs", type=int, default=1000, help="forked runs of the leaking handler")
    args = parser.parse_args()
    with database_url(args.mongo_url, "fork_overhead") as url:
        asyncio.run(main(url, args.runs, args.leak_runs))

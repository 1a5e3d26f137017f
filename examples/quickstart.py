"""The quick start's worker: recurring, one-off and retried jobs you can watch in the terminal.

Run it with ``agendapy worker examples.quickstart:agenda`` (the README's first command). With no
``AGENDAPY_DATABASE_URL`` (or ``AGENDAPY_MONGO_URL``) it uses the embedded database in ``.agendapy/db``,
so stop it (Ctrl-C) and start it again: the schedule carries on where it was instead of starting over.
``AGENDAPY_DATABASE_URL=postgresql://...`` runs the same jobs on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random

from rich.console import Console

from agendapy import Agenda, Job, backoff

console = Console()
agenda = Agenda(name="quickstart", process_every="1 second")


@agenda.define("heartbeat", history=True)
async def heartbeat(job: Job) -> None:
    # The run history survives restarts, like the schedule: count the runs recorded so far.
    runs = len(await agenda.runs("heartbeat", limit=0))
    console.print(f"[cyan]heartbeat[/cyan] run #{runs}, next at {job.next_run_at:%H:%M:%S} UTC")


@agenda.define("send welcome email", concurrency=2)
async def send_welcome_email(job: Job) -> None:
    console.print(f"[green]email[/green] to {job.data['to']} ... ", end="")
    await asyncio.sleep(0.5)
    console.print("[green]sent[/green]")


@agenda.define("flaky import", backoff=backoff.constant(delay=2, max_retries=3))
def flaky_import(job: Job) -> None:  # a plain function runs in a worker thread
    if random.random() < 0.6:
        raise ConnectionError("upstream API timed out")
    console.print("[magenta]import[/magenta] done")


@agenda.on("retry")
def announce_retry(job: Job, details: dict[str, object]) -> None:
    console.print(f"[yellow]retry[/yellow] {job.name!r} attempt {details['attempt']} in {details['delay']} s")


@agenda.on("retry exhausted")
def announce_failure(error: BaseException, job: Job) -> None:
    console.print(f"[red]failed[/red] {job.name!r} for good after {job.fail_count} attempts: {error}")


# "worker start" runs only in a process that runs jobs (`agendapy worker`, `agenda.start()`), never in
# `agendapy jobs ls`, `stats` or the dashboard, which load this module only to look at the jobs.
@agenda.on("worker start")
async def schedule_demo_jobs() -> None:
    await agenda.every("5 seconds", "heartbeat")
    for i, who in enumerate(["ada@example.com", "grace@example.com", "linus@example.com"]):
        await agenda.schedule(f"in {2 + 2 * i} seconds", "send welcome email", {"to": who})
    await agenda.now("flaky import")
    console.print(
        "[bold]scheduled: a heartbeat every 5 s, three emails, one flaky import. Ctrl-C stops.[/bold]"
    )

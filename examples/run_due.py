"""Run-due mode: no resident worker; a scheduler (crontab, a Kubernetes CronJob, a serverless
function) starts this, it runs what is due now under the usual locks, and exits.

    agendapy run-due examples.run_due:agenda          # exit 0 if every run succeeded, else 1
    python examples/run_due.py                         # the same from Python, after scheduling demo jobs
"""

from __future__ import annotations

import asyncio
import sys

from agendapy import Agenda, Job

agenda = Agenda(name="cron-runner")


@agenda.define("nightly cleanup")
async def nightly_cleanup(job: Job) -> None:
    print(f"cleanup of {job.data['table']}")


@agenda.define("send digest")
async def send_digest(job: Job) -> None:
    print(f"digest to {job.data['to']}")


async def main() -> int:
    await agenda.connect()
    await agenda.cancel(names=["nightly cleanup", "send digest"])
    await agenda.now("nightly cleanup", {"table": "sessions"})
    await agenda.now("send digest", {"to": "team@example.com"})
    await agenda.schedule("in 1 hour", "send digest", {"to": "later@example.com"})  # not due: left alone
    result = await agenda.run_due()
    print(f"succeeded: {len(result.succeeded)}, failed: {len(result.failed)}")
    await agenda.close()
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

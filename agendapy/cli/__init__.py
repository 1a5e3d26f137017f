"""The ``agendapy`` command: run workers, look at and change jobs, serve the dashboard.

Exit status: 0 on success, 2 for bad input (a bad TARGET, JSON, interval or date, an unknown job id,
criteria that match no job), 1 for anything else (a database that cannot be reached, a failed run in
``run-due``, a missing optional extra).

The commands live by concern in ``loading`` (TARGET, --database-url, JSON input, one-line errors),
``cmd_worker`` (worker, run-due), ``cmd_jobs`` (jobs, schedule, stats, workers), ``cmd_dashboard``
and ``output`` (what is printed); this module joins them into the ``main`` group. The command modules
are not named after their commands so that ``agendapy.cli.worker`` stays the ``worker`` command.
"""

from __future__ import annotations

import click

from .cmd_dashboard import dashboard
from .cmd_jobs import jobs, schedule, stats, workers
from .cmd_worker import run_due, run_worker, worker
from .loading import BadInput, CliError, Source, load_agenda

__all__ = [
    "BadInput",
    "CliError",
    "Source",
    "dashboard",
    "jobs",
    "load_agenda",
    "main",
    "run_due",
    "run_worker",
    "schedule",
    "stats",
    "worker",
    "workers",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agendapy")
def main() -> None:
    """agendapy: persistent job scheduling on MongoDB or PostgreSQL.

    \b
    Commands:
      worker TARGET            run the jobs TARGET defines until SIGTERM/SIGINT
      run-due TARGET [NAMES]   run what is due now, wait, exit (crontab, CronJobs)
      jobs ls                  list jobs (filters, paging)
      jobs show ID             one job: every field, its data, its recent runs
      jobs cancel              delete jobs by --id/--name/--data
      jobs retry ID            make a job (usually a failed one) due now
      jobs pause | resume      disable or enable jobs by --id/--name/--data
      jobs purge TARGET        delete the jobs whose names TARGET does not define
      schedule NAME [WHEN]     create a job: now, at a date, or --every INTERVAL
      stats                    jobs per name and state, and how many are due
      workers                  worker processes: live, lost (with the jobs they hold), stopped
      dashboard TARGET         serve the web dashboard

    TARGET is MODULE:ATTR naming your Agenda (or a function returning one), e.g. myapp.jobs:agenda.
    Commands that only read or change documents take it as an optional --target, or work from
    --database-url (env AGENDAPY_DATABASE_URL; a mongodb:// or postgresql:// URL; --mongo-url and
    AGENDAPY_MONGO_URL still work) and --collection or --table alone. Every command that prints data
    takes --json. Exit status: 0 ok, 1 error (e.g. the database cannot be reached), 2 bad input.
    """


for _command in (worker, run_due, jobs, schedule, stats, workers, dashboard):
    main.add_command(_command)

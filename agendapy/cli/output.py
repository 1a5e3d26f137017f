"""What the ``agendapy`` command prints: JSON documents for ``--json``, rich tables for people.

Times in tables are UTC with a relative hint ("in 5m", "3h ago"); JSON carries ISO 8601 strings.
Anything read from the database is escaped, so a job named ``[red]x`` prints as it is, and its control
characters are shown as ``\\x1b``-style escapes, so a job name cannot send escape sequences to the
terminal (set its title, hide text, move the cursor). JSON output escapes them the JSON way.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.console import Console
from rich.json import JSON
from rich.markup import escape as escape_markup
from rich.table import Table

from .._terminal import json_printable, printable
from ..agenda import RunDueResult
from ..job import Job
from ..store.runs import RunRecord
from ..workers import WorkerInfo

__all__ = [
    "OVERVIEW_COLUMNS",
    "err_console",
    "error",
    "job_json",
    "print_job",
    "print_jobs",
    "print_json",
    "print_run_due",
    "print_stats",
    "printable",
    "say",
    "warn",
]

err_console = Console(stderr=True, soft_wrap=True, highlight=False)

#: The counts of ``jobs_overview`` per name, in the order a job moves through them.
OVERVIEW_COLUMNS = (
    "total",
    "running",
    "queued",
    "scheduled",
    "repeating",
    "waiting",
    "failed",
    "broken",
    "completed",
    "paused",
)

_STATE_COLOURS = {
    "running": "cyan",
    "waiting": "magenta",
    "failed": "red",
    "broken": "bold red",
    "repeating": "blue",
    "scheduled": "white",
    "queued": "yellow",
    "completed": "green",
}
_RUN_COLOURS = {"succeeded": "green", "failed": "red", "skipped": "yellow", "waiting": "cyan"}


def escape(value: object) -> str:
    """A value from the database as rich text: control characters escaped, then markup escaped."""
    return escape_markup(printable(str(value)))


# -- JSON -------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)  # ObjectId, Decimal128, ...


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as strings: JSON has no spelling for them (job data written by
    another tool may hold them), and strict readers such as jq refuse the ``NaN`` Python would print."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def print_json(value: Any) -> None:
    """One strict JSON document on stdout (dates as ISO 8601, ObjectIds as strings, NaN as "nan")."""
    text = json.dumps(_finite(value), default=_jsonable, ensure_ascii=False, allow_nan=False)
    click.echo(json_printable(text))


def job_json(job: Job) -> dict[str, Any]:
    """Every field of ``job`` (snake_case) and its computed ``state``."""
    out = job.to_dict()
    out["state"] = job.state.value
    out["display_name"] = job.display_name  # ``name`` is "" when the stored one is not a job name
    return out


# -- text -------------------------------------------------------------------------------------------------


def console() -> Console:
    """Rich output on stdout; piped into a file or another program, lines are not wrapped at 80."""
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=200 if wide else None)


def say(message: str) -> None:
    """A plain line on stdout."""
    console().print(printable(message), markup=False)


def error(message: str) -> None:
    """An error on stderr."""
    err_console.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)


def warn(message: str) -> None:
    """A warning on stderr."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True, highlight=False)


def ago(moment: datetime | None, now: datetime) -> str:
    """A time as ``2026-11-25 18:00:00 (in 5m)``, in UTC."""
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    span = abs(seconds)
    relative = "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if span >= size:
            amount = f"{int(span // size)}{unit}"
            relative = f"in {amount}" if seconds > 0 else f"{amount} ago"
            break
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} ({relative})"


def _short(moment: datetime | None, now: datetime) -> str:
    """Like ``ago``, without the date within a day of now."""
    text = ago(moment, now)
    if moment is None or abs((moment - now).total_seconds()) >= 86400:
        return text
    return text[len("2026-11-25 ") :]


def _state(job: Job) -> str:
    state = job.state.value
    return f"[{_STATE_COLOURS.get(state, 'white')}]{state}[/]"


def _lock(job: Job, now: datetime) -> str:
    if job.locked_at is None:
        return ""
    holder = f" by {escape(job.last_modified_by)}" if job.last_modified_by else ""
    return f"since {ago(job.locked_at, now)}{holder}"


def print_jobs(jobs: list[Job], *, total: int, skip: int) -> None:
    """The ``jobs ls`` table and a "1-50 of 120 jobs" line."""
    now = datetime.now(UTC)
    table = Table(caption="times in UTC", caption_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("next run")
    table.add_column("last run")
    table.add_column("fails", justify="right")
    table.add_column("lock")
    for job in jobs:
        table.add_row(
            escape(job.id or ""),
            escape(job.display_name) + (" [dim](paused)[/]" if job.disabled else ""),
            _state(job),
            _short(job.next_run_at, now),
            _short(job.last_run_at, now),
            escape(job.fail_count) if job.fail_count else "",
            _lock(job, now),
        )
    out = console()
    out.print(table)
    first = skip + 1 if jobs else skip
    out.print(f"{first}-{skip + len(jobs)} of {total} jobs", markup=False)


def print_job(job: Job, runs: list[RunRecord]) -> None:
    """``jobs show``: every field, the data as JSON, the recent runs."""
    now = datetime.now(UTC)
    out = console()
    fields = Table(
        show_header=False, box=None, title=escape(f"{job.display_name} ({job.id})"), title_justify="left"
    )
    fields.add_column("field", style="bold")
    fields.add_column("value", overflow="fold")
    fields.add_row("state", _state(job))
    for key, value in job.to_dict().items():
        if key in ("data", "checkpoint_state"):
            continue
        if isinstance(value, datetime):
            shown = ago(value, now)
        elif value is None or value == []:
            shown = "[dim]-[/]"
        else:
            shown = escape(str(value))
        fields.add_row(key, shown)
    out.print(fields)
    out.print("[bold]data[/]")
    out.print(JSON(json.dumps(job.data, default=_jsonable)))
    if job.checkpoint_state is not None:
        out.print("[bold]checkpoint_state[/]")
        out.print(JSON(json.dumps(job.checkpoint_state, default=_jsonable)))
    if not runs:
        out.print("[dim]no run records (by default only recurring jobs record their runs)[/]")
        return
    table = Table(title="recent runs", title_justify="left")
    for column in ("started", "finished", "status", "interval", "worker", "error"):
        table.add_column(column, overflow="fold")
    for run in runs:
        interval = ""
        if run.interval_started_at and run.interval_ended_at:
            interval = f"{run.interval_started_at:%Y-%m-%d %H:%M:%S} - {run.interval_ended_at:%H:%M:%S}"
        table.add_row(
            ago(run.started_at, now),
            ago(run.finished_at, now),
            f"[{_RUN_COLOURS.get(run.status, 'white')}]{run.status}[/]",
            interval,
            escape(run.worker or ""),
            escape(run.error or ""),
        )
    out.print(table)


def run_json(run: RunRecord) -> dict[str, Any]:
    """A run record as a plain dict."""
    return asdict(run)


def print_stats(overview: list[dict[str, Any]], due: int, defined: list[str] | None) -> None:
    """``stats``: counts per name and state, a total row, and the queue size."""
    table = Table(caption="running = locked in the database, by any worker", caption_justify="left")
    table.add_column("name")
    for column in OVERVIEW_COLUMNS:
        table.add_column(column, justify="right")
    totals = dict.fromkeys(OVERVIEW_COLUMNS, 0)
    for entry in overview:
        label = escape(entry["name"])
        if defined is not None and entry["name"] not in defined and not entry.get("unreadable_name"):
            label += " [dim](not defined)[/]"
        table.add_row(label, *(escape(entry.get(column, 0)) for column in OVERVIEW_COLUMNS))
        for column in OVERVIEW_COLUMNS:
            totals[column] += int(entry.get(column, 0))
    if len(overview) > 1:
        table.add_section()
        table.add_row("[bold]all[/]", *(str(totals[column]) for column in OVERVIEW_COLUMNS))
    out = console()
    out.print(table)
    out.print(f"due now (nextRunAt before now, Agenda's queue size): {due}", markup=False)


def print_workers(workers: list[WorkerInfo], now: datetime) -> None:
    """``workers``: one row per worker; a lost worker's held jobs under it."""
    if not workers:
        say("no workers registered (a worker registers itself when it starts)")
        return
    colours = {"live": "green", "lost": "red", "stopped": "dim"}
    table = Table()
    counts = ("pid", "running", "locked", "done", "failed")
    for column in ("name", "state", "host", "pid", "version", "running", "locked", "done", "failed"):
        table.add_column(column, justify="right" if column in counts else "left")
    table.add_column("last seen")
    table.add_column("runs")
    for worker in workers:
        table.add_row(
            escape(worker.name),
            f"[{colours[worker.state]}]{worker.state}[/]",
            escape(worker.host),
            str(worker.pid),
            escape(worker.version),
            str(worker.running),
            str(worker.locked),
            str(worker.done),
            str(worker.failed),
            _short(worker.last_seen, now),
            escape(", ".join(worker.definitions)),
        )
        for held in worker.held_jobs:
            table.add_row(
                f"  [red]holds[/] {escape(held['name'])} ({escape(held['id'])})",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                _short(held["locked_at"], now),
                "",
            )
    console().print(table)


def print_run_due(result: RunDueResult, as_json: bool) -> None:
    """What ``run-due`` ran, per job: succeeded, skipped, waiting (and why) or failed (and why)."""
    rows: list[dict[str, Any]] = []
    for status, jobs in (
        ("succeeded", result.succeeded),
        ("skipped", result.skipped),
        ("waiting", result.waiting),
    ):
        for job in jobs:
            if status == "waiting":
                detail = job.waiting_reason
            else:
                detail = result.skip_reasons.get(job.id or "") if status == "skipped" else None
            rows.append({"name": job.display_name, "id": job.id, "status": status, "detail": detail})
    for job, error in result.failed:
        rows.append(
            {
                "name": job.display_name,
                "id": job.id,
                "status": "failed",
                "detail": job.fail_reason or str(error),
            }
        )
    if as_json:
        print_json({"ok": result.ok, "runs": rows})
        return
    if not rows:
        say("nothing was due")
        return
    table = Table(title="run-due")
    for column in ("name", "id", "status", "detail"):
        table.add_column(column)
    for row in rows:
        status = f"[{_RUN_COLOURS[row['status']]}]{row['status']}[/]"
        table.add_row(escape(row["name"]), escape(row["id"] or ""), status, escape(row["detail"] or ""))
    console().print(table)

"""The ``agendapy`` command: run a worker for an Agenda defined in your code."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import signal
import sys
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from .agenda import Agenda, RunDueResult
from .errors import AgendaError, UnknownJob

__all__ = ["load_agenda", "main", "run_worker"]

log = logging.getLogger("agendapy")
err_console = Console(stderr=True, soft_wrap=True)


def load_agenda(target: str) -> Agenda:
    """Import ``module:attribute`` (an Agenda, or a function returning one) from the current directory."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise click.BadParameter(
            f"{target!r}: expected MODULE:ATTRIBUTE, e.g. myapp.jobs:agenda", param_hint="TARGET"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.BadParameter(
                f"cannot import module {module_name!r}: {exc}", param_hint="TARGET"
            ) from None
        raise
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attribute!r}", param_hint="TARGET"
            ) from None
    if not isinstance(obj, Agenda) and callable(obj):
        obj = obj()
        if inspect.isawaitable(obj):
            obj = asyncio.run(_await(obj))
    if not isinstance(obj, Agenda):
        raise click.BadParameter(
            f"{target!r} is {type(obj).__name__}, not an agendapy.Agenda", param_hint="TARGET"
        )
    return obj


async def _await(value: Any) -> Any:
    return await value


async def run_worker(agenda: Agenda, *, grace: float = 8.0) -> None:
    """Run until SIGTERM/SIGINT, then stop gracefully within ``grace`` seconds (a second signal: at once)."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.warning(
                "received %s: stopping (up to %g s for running jobs; signal again to stop at once)",
                signal.Signals(signum).name,
                grace,
            )
            stop_requested.set()
        else:
            log.warning("received %s again: stopping now", signal.Signals(signum).name)
            agenda.hurry_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await agenda.start()
        names = ", ".join(agenda.definitions) or "(none defined)"
        log.info("worker %s started; runs: %s", agenda.name or "(unnamed)", names)
        await stop_requested.wait()
        await agenda.stop(grace=grace)
    finally:
        await agenda.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("worker stopped")


def _configure_logging(level: str, json_logs: bool) -> None:
    if json_logs:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter('{"time":"%(asctime)s","level":"%(levelname)s","msg":%(message)r}')
        )
    else:
        handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=True)
    logging.basicConfig(level=level.upper(), handlers=[handler], format="%(message)s", force=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agendapy")
def main() -> None:
    """agendapy: persistent job scheduling on MongoDB."""


@main.command()
@click.argument("target")
@click.option(
    "--mongo-url",
    envvar="AGENDAPY_MONGO_URL",
    help="MongoDB URL (default: $AGENDAPY_MONGO_URL, else the Agenda's own, else the embedded database).",
)
@click.option("--name", default=None, help="Worker name written to lastModifiedBy.")
@click.option(
    "--grace", default=8.0, show_default=True, type=float, help="Seconds running jobs get on SIGTERM."
)
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.option("--json-logs", is_flag=True, help="Log JSON lines instead of rich text.")
def worker(
    target: str, mongo_url: str | None, name: str | None, grace: float, log_level: str, json_logs: bool
) -> None:
    """Run the jobs defined by TARGET (MODULE:ATTRIBUTE, an Agenda) until SIGTERM/SIGINT."""
    _configure_logging(log_level, json_logs)
    agenda = load_agenda(target)
    try:
        if mongo_url:
            agenda.set_database(mongo_url)
        if name:
            agenda.name = name
        asyncio.run(run_worker(agenda, grace=grace))
    except ValueError as exc:
        err_console.print(f"[red]invalid input:[/red] {exc}", markup=True, highlight=False)
        sys.exit(2)
    except AgendaError as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        sys.exit(1)


@main.command("run-due")
@click.argument("target")
@click.argument("names", nargs=-1)
@click.option(
    "--mongo-url",
    envvar="AGENDAPY_MONGO_URL",
    help="MongoDB URL (default: $AGENDAPY_MONGO_URL, else the Agenda's own, else the embedded database).",
)
@click.option("--name", default=None, help="Worker name written to lastModifiedBy.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--log-level", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
def run_due(
    target: str,
    names: tuple[str, ...],
    mongo_url: str | None,
    name: str | None,
    as_json: bool,
    log_level: str,
) -> None:
    """Run the jobs of TARGET that are due now (all defined names, or NAMES), wait, and exit:
    0 when every run succeeded, 1 when any failed. For crontab, Kubernetes CronJobs and serverless."""
    _configure_logging(log_level, json_logs=as_json)
    agenda = load_agenda(target)
    try:
        if mongo_url:
            agenda.set_database(mongo_url)
        if name:
            agenda.name = name
        result = asyncio.run(_run_due(agenda, list(names) or None))
    except ValueError as exc:
        err_console.print(f"[red]invalid input:[/red] {exc}", markup=True, highlight=False)
        sys.exit(2)
    except AgendaError as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        sys.exit(2 if isinstance(exc, UnknownJob) else 1)
    _print_run_due(result, as_json)
    sys.exit(0 if result.ok else 1)


async def _run_due(agenda: Agenda, names: list[str] | None) -> RunDueResult:
    try:
        return await agenda.run_due(names)
    finally:
        await agenda.close()


def _print_run_due(result: RunDueResult, as_json: bool) -> None:
    rows: list[dict[str, Any]] = []
    for status, jobs in (
        ("succeeded", result.succeeded),
        ("skipped", result.skipped),
        ("waiting", result.waiting),
    ):
        for job in jobs:
            detail = job.waiting_reason if status == "waiting" else None
            rows.append({"name": job.name, "id": job.id, "status": status, "detail": detail})
    for job, error in result.failed:
        rows.append(
            {"name": job.name, "id": job.id, "status": "failed", "detail": job.fail_reason or str(error)}
        )
    if as_json:
        click.echo(json.dumps({"ok": result.ok, "runs": rows}))
        return
    console = Console()
    if not rows:
        console.print("nothing was due")
        return
    table = Table(title="run-due")
    for column in ("name", "id", "status", "detail"):
        table.add_column(column)
    colours = {"succeeded": "green", "failed": "red", "skipped": "yellow", "waiting": "cyan"}
    for row in rows:
        status = f"[{colours[row['status']]}]{row['status']}[/]"
        table.add_row(row["name"], row["id"] or "", status, row["detail"] or "")
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    main()

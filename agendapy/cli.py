"""The ``agendapy`` command: run workers, look at and change jobs, serve the dashboard.

Exit status: 0 on success, 2 for bad input (a bad TARGET, JSON, interval or date, an unknown job id,
criteria that match no job), 1 for anything else (a database that cannot be reached, a failed run in
``run-due``, a missing optional extra).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import importlib
import inspect
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pymongo.errors import PyMongoError

from . import cli_output as out
from .agenda import Agenda, RunDueResult
from .errors import AgendaError, UnknownJob
from .handler import handler_threads_running
from .job import Job, JobState
from .log_config import LEVELS, bind_job_context, configure_logging
from .store.runs import RunRecord
from .workers import WorkerInfo

if TYPE_CHECKING:
    from .metrics import MetricsServer

__all__ = ["load_agenda", "main", "run_worker"]

log = logging.getLogger("agendapy")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2

#: ``lastModifiedBy`` of the changes made by the CLI without a TARGET.
CLI_NAME = "agendapy-cli"


class CliError(click.ClickException):
    """An error reported in one line on stderr; exit status 1."""

    def show(self, file: Any = None) -> None:
        out.error(self.format_message())


class BadInput(CliError):
    """Bad input reported in one line on stderr; exit status 2."""

    exit_code = EXIT_BAD_INPUT


# -- loading an Agenda -----------------------------------------------------------------------------------


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
        raise BadInput(f"cannot import TARGET {target!r}: {_one_line(exc)}") from None
    except SyntaxError as exc:
        where = f" ({exc.filename}, line {exc.lineno})" if exc.filename else ""
        raise BadInput(f"cannot import TARGET {target!r}: {type(exc).__name__}: {exc.msg}{where}") from None
    except Exception as exc:
        # The application's own code failed while importing: one line that names it, not a traceback
        # through importlib (run `python -c "import MODULE"` to see the whole story).
        raise BadInput(f"cannot import TARGET {target!r}: {_one_line(exc)}") from None
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attribute!r}", param_hint="TARGET"
            ) from None
    if not isinstance(obj, Agenda) and callable(obj):
        try:
            obj = obj()
            if inspect.isawaitable(obj):
                obj = asyncio.run(_await(obj))
        except Exception as exc:
            raise BadInput(f"TARGET {target!r} raised while building the Agenda: {_one_line(exc)}") from None
    if not isinstance(obj, Agenda):
        raise click.BadParameter(
            f"{target!r} is {type(obj).__name__}, not an agendapy.Agenda", param_hint="TARGET"
        )
    return obj


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the first line of the message)."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


async def _await(value: Any) -> Any:
    return await value


@dataclass(frozen=True)
class Source:
    """Where a command finds its Agenda: TARGET's, or a bare one on ``mongo_url`` and ``collection``."""

    target: str | None = None
    mongo_url: str | None = None
    collection: str | None = None
    #: A worker name for ``lastModifiedBy`` (default: TARGET's own, or "agendapy-cli").
    name: str | None = None

    def open(self, *, indexes: bool = False) -> Agenda:
        """Load TARGET (pointed at ``mongo_url`` if given) or build a bare Agenda (no handlers) that
        creates the indexes only when ``indexes`` is set."""
        if not self.target:
            return Agenda(
                self.mongo_url or None,
                collection=self.collection or "agendaJobs",
                name=self.name or CLI_NAME,
                ensure_index=indexes,
            )
        if self.collection:
            raise click.BadParameter(
                "applies only without --target (TARGET's Agenda names its own collection)",
                param_hint="--collection",
            )
        agenda = load_agenda(self.target)
        if self.mongo_url:
            agenda.set_database(self.mongo_url)
        if self.name:
            agenda.name = self.name
        return agenda


def _guard(call: Callable[[], T]) -> T:
    """Run ``call`` and turn agendapy's and the driver's errors into one-line errors and exit statuses."""
    try:
        return call()
    except (click.ClickException, click.Abort):
        raise
    except UnknownJob as exc:
        raise BadInput(str(exc)) from None
    except ValueError as exc:
        raise BadInput(f"invalid input: {exc}") from None
    except (AgendaError, PyMongoError) as exc:
        raise CliError(_brief(str(exc))) from None


def _brief(text: str) -> str:
    for marker in (" (configured timeouts", ", Timeout:"):
        text = text.split(marker, 1)[0]
    return text


def _with_agenda(source: Source, work: Callable[[Agenda], Awaitable[T]], *, indexes: bool = False) -> T:
    """Open the Agenda, run ``work`` on it in a fresh event loop, close it."""

    async def body(agenda: Agenda) -> T:
        try:
            return await work(agenda)
        finally:
            await agenda.close()

    return _guard(lambda: asyncio.run(body(source.open(indexes=indexes))))


# -- shared options ------------------------------------------------------------------------------------------


def mongo_url_option(fn: F) -> F:
    """``--mongo-url`` (env ``AGENDAPY_MONGO_URL``)."""
    return click.option(
        "--mongo-url",
        envvar="AGENDAPY_MONGO_URL",
        metavar="URL",
        help="MongoDB URL (default: $AGENDAPY_MONGO_URL, else TARGET's own, else the embedded database).",
    )(fn)


def json_option(fn: F) -> F:
    """``--json``: print the result as one JSON document."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(fn)


def database_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--target``, ``--mongo-url`` and ``--collection``, handed to the command as ``source``."""

    @mongo_url_option
    @click.option(
        "--collection",
        metavar="NAME",
        help="The jobs collection when there is no --target (default: agendaJobs).",
    )
    @click.option(
        "--target",
        "-t",
        metavar="MODULE:ATTR",
        help="Your Agenda (its database, collection and definitions); optional here.",
    )
    @functools.wraps(fn)
    def wrapper(
        *args: Any, target: str | None, mongo_url: str | None, collection: str | None, **kwargs: Any
    ) -> Any:
        return fn(*args, source=Source(target, mongo_url, collection), **kwargs)

    return wrapper


def _criteria_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--data",
        "data_json",
        metavar="JSON",
        help="Only jobs whose data match (an object matches by its fields).",
    )(fn)
    fn = click.option("--name", "names", multiple=True, help="Jobs of this name (repeatable).")(fn)
    return click.option("--id", "ids", multiple=True, help="The job with this id (repeatable).")(fn)


def _parse_json(text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"invalid value for {option}: not valid JSON ({exc})") from None
    except RecursionError:
        raise BadInput(f"invalid value for {option}: JSON nested too deeply to read") from None


def _criteria(ids: tuple[str, ...], names: tuple[str, ...], data_json: str | None) -> dict[str, Any]:
    criteria: dict[str, Any] = {}
    if ids:
        criteria["ids"] = list(ids)
    if names:
        criteria["names"] = list(names)
    if data_json is not None:
        criteria["data"] = _parse_json(data_json, "--data")
    if not criteria:
        raise click.UsageError("say which jobs: --id, --name or --data")
    return criteria


def _describe(criteria: dict[str, Any]) -> str:
    parts = [f"{key}={json.dumps(value, default=str)}" for key, value in criteria.items()]
    return ", ".join(parts)


# -- the command group ---------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agendapy")
def main() -> None:
    """agendapy: persistent job scheduling on MongoDB.

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
    --mongo-url (env AGENDAPY_MONGO_URL) and --collection alone. Every command that prints data
    takes --json. Exit status: 0 ok, 1 error (e.g. the database cannot be reached), 2 bad input.
    """


# -- worker and run-due ------------------------------------------------------------------------------------


#: Seconds of a worker's grace period kept for unlocking its jobs and closing the connection.
_EXIT_RESERVE = 1.5
#: The last part of that reserve, left for the interpreter to exit after the connection was closed or
#: given up on (cancelling what is left, joining threads): 0.2-0.5 s on a busy machine.
_EXIT_MARGIN = 0.75
_MIN_CLOSE_TIME = 0.2


async def run_worker(agenda: Agenda, *, grace: float = 8.0) -> None:
    """Run until SIGTERM/SIGINT, then stop gracefully within ``grace`` seconds (a second signal: at once)."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals_seen = 0
    # What the stop may take in all: running jobs get the grace period less a reserve for unlocking
    # them and closing the connection, each bounded, so the process exits within the grace period
    # even when the database does not answer (the platform kills soon after it).
    reserve = min(_EXIT_RESERVE, grace / 2)
    margin = min(_EXIT_MARGIN, grace / 4)
    deadline: float | None = None  # set by the first signal: when closing the connection is given up

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.warning(
                "received %s: stopping (up to %g s for running jobs; signal again to stop at once)",
                signal.Signals(signum).name,
                grace,
            )
            nonlocal deadline
            deadline = loop.time() + grace - margin
            stop_requested.set()
        else:
            log.warning("received %s again: stopping now", signal.Signals(signum).name)
            agenda.hurry_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        if await _start_unless_stopped(agenda, stop_requested):
            names = ", ".join(agenda.definitions) or "(none defined)"
            log.info("worker %s started; runs: %s", agenda.name or "(unnamed)", names)
        await stop_requested.wait()
        await agenda.stop(grace=max(grace - reserve, 0.0))
    finally:
        try:
            left = grace - margin if deadline is None else deadline - loop.time()
            await asyncio.wait_for(agenda.close(), max(left, _MIN_CLOSE_TIME))
        except TimeoutError:
            log.warning("the database did not answer while closing the connection; exiting without it")
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("worker stopped")


async def _start_unless_stopped(agenda: Agenda, stop_requested: asyncio.Event) -> bool:
    """Start ``agenda``; a stop requested meanwhile ends the start at once (returns False) rather than
    after its first claim pass, which a database that does not answer can hold up for seconds."""
    starting = asyncio.ensure_future(agenda.start())
    stopping = asyncio.ensure_future(stop_requested.wait())
    try:
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        starting.cancel()
        raise
    finally:
        stopping.cancel()
    if starting.done():
        starting.result()
        return True
    # Still connecting or in its first pass: the loops it started (if any) end with the stop.
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    return False


def _level_option(default: str) -> Callable[[F], F]:
    return click.option(
        "--log-level",
        default=default,
        show_default=True,
        type=click.Choice(LEVELS, case_sensitive=False),
        help="Log level.",
    )


@main.command()
@click.argument("target")
@mongo_url_option
@click.option("--name", default=None, help="Worker name written to lastModifiedBy.")
@click.option(
    "--grace", default=8.0, show_default=True, type=float, help="Seconds running jobs get on SIGTERM."
)
@_level_option("INFO")
@click.option(
    "--json-logs", is_flag=True, help="Log JSON lines (with job_id and job_name) instead of rich text."
)
@click.option(
    "--metrics-port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar="AGENDAPY_METRICS_PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: off; needs agendapy[metrics]).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    envvar="AGENDAPY_METRICS_HOST",
    help="Address of the metrics server (it has no authentication; 0.0.0.0 exposes it to the network).",
)
def worker(
    target: str,
    mongo_url: str | None,
    name: str | None,
    grace: float,
    log_level: str,
    json_logs: bool,
    metrics_port: int,
    metrics_host: str,
) -> None:
    """Run the jobs defined by TARGET (MODULE:ATTRIBUTE, an Agenda) until SIGTERM/SIGINT."""
    configure_logging(log_level, json=json_logs)

    async def work(agenda: Agenda) -> None:
        bind_job_context(agenda)
        server = _serve_metrics(agenda, metrics_host, metrics_port) if metrics_port else None
        try:
            await run_worker(agenda, grace=grace)
        finally:
            if server is not None:
                server.close()
        busy = handler_threads_running()
        if busy:
            # Threads cannot be cancelled, and the interpreter would wait for them at exit. Their jobs
            # stay locked and come back when the locks expire; leave now, as the platform would.
            log.warning("%d handler thread(s) ignored the stop request; exiting without them", busy)
            logging.shutdown()
            os._exit(0)

    _with_agenda(Source(target, mongo_url, name=name), work)


def _serve_metrics(agenda: Agenda, host: str, port: int) -> MetricsServer:
    try:
        from .metrics import serve_metrics

        server = serve_metrics(agenda, port, addr=host)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {host}:{port}: {exc}") from None
    log.info("metrics at http://%s:%d/metrics", host, server.port)
    return server


@main.command("run-due")
@click.argument("target")
@click.argument("names", nargs=-1)
@mongo_url_option
@click.option("--name", default=None, help="Worker name written to lastModifiedBy.")
@json_option
@_level_option("WARNING")
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
    configure_logging(log_level, json=as_json)

    async def work(agenda: Agenda) -> RunDueResult:
        return await agenda.run_due(list(names) or None)

    result = _with_agenda(Source(target, mongo_url, name=name), work)
    out.print_run_due(result, as_json)
    sys.exit(0 if result.ok else EXIT_ERROR)


# -- jobs ------------------------------------------------------------------------------------------------


@main.group()
def jobs() -> None:
    """List, inspect and change jobs."""


@jobs.command("ls")
@database_options
@click.option("--name", "names", multiple=True, help="Only jobs of this name (repeatable).")
@click.option(
    "--state",
    type=click.Choice([s.value for s in JobState], case_sensitive=False),
    help="Only jobs in this computed state.",
)
@click.option("--search", metavar="TEXT", help="Only names containing TEXT (case-insensitive).")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(0), help="At most this many (0: all)."
)
@click.option("--skip", default=0, show_default=True, type=click.IntRange(0), help="Skip this many first.")
@json_option
def jobs_ls(
    source: Source,
    names: tuple[str, ...],
    state: str | None,
    search: str | None,
    limit: int,
    skip: int,
    as_json: bool,
) -> None:
    """List jobs, most recent next run first: id, name, state, next and last run, fails, lock."""

    async def work(agenda: Agenda) -> Any:
        return await agenda.query_jobs(
            names=list(names) or None, state=state, search=search, skip=skip, limit=limit
        )

    result = _with_agenda(source, work)
    if as_json:
        jobs = [out.job_json(job) for job in result.jobs]
        out.print_json({"total": result.total, "skip": skip, "limit": limit, "jobs": jobs})
        return
    out.print_jobs(result.jobs, total=result.total, skip=skip)


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@database_options
@click.option(
    "--runs", "runs_limit", default=10, show_default=True, type=click.IntRange(0), help="Recent runs to show."
)
@json_option
def jobs_show(source: Source, job_id: str, runs_limit: int, as_json: bool) -> None:
    """Show one job: every field, its data as JSON and its recent runs."""

    async def work(agenda: Agenda) -> tuple[Job, list[RunRecord]]:
        job = await _get_job(agenda, job_id)
        runs: list[RunRecord] = []
        if runs_limit:
            records = await agenda.runs(job.name, limit=max(100, runs_limit * 10))
            runs = [run for run in records if run.job_id == job.id][:runs_limit]
        return job, runs

    job, runs = _with_agenda(source, work)
    if as_json:
        out.print_json({"job": out.job_json(job), "runs": [out.run_json(run) for run in runs]})
        return
    out.print_job(job, runs)


async def _get_job(agenda: Agenda, job_id: str) -> Job:
    job = await agenda.get_job(job_id)
    if job is None:
        raise BadInput(f"no job with id {job_id!r}")
    return job


async def _count_matching(agenda: Agenda, criteria: dict[str, Any]) -> int:
    result = await agenda.query_jobs(**criteria, limit=1)
    if result.total == 0:
        raise BadInput(f"no job matches {_describe(criteria)}")
    return result.total


async def _confirm(question: str) -> None:
    await asyncio.to_thread(click.confirm, question, abort=True, err=True)


@jobs.command("cancel")
@database_options
@_criteria_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def jobs_cancel(
    source: Source,
    ids: tuple[str, ...],
    names: tuple[str, ...],
    data_json: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete the jobs matching --id, --name and --data (all given criteria must match)."""
    criteria = _criteria(ids, names, data_json)

    async def work(agenda: Agenda) -> int:
        matching = await _count_matching(agenda, criteria)
        if not yes:
            await _confirm(f"Delete {matching} job(s) matching {_describe(criteria)}?")
        return await agenda.cancel(**criteria)

    cancelled = _with_agenda(source, work)
    if as_json:
        out.print_json({"cancelled": cancelled})
    else:
        out.say(f"cancelled {cancelled} job(s)")


@jobs.command("retry")
@click.argument("job_id", metavar="ID")
@database_options
@json_option
def jobs_retry(source: Source, job_id: str, as_json: bool) -> None:
    """Make job ID (usually a failed one) due now, changing nothing else: job.schedule("now").save()."""

    async def work(agenda: Agenda) -> Job:
        job = await _get_job(agenda, job_id)
        job.schedule("now")
        if job.next_run_at is None:
            raise BadInput(f"job {job_id} cannot run again: its end date has passed")
        if job.locked_at is not None:
            out.warn(
                f"job {job_id} is locked (running, or its worker died); the run in progress may reschedule it"
            )
        if job.disabled:
            out.warn(f"job {job_id} is paused: it runs once resumed (agendapy jobs resume --id {job_id})")
        return await job.save()

    job = _with_agenda(source, work)
    if as_json:
        out.print_json(out.job_json(job))
        return
    failure = f" (failed {job.fail_count} time(s): {job.fail_reason})" if job.fail_count else ""
    out.say(f"job {job.id} ({job.name}) is due now{failure}")


def _toggle(source: Source, criteria: dict[str, Any], *, pause: bool, as_json: bool) -> None:
    async def work(agenda: Agenda) -> tuple[int, int]:
        matching = await _count_matching(agenda, criteria)
        changed = await (agenda.disable(**criteria) if pause else agenda.enable(**criteria))
        return matching, changed

    matching, changed = _with_agenda(source, work)
    verb = "paused" if pause else "resumed"
    if as_json:
        out.print_json({"matched": matching, verb: changed})
        return
    already = f" ({matching - changed} already {verb})" if matching != changed else ""
    out.say(f"{verb} {changed} job(s){already}")


@jobs.command("pause")
@database_options
@_criteria_options
@json_option
def jobs_pause(
    source: Source, ids: tuple[str, ...], names: tuple[str, ...], data_json: str | None, as_json: bool
) -> None:
    """Disable the matching jobs: no worker locks them until they are resumed."""
    _toggle(source, _criteria(ids, names, data_json), pause=True, as_json=as_json)


@jobs.command("resume")
@database_options
@_criteria_options
@json_option
def jobs_resume(
    source: Source, ids: tuple[str, ...], names: tuple[str, ...], data_json: str | None, as_json: bool
) -> None:
    """Enable the matching jobs again."""
    _toggle(source, _criteria(ids, names, data_json), pause=False, as_json=as_json)


@jobs.command("purge")
@click.argument("target")
@mongo_url_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def jobs_purge(target: str, mongo_url: str | None, yes: bool, as_json: bool) -> None:
    """Delete every job whose name TARGET does not define (agenda.purge())."""

    async def work(agenda: Agenda) -> int:
        defined = set(agenda.definitions)
        if not defined:
            out.warn(f"{target} defines no job names: nothing is purged")
            return 0
        doomed = [entry for entry in await agenda.jobs_overview() if entry["name"] not in defined]
        if not doomed:
            return 0
        if not yes:
            listing = ", ".join(f"{entry['name']} ({entry['total']})" for entry in doomed)
            total = sum(int(entry["total"]) for entry in doomed)
            await _confirm(f"Delete {total} job(s) of names {target} does not define: {listing}?")
        return await agenda.purge()

    purged = _with_agenda(Source(target, mongo_url), work)
    if as_json:
        out.print_json({"purged": purged})
    else:
        out.say(f"purged {purged} job(s)")


# -- schedule, stats, dashboard --------------------------------------------------------------------------


@main.command()
@click.argument("name")
@click.argument("when", required=False)
@click.option("--data", "data_json", metavar="JSON", help="The job's data, as JSON.")
@click.option(
    "--every",
    "interval",
    metavar="INTERVAL",
    help='Repeat: "5 minutes", "PT15M", a cron expression; WHEN is then the earliest first run.',
)
@click.option(
    "--timezone", metavar="TZ", help="IANA timezone of a --every schedule (cron), e.g. Europe/Paris."
)
@database_options
@json_option
def schedule(
    source: Source,
    name: str,
    when: str | None,
    data_json: str | None,
    interval: str | None,
    timezone: str | None,
    as_json: bool,
) -> None:
    """Create job NAME: due WHEN ("now", "in 20 minutes", "2030-01-01 09:00"; UTC unless it says)
    or, with --every, recurring (one document per NAME: a new schedule replaces the old one)."""
    data = _parse_json(data_json, "--data")
    if interval is None:
        if when is None:
            raise click.UsageError("give WHEN (now, a date, 'in 20 minutes') or --every INTERVAL")
        if timezone is not None:
            raise click.BadParameter("applies to --every schedules only", param_hint="--timezone")

    async def work(agenda: Agenda) -> Job:
        if source.target and name not in agenda.definitions:
            out.warn(f"{source.target} does not define {name!r}: it runs when a worker that defines it is up")
        if interval is not None:
            start = None if when is None or when.strip().lower() == "now" else when
            job: Job = await agenda.every(interval, name, data, timezone=timezone, start_date=start)
            return job
        assert when is not None
        scheduled: Job = await agenda.schedule(when, name, data)
        return scheduled

    job = _with_agenda(source, work, indexes=True)
    if as_json:
        out.print_json(out.job_json(job))
        return
    repeat = f", every {job.repeat_interval}" if job.repeat_interval else ""
    zone = f" ({job.repeat_timezone})" if job.repeat_timezone else ""
    next_run = out.ago(job.next_run_at, datetime.now(UTC))
    out.say(f"scheduled {job.name} ({job.id}): next run {next_run}{repeat}{zone}")


@main.command()
@database_options
@json_option
def stats(source: Source, as_json: bool) -> None:
    """Jobs per name and state (from the database, over every worker) and how many are due now.

    Each worker's own running and locked counts live in its memory: see `worker --metrics-port`.
    """

    async def work(agenda: Agenda) -> tuple[list[dict[str, Any]], int, list[str] | None]:
        overview = await agenda.jobs_overview()
        due = await agenda.store.queue_size(datetime.now(UTC))
        defined = sorted(agenda.definitions) if source.target else None
        known = {entry["name"] for entry in overview}
        for missing in sorted(set(defined or ()) - known):
            overview.append({"name": missing, **dict.fromkeys(out.OVERVIEW_COLUMNS, 0)})
        return overview, due, defined

    overview, due, defined = _with_agenda(source, work)
    if as_json:
        out.print_json({"overview": overview, "queue_size": due, "defined": defined})
        return
    out.print_stats(overview, due, defined)


@main.command()
@database_options
@click.option("--all", "include_stopped", is_flag=True, help="Include workers that stopped (last day).")
@json_option
def workers(source: Source, include_stopped: bool, as_json: bool) -> None:
    """Worker processes registered in the database: live ones, and lost ones (no heartbeat for three
    periods) with the jobs whose locks they still hold.
    """

    async def work(agenda: Agenda) -> list[WorkerInfo]:
        return await agenda.workers(include_stopped=include_stopped)

    found = _with_agenda(source, work)
    if as_json:
        out.print_json([worker.to_json() for worker in found])
        return
    out.print_workers(found, datetime.now(UTC))


@main.command()
@click.argument("target")
@mongo_url_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on."
)
@click.option(
    "--token",
    envvar="AGENDAPY_DASHBOARD_TOKEN",
    help="Require this bearer token, at least 16 characters (prefer env AGENDAPY_DASHBOARD_TOKEN or "
    "--token-file: a command line is visible to every local user).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    envvar="AGENDAPY_DASHBOARD_TOKEN_FILE",
    help="Read the token from this file (its first line).",
)
@click.option(
    "--basic-auth",
    metavar="USER:PASSWORD",
    envvar="AGENDAPY_DASHBOARD_BASIC_AUTH",
    help="Require HTTP basic auth (prefer env AGENDAPY_DASHBOARD_BASIC_AUTH or --basic-auth-file).",
)
@click.option(
    "--basic-auth-file",
    type=click.Path(dir_okay=False),
    envvar="AGENDAPY_DASHBOARD_BASIC_AUTH_FILE",
    help="Read USER:PASSWORD from this file (its first line).",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve without authentication (loopback addresses only). Default: a new token and a sign-in link.",
)
@click.option("--read-only", is_flag=True, help="Show jobs; refuse every change.")
@_level_option("INFO")
@click.pass_context
def dashboard(
    ctx: click.Context,
    target: str,
    mongo_url: str | None,
    host: str,
    port: int,
    token: str | None,
    token_file: str | None,
    basic_auth: str | None,
    basic_auth_file: str | None,
    no_auth: bool,
    read_only: bool,
    log_level: str,
) -> None:
    """Serve the web dashboard for TARGET's jobs (needs agendapy[dashboard]).

    Without --token or --basic-auth it makes a new token at each start and prints a sign-in link.
    """
    token = _secret(ctx, "token", token, token_file)
    basic_auth = _secret(ctx, "basic_auth", basic_auth, basic_auth_file)
    credentials: tuple[str, str] | None = None
    if basic_auth is not None:
        user, sep, password = basic_auth.partition(":")
        if not sep or not user or not password:
            raise click.BadParameter("expected USER:PASSWORD", param_hint="--basic-auth")
        credentials = (user, password)
    if no_auth and (token is not None or credentials is not None):
        raise BadInput("--no-auth contradicts --token / --basic-auth: choose one")
    try:
        module = importlib.import_module("agendapy.dashboard")
    except ImportError as exc:
        raise CliError(f"the dashboard needs its extra: pip install 'agendapy[dashboard]' ({exc})") from None
    configure_logging(log_level)
    _check_port_free(host, port)
    if token is None and credentials is None and not no_auth and module.is_loopback_host(host):
        # As Jupyter does: other local users reach a loopback port too, so it gets a token anyway, and
        # the person who started it a link that signs in (printed plainly, so no log format wraps it).
        token = secrets.token_urlsafe(32)
        shown = f"[{host}]" if ":" in host else host
        click.echo(
            "agendapy dashboard: a new token for this run (keep one with AGENDAPY_DASHBOARD_TOKEN_FILE); "
            f"sign in at http://{shown}:{port}/?token={token}",
            err=True,
        )

    async def serve(agenda: Agenda) -> None:
        served = module.serve(
            agenda,
            host=host,
            port=port,
            token=token,
            basic_auth=credentials,
            read_only=read_only,
            insecure_no_auth=no_auth,
        )
        if inspect.isawaitable(served):
            await served

    # uvicorn stops on SIGTERM/SIGINT and then raises the signal again for the handler it found:
    # make that one end the process with status 0, as a worker's graceful stop does.
    previous = {signum: signal.signal(signum, _exit_ok) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        _with_agenda(Source(target, mongo_url), serve)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _check_port_free(host: str, port: int) -> None:
    """Fail with a clear error when another process listens on ``host:port``, before a sign-in link is
    printed for it.

    Otherwise the user gets a link that leads to whatever holds the port (often a dashboard started
    earlier, which refuses the new token) and uvicorn's own exit status 3. Each address the host
    resolves to is tried as the server binds them (``SO_REUSEADDR``: only a listening socket is in the
    way); any other error is left for the server to report.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    continue
                shown = f"[{host}]" if ":" in host else host
                raise CliError(
                    f"cannot listen on {shown}:{port}: address already in use (is a dashboard already "
                    "running there?); choose another port with --port"
                ) from None


def _secret(ctx: click.Context, name: str, value: str | None, path: str | None) -> str | None:
    """A secret from its option, its environment variable or its file (first line); a secret typed on
    the command line works, with a warning, since ``ps`` shows it to every user of the machine."""
    option = "--" + name.replace("_", "-")
    if path is not None:
        if value is not None:
            raise BadInput(f"give {option} or {option}-file, not both")
        try:
            with open(path, encoding="utf-8") as file:
                value = file.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read {option}-file {path!r}: {exc}") from None
        if not value:
            raise BadInput(f"{option}-file {path!r} is empty")
        return value
    if value is not None and ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
        out.warn(
            f"{option} on the command line is visible to every user of this machine (ps); use "
            f"AGENDAPY_DASHBOARD_{name.upper()} or {option}-file"
        )
    return value


def _exit_ok(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":  # pragma: no cover
    main()

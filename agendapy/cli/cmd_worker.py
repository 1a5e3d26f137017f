"""``worker`` and ``run-due``: run TARGET's jobs; a worker's signal handling and its stop budget."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from ..agenda import Agenda, RunDueResult
from ..handler import handler_threads_running
from ..log_config import bind_job_context, configure_logging
from . import output as out
from .loading import EXIT_ERROR, CliError, Source, database_url_option, json_option, level_option, with_agenda

if TYPE_CHECKING:
    from ..metrics import MetricsServer

__all__ = ["run_due", "run_worker", "worker"]

log = logging.getLogger("agendapy")

#: Seconds of a worker's grace period kept for unlocking its jobs and closing the connection.
_EXIT_RESERVE = 1.5
#: The last part of that reserve, left for the interpreter to exit after the connection was closed or
#: given up on (cancelling what is left, joining threads): 0.2-0.5 s on a busy machine.
_EXIT_MARGIN = 0.75
_MIN_CLOSE_TIME = 0.2
#: Seconds past the grace period after which a worker process exits whatever it still waits for.
_HARD_EXIT_AFTER_GRACE = 0.5


def _arm_hard_exit(grace: float) -> None:
    """Exit the process ``grace`` + a moment after the stop signal, whatever is still waiting then.

    The stop's own steps are bounded, but a database that stops answering (a hung server, a dropped
    network path) can hold what comes after them: psycopg waits for the cancellation of a query
    interrupted by the stop (seconds per connection) when the event loop cancels the tasks still
    running at exit, and a pool or listening connection closes only after the server answers. The
    platform kills soon after the grace anyway; exiting first says why. What was not written (final
    states, unlocks) is left to lock expiry: those jobs come back to other workers.
    """

    def give_up() -> None:
        log.warning(
            "the stop did not finish within the grace period (the database does not answer); exiting "
            "now: jobs still locked by this worker come back when their locks expire"
        )
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        os._exit(0)

    timer = threading.Timer(grace + _HARD_EXIT_AFTER_GRACE, give_up)
    timer.daemon = True
    timer.start()


async def run_worker(
    agenda: Agenda, *, grace: float = 8.0, on_stop_signal: Callable[[float], None] | None = None
) -> None:
    """Run until SIGTERM/SIGINT, then stop gracefully within ``grace`` seconds (a second signal: at once).

    ``on_stop_signal(grace)`` is called at the first signal (the CLI arms its hard exit with it)."""
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
            if on_stop_signal is not None:
                on_stop_signal(grace)
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


@click.command()
@click.argument("target")
@database_url_option
@click.option("--name", default=None, help="Worker name written to lastModifiedBy.")
@click.option(
    "--grace", default=8.0, show_default=True, type=float, help="Seconds running jobs get on SIGTERM."
)
@level_option("INFO")
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
    database_url: str | None,
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
            await run_worker(agenda, grace=grace, on_stop_signal=_arm_hard_exit)
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

    with_agenda(Source(target, database_url, name=name), work)


def _serve_metrics(agenda: Agenda, host: str, port: int) -> MetricsServer:
    try:
        from ..metrics import serve_metrics

        server = serve_metrics(agenda, port, addr=host)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {host}:{port}: {exc}") from None
    log.info("metrics at http://%s:%d/metrics", host, server.port)
    return server


@click.command("run-due")
@click.argument("target")
@click.argument("names", nargs=-1)
@database_url_option
@click.option("--name", default=None, help="Worker name written to lastModifiedBy.")
@json_option
@level_option("WARNING")
def run_due(
    target: str,
    names: tuple[str, ...],
    database_url: str | None,
    name: str | None,
    as_json: bool,
    log_level: str,
) -> None:
    """Run the jobs of TARGET that are due now (all defined names, or NAMES), wait, and exit:
    0 when every run succeeded, 1 when any failed. For crontab, Kubernetes CronJobs and serverless."""
    configure_logging(log_level, json=as_json)

    async def work(agenda: Agenda) -> RunDueResult:
        return await agenda.run_due(list(names) or None)

    result = with_agenda(Source(target, database_url, name=name), work)
    out.print_run_due(result, as_json)
    sys.exit(0 if result.ok else EXIT_ERROR)

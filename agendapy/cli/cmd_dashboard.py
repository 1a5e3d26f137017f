"""``dashboard``: serve the web dashboard, with its secrets read from options, environment or files."""

from __future__ import annotations

import errno
import importlib
import inspect
import secrets
import signal
import socket

import click

from ..agenda import Agenda
from ..log_config import configure_logging
from . import output as out
from .loading import BadInput, CliError, Source, database_url_option, level_option, with_agenda

__all__ = ["dashboard"]


@click.command()
@click.argument("target")
@database_url_option
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
@level_option("INFO")
@click.pass_context
def dashboard(
    ctx: click.Context,
    target: str,
    database_url: str | None,
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
        with_agenda(Source(target, database_url), serve)
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

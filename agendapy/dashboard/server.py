"""``serve``: run the dashboard on its own with uvicorn (what ``agendapy dashboard`` calls)."""

from __future__ import annotations

import logging
import secrets
import socket
from typing import TYPE_CHECKING

import uvicorn

from ..errors import InvalidInput
from .app import create_app
from .context import Dashboard
from .security import is_loopback_host

if TYPE_CHECKING:
    from ..agenda import Agenda

__all__ = ["UnsafeBind", "check_bind", "serve"]

log = logging.getLogger("agendapy.dashboard")


class UnsafeBind(InvalidInput):
    """The dashboard would listen beyond loopback with no authentication."""


def check_bind(host: str, *, token: str | None, basic_auth: tuple[str, str] | None) -> None:
    """Refuse to listen on anything but a loopback address unless a token or basic auth is set."""
    if is_loopback_host(host) or token or basic_auth:
        return
    raise UnsafeBind(
        "host",
        host,
        "refusing to serve the dashboard beyond loopback without authentication: "
        "pass a token (--token / token=) or basic auth, or listen on 127.0.0.1",
    )


class _Server(uvicorn.Server):
    """Ends the dashboard's event streams first, so stopping never waits for open pages."""

    def __init__(self, config: uvicorn.Config, dashboard: Dashboard) -> None:
        super().__init__(config)
        self._dashboard = dashboard

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._dashboard.live.close()
        await super().shutdown(sockets)


async def serve(
    agenda: Agenda,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    read_only: bool = False,
    insecure_no_auth: bool = False,
) -> None:
    """Serve the dashboard until SIGINT/SIGTERM. Listening beyond loopback needs a token or basic auth.

    Without either (and without ``insecure_no_auth=True``, which loopback addresses alone accept) a
    random token is made and a sign-in link that carries it is logged, as Jupyter does. The Agenda is
    connected first (so a wrong database URL fails at once) and left open: its owner closes it.
    """
    check_bind(host, token=token, basic_auth=basic_auth)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidInput("port", port, "must be a port number from 0 to 65535")
    generated = token is None and basic_auth is None and not insecure_no_auth
    if generated:
        token = secrets.token_urlsafe(32)
    app = create_app(
        agenda, token=token, basic_auth=basic_auth, read_only=read_only, insecure_no_auth=insecure_no_auth
    )
    await agenda.connect()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_config=None,  # the caller's logging (the CLI's) stays in charge
        access_log=False,  # a ?token= sign-in link must not end up in a log
        timeout_graceful_shutdown=3,
        server_header=False,
    )
    server = _Server(config, app.state.dashboard)
    auth = "token" if token else "basic auth" if basic_auth else "NO AUTHENTICATION (loopback only)"
    address = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    log.info("agendapy dashboard on %s (%s%s)", address, auth, ", read-only" if read_only else "")
    if generated:
        log.warning(
            "no token given: sign in with this link (the token is new at each start): %s?token=%s",
            address,
            token,
        )
    await server.serve()

"""``create_app``: the dashboard as a Starlette application, mountable in any ASGI app."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, Undefined, select_autoescape
from pymongo.errors import ConnectionFailure
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..errors import DatabaseUnavailable, InvalidInput
from .api import api_routes
from .context import Dashboard
from .live import LiveFeed
from .pages import login_page, page_routes, render
from .security import DEFAULT_SESSION_MAX_AGE, SecurityMiddleware, SecurityPolicy, route_path
from .views import SafeJSONResponse

if TYPE_CHECKING:
    from ..agenda import Agenda

__all__ = ["create_app"]

HERE = Path(__file__).parent


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        # Every value is escaped, whatever the template's name: data from the database is never markup.
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["segment"] = lambda value: quote(str(value), safe="")
    env.filters["show"] = show
    env.filters["seconds"] = seconds
    return Jinja2Templates(env=env)


def show(value: Any) -> str:
    """A field value as text, the way app.js shows it: "—" when empty, JSON for lists and documents."""
    if value is None or value == "" or isinstance(value, Undefined):
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def seconds(value: Any) -> str:
    """A duration in seconds (app.js writes it more humanly)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    return f"{value:.2f} s"


def _static_version() -> str:
    """A hash of the static files, appended to their URLs so browsers never run a stale script."""
    digest = hashlib.sha256()
    for path in sorted((HERE / "static").iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _error_response(request: Request, status: int, message: str) -> Response:
    if route_path(request.scope).startswith("/api/"):
        return SafeJSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", "error", status_code=status, status=status, message=message)


async def _invalid_input(request: Request, exc: Exception) -> Response:
    return _error_response(request, 400, str(exc))


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    # The store names the server (without a password); the page says what happens next.
    detail = str(exc).split("\n", 1)[0]
    response = _error_response(
        request,
        503,
        f"Database unavailable: {detail}. The dashboard works again as soon as the database is back.",
    )
    response.headers["Retry-After"] = "5"
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_response(request, exc.status_code, str(exc.detail))


def create_app(
    agenda: Agenda,
    *,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    read_only: bool = False,
    title: str = "agendapy",
    allowed_hosts: Sequence[str] | None = None,
    live_interval: float = 2.0,
    insecure_no_auth: bool = False,
    session_max_age: float = DEFAULT_SESSION_MAX_AGE,
) -> Starlette:
    """The dashboard of ``agenda``'s jobs collection as an ASGI app.

    Mount it anywhere (``app.mount("/jobs", create_app(agenda, token=...))``); the Agenda connects on the
    first request and need not be started (when it is, the pages also show this process's worker).
    A token or basic auth is required unless ``insecure_no_auth=True`` says otherwise.

    Args:
        agenda: the Agenda whose collection is shown.
        token: require ``Authorization: Bearer <token>`` (or a session from ``?token=`` / the sign-in form);
            at least 16 characters.
        basic_auth: require HTTP basic auth with this ``(user, password)`` (a password of at least 12
            characters); either credential is enough when both are configured.
        read_only: hide every action and refuse every change (403).
        title: shown in the header and the window title.
        allowed_hosts: host names the app answers to. Default: any when authentication is configured,
            else loopback names only (so a DNS-rebinding page cannot reach an open dashboard); pass your
            domain, or ``["*"]``, when your own application authenticates in front of the dashboard.
        live_interval: seconds between two reads of the overview for live updates.
        insecure_no_auth: serve without a token or basic auth, because something in front of the
            dashboard authenticates every request (or for a development server on loopback). Logged as a
            warning; without ``allowed_hosts`` it still answers loopback host names only.
        session_max_age: seconds a sign-in lasts (default 12 hours).
    """
    policy = SecurityPolicy.build(
        token=token,
        basic_auth=basic_auth,
        read_only=read_only,
        allowed_hosts=allowed_hosts,
        insecure_no_auth=insecure_no_auth,
        session_max_age=session_max_age,
    )
    if isinstance(live_interval, bool) or not isinstance(live_interval, int | float) or live_interval <= 0:
        raise InvalidInput("live_interval", live_interval, "must be a positive number of seconds")
    dashboard = Dashboard(
        agenda=agenda,
        policy=policy,
        title=str(title),
        live=LiveFeed(agenda, float(live_interval)),
        templates=_templates(),
        static_version=_static_version(),
    )
    app = Starlette(
        routes=[
            *page_routes(),
            *api_routes(),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(SecurityMiddleware, policy=policy, unauthorized_page=login_page)],
        exception_handlers={
            InvalidInput: _invalid_input,
            HTTPException: _http_error,
            DatabaseUnavailable: _database_unavailable,
            ConnectionFailure: _database_unavailable,
        },
    )
    app.state.dashboard = dashboard
    return app

"""The HTML pages: rendered on the server (Jinja2, autoescaped), kept current by ``static/app.js``."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from . import views
from .api import job_payload, list_params
from .context import dashboard_of
from .security import SESSION_COOKIE, client_address, cookie_header

__all__ = ["login_page", "page_routes", "render"]


def render(request: Request, template: str, page: str, status_code: int = 200, **context: Any) -> Response:
    """A page with what every template needs (base path, CSRF token, read-only flag, title)."""
    dash = dashboard_of(request)
    state = request.scope.get("state", {})
    return dash.templates.TemplateResponse(
        request,
        template,
        {
            "page": page,
            "title": dash.title,
            "base": request.scope.get("root_path", ""),
            "csrf_token": state.get("csrf_token", ""),
            "signed_in": state.get("auth_method") in ("cookie", "query"),
            "read_only": dash.policy.read_only,
            "token_auth": dash.policy.token is not None,
            "live_interval": dash.live.interval,
            "static_version": dash.static_version,
            **context,
        },
        status_code=status_code,
    )


async def _known_names(request: Request) -> list[str]:
    """The names this dashboard's Agenda defines and the names seen in the collection."""
    agenda = dashboard_of(request).agenda
    # A document without a readable name is counted under "", which is no name to offer.
    names = {row["name"] for row in (await views.overview(agenda))["names"] if row["name"]}
    return sorted(names | set(agenda.definitions))


async def overview_page(request: Request) -> Response:
    """``/``: counts per job name and state."""
    agenda = dashboard_of(request).agenda
    return render(
        request,
        "overview.html",
        "overview",
        overview=await views.overview(agenda),
        process=await views.process_stats(agenda),
        charts=views.activity_charts(await agenda.activity(60)),
        states=views.OVERVIEW_STATES,
    )


async def jobs_page(request: Request) -> Response:
    """``/jobs``: the filtered, paged job list."""
    params = list_params(request)
    listing = await views.list_jobs(dashboard_of(request).agenda, now=datetime.now(UTC), **params)

    def page_link(page: int) -> str | None:
        if not 1 <= page <= listing["pages"]:
            return None
        query = {key: params[key] for key in ("name", "state", "search") if params[key]}
        if params["limit"] != views.DEFAULT_PAGE_SIZE:
            query["limit"] = params["limit"]
        return "?" + urlencode({**query, "page": page})

    return render(
        request,
        "jobs.html",
        "jobs",
        listing=listing,
        pager={"prev": page_link(params["page"] - 1), "next": page_link(params["page"] + 1)},
        names=await _known_names(request),
        states=views.FILTER_STATES,
    )


async def job_page(request: Request) -> Response:
    """``/jobs/{id}``: every field of one job, its data, and its name's recent runs."""
    payload = await job_payload(request, request.path_params["job_id"])
    return render(request, "job.html", "job", **payload)


async def workers_page(request: Request) -> Response:
    """``/workers``: which worker holds which locks."""
    listing = await views.workers(dashboard_of(request).agenda, datetime.now(UTC))
    return render(request, "workers.html", "workers", **listing)


async def new_job_page(request: Request) -> Response:
    """``/new``: the form that creates a job."""
    if dashboard_of(request).policy.read_only:
        raise HTTPException(403, "the dashboard is read-only")
    agenda = dashboard_of(request).agenda
    return render(
        request, "new.html", "new", names=await _known_names(request), defined=sorted(agenda.definitions)
    )


def login_page(request: Request, error: str | None = None, status_code: int = 401) -> Response:
    """The sign-in form (token), or a plain notice when only basic auth is configured."""
    return render(request, "login.html", "login", status_code=status_code, error=error)


async def login(request: Request) -> Response:
    """``/login``: GET shows the form; POST checks the token, starts a session, and goes home."""
    dash = dashboard_of(request)
    home = request.scope.get("root_path", "") + "/"
    if dash.policy.token is None:
        return RedirectResponse(home, status_code=303)  # nothing to sign in with
    if request.method == "GET":
        return login_page(request, status_code=200)
    throttle, client = dash.policy.throttle, client_address(request.scope)
    wait = throttle.retry_after(client)
    if wait:
        response = login_page(
            request, error=f"Too many failed attempts: try again in {math.ceil(wait)} s.", status_code=429
        )
        response.headers["retry-after"] = str(math.ceil(wait))
        return response
    form = await request.form(max_files=0, max_fields=4)
    given = form.get("token")
    if not isinstance(given, str) or not dash.policy.token_matches(given):
        throttle.failure(client)
        return login_page(request, error="That token is not valid.")
    throttle.success(client)
    sessions = dash.policy.sessions
    response = RedirectResponse(home, status_code=303)
    response.headers.append(
        "set-cookie",
        cookie_header(request.scope, SESSION_COOKIE, sessions.issue(), max_age=int(sessions.max_age)),
    )
    return response


async def logout(request: Request) -> Response:
    """``POST /logout``: end the session (CSRF-checked like every POST); copies of its cookie stop working."""
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        dashboard_of(request).policy.sessions.revoke(session)
    response = RedirectResponse(request.scope.get("root_path", "") + "/login", status_code=303)
    response.headers.append("set-cookie", cookie_header(request.scope, SESSION_COOKIE, "", max_age=0))
    return response


def page_routes() -> list[BaseRoute]:
    """The routes of the HTML pages."""
    return [
        Route("/", overview_page, methods=["GET"]),
        Route("/jobs", jobs_page, methods=["GET"]),
        Route("/jobs/{job_id}", job_page, methods=["GET"]),
        Route("/workers", workers_page, methods=["GET"]),
        Route("/new", new_job_page, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]

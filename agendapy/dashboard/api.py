"""The JSON API under ``/api``: what the page itself uses, and what scripts may call with a Bearer token."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ..errors import InvalidInput
from . import actions, views
from .context import dashboard_of
from .live import event_stream
from .views import SafeJSONResponse

__all__ = ["MAX_BODY_BYTES", "api_routes", "list_params", "read_json"]

#: The largest request body accepted (job data included).
MAX_BODY_BYTES = 1024 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


def _text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value else None


def list_params(request: Request) -> dict[str, Any]:
    """The job list's filters from the query string (``name``, ``state``, ``search``, ``page``, ``limit``)."""
    state = _text_param(request, "state")
    if state is not None and state not in views.FILTER_STATES:
        raise InvalidInput("state", state, f"must be one of {', '.join(views.FILTER_STATES)}")
    return {
        "name": _text_param(request, "name"),
        "state": state,
        "search": _text_param(request, "search"),
        "page": views.parse_count(request.query_params.get("page"), "page", default=1, low=1, high=10**6),
        "limit": views.parse_count(
            request.query_params.get("limit"),
            "limit",
            default=views.DEFAULT_PAGE_SIZE,
            low=1,
            high=views.MAX_PAGE_SIZE,
        ),
    }


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty), at most :data:`MAX_BODY_BYTES`."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return {}
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(415, "send a JSON body with Content-Type: application/json")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("body", "<request body>", f"is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidInput("body", type(value).__name__, "must be a JSON object")
    return value


async def get_overview(request: Request) -> Response:
    """``GET /api/overview``: counts per name and state, totals, and this process's worker stats."""
    dash = dashboard_of(request)
    return SafeJSONResponse(
        {
            "overview": await views.overview(dash.agenda),
            "process": await views.process_stats(dash.agenda),
            "now": views.iso(_now()),
            "read_only": dash.policy.read_only,
        }
    )


async def get_jobs(request: Request) -> Response:
    """``GET /api/jobs?name=&state=&search=&page=&limit=``: one page of jobs."""
    dash = dashboard_of(request)
    return SafeJSONResponse(await views.list_jobs(dash.agenda, now=_now(), **list_params(request)))


async def job_payload(request: Request, job_id: str) -> dict[str, Any]:
    """A job's every field and its name's recent runs (what the job page shows)."""
    agenda = dashboard_of(request).agenda
    job = await actions.get_job_or_404(agenda, job_id)
    runs = [views.run_record(r) for r in await agenda.runs(job.name, limit=20)]
    # Whether the Agenda this dashboard was built for defines the name (None: it defines nothing, so
    # it is a bare viewer and cannot tell).
    defined_here = job.name in agenda.definitions if agenda.definitions else None
    logs = await views.job_logs(agenda, job.id or job_id)
    return {"job": views.job_detail(job, _now()), "runs": runs, "defined_here": defined_here, "logs": logs}


async def get_job(request: Request) -> Response:
    """``GET /api/jobs/{id}``."""
    return SafeJSONResponse(await job_payload(request, request.path_params["job_id"]))


async def get_runs(request: Request) -> Response:
    """``GET /api/runs?name=&status=&limit=``: run history, newest first."""
    agenda = dashboard_of(request).agenda
    limit = views.parse_count(request.query_params.get("limit"), "limit", default=100, low=1, high=1000)
    status: Any = _text_param(request, "status")
    records = await agenda.runs(_text_param(request, "name"), status=status, limit=limit)
    return SafeJSONResponse({"runs": [views.run_record(r) for r in records]})


async def get_workers(request: Request) -> Response:
    """``GET /api/workers``: locked jobs grouped by the worker holding them."""
    return SafeJSONResponse(await views.workers(dashboard_of(request).agenda, _now()))


async def get_activity(request: Request) -> Response:
    """``GET /api/activity``: the last hour minute by minute (runs done, failed, queue depth) and the
    overview charts' geometry."""
    series = await dashboard_of(request).agenda.activity(60)
    charts = views.activity_charts(series)
    return SafeJSONResponse({"activity": views.jsonable(series), "charts": charts, "now": views.iso(_now())})


async def get_events(request: Request) -> Response:
    """``GET /api/events``: Server-Sent Events with the overview whenever it changes."""
    return StreamingResponse(
        event_stream(dashboard_of(request).live),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


async def post_create(request: Request) -> Response:
    """``POST /api/jobs`` with ``{name, data, schedule | repeat_every, timezone}``."""
    result = await actions.create_job(dashboard_of(request).agenda, await read_json(request))
    assert result.job is not None
    return SafeJSONResponse(
        {"ok": True, "message": result.message, "job": views.job_summary(result.job, _now())}, status_code=201
    )


async def post_action(request: Request) -> Response:
    """``POST /api/jobs/{id}/run|retry|disable|enable|cancel``."""
    await read_json(request)  # no options yet, but a malformed or oversized body is still refused
    result = await actions.run_action(
        dashboard_of(request).agenda, request.path_params["job_id"], request.path_params["action"]
    )
    job = None if result.job is None else views.job_summary(result.job, _now())
    return SafeJSONResponse({"ok": True, "message": result.message, "job": job})


def api_routes() -> list[BaseRoute]:
    """The routes of ``/api``."""
    return [
        Route("/api/overview", get_overview, methods=["GET"]),
        Route("/api/jobs", get_jobs, methods=["GET"]),
        Route("/api/jobs", post_create, methods=["POST"]),
        Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/api/jobs/{job_id}/{action}", post_action, methods=["POST"]),
        Route("/api/runs", get_runs, methods=["GET"]),
        Route("/api/workers", get_workers, methods=["GET"]),
        Route("/api/activity", get_activity, methods=["GET"]),
        Route("/api/events", get_events, methods=["GET"]),
    ]

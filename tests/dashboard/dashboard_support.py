"""Helpers of the dashboard tests: CSRF-carrying posts, jobs put into given states, a live uvicorn server."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from bson import ObjectId

from agendapy import Agenda, Job

ORIGIN = "http://127.0.0.1"

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


async def csrf_token(client: httpx.AsyncClient, path: str = "/") -> str:
    """Load a page (which sets the CSRF cookie) and return the token it embeds."""
    response = await client.get(path)
    assert response.status_code == 200, response.text
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', response.text)
    assert match, "the page embeds no CSRF token"
    return match.group(1)


async def post(client: httpx.AsyncClient, path: str, body: Any = None, **headers: str) -> httpx.Response:
    """A POST as the page sends it: same origin, with the session's CSRF token."""
    token = await csrf_token(client)
    sent = {"origin": str(client.base_url).rstrip("/"), "x-csrf-token": token, **headers}
    if body is None:
        return await client.post(path, headers=sent)
    return await client.post(path, json=body, headers=sent)


async def set_fields(jobs_collection: Any, job: Job, **fields: Any) -> None:
    """Write document fields directly (camelCase), to put a job into a state."""
    await jobs_collection.update_one({"_id": ObjectId(job.id)}, {"$set": fields})


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def seed_states(agenda: Agenda, jobs_collection: Any) -> dict[str, Job]:
    """One job in each state the overview counts (names say which)."""
    jobs = {
        "scheduled": await agenda.schedule("in 1 hour", "report"),
        "queued": await agenda.schedule(ago(60), "report"),
        "repeating": await agenda.every("5 minutes", "heartbeat"),
        "completed": await agenda.schedule(ago(120), "email"),
        "failed": await agenda.schedule(ago(120), "email", {"to": "a@example.com"}),
        "running": await agenda.schedule(ago(5), "import"),
        "paused": await agenda.schedule("in 2 hours", "import"),
    }
    await set_fields(
        jobs_collection, jobs["completed"], nextRunAt=None, lastRunAt=ago(100), lastFinishedAt=ago(99)
    )
    await set_fields(
        jobs_collection,
        jobs["failed"],
        nextRunAt=None,
        lastRunAt=ago(100),
        lastFinishedAt=ago(99),
        failedAt=ago(99),
        failCount=3,
        failReason="SMTP said no",
    )
    await set_fields(
        jobs_collection,
        jobs["running"],
        lockedAt=ago(30),
        lastRunAt=ago(30),
        lastModifiedBy="worker-a",
        progress=40,
    )
    await agenda.disable(id=jobs["paused"].id)
    return jobs


@asynccontextmanager
async def running_server(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in this event loop; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        dashboard = getattr(getattr(app, "state", None), "dashboard", None)
        if dashboard is not None:
            dashboard.live.close()  # what agendapy.dashboard.serve does on shutdown
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()

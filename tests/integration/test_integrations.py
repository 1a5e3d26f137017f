"""Starlette and FastAPI: the lifespan helper and the dependency, against the real test database.

The ASGI lifespan is driven by hand (``LifespanDriver``) and requests go through httpx's ASGI transport;
one test uses Starlette's TestClient, which runs the app on its own loop in a thread.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient, MongoClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agendapy import Agenda, Job
from agendapy.integrations.fastapi import AgendaDep
from agendapy.integrations.starlette import agenda_lifespan, get_agenda


class LifespanDriver:
    """Runs an ASGI app's lifespan protocol: startup on enter, shutdown on exit (as a server does)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LifespanDriver:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self._task = asyncio.create_task(self.app(scope, self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        message = await asyncio.wait_for(self._outbox.get(), 20)
        if message["type"] != "lifespan.startup.complete":
            await asyncio.gather(self._task, return_exceptions=True)
            raise RuntimeError(message.get("message", message["type"]))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        await self._inbox.put({"type": "lifespan.shutdown"})
        message = await asyncio.wait_for(self._outbox.get(), 20)
        await asyncio.gather(self._task, return_exceptions=True)
        assert message["type"] == "lifespan.shutdown.complete", message


def http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


@pytest.fixture
async def agenda(db_url: str, client: AsyncMongoClient[Any]) -> AsyncIterator[Agenda]:
    """An Agenda on this test's database (dropped afterwards); the lifespan connects and closes it."""
    made = Agenda(db_url, process_every=0.05)
    try:
        yield made
    finally:
        await made.close()


# -- FastAPI ----------------------------------------------------------------------------------------


async def test_fastapi_lifespan_starts_the_worker_and_routes_schedule(agenda: Agenda) -> None:
    welcomed: list[str] = []
    done = asyncio.Event()

    @agenda.define("welcome")
    async def welcome(job: Job) -> None:
        welcomed.append(job.data["email"])
        done.set()

    app = FastAPI(lifespan=agenda_lifespan(agenda))

    @app.post("/signup")
    async def signup(email: str, agenda: AgendaDep) -> dict[str, str]:
        job = await agenda.now("welcome", {"email": email})
        return {"id": job.id or ""}

    async with LifespanDriver(app):
        assert agenda.is_running
        async with http(app) as client:
            response = await client.post("/signup", params={"email": "ada@example.com"})
        assert response.status_code == 200 and response.json()["id"]
        await asyncio.wait_for(done.wait(), 15)
    assert welcomed == ["ada@example.com"]
    assert not agenda.is_running


async def test_schedule_only_when_the_worker_runs_elsewhere(agenda: Agenda) -> None:
    agenda.define("report", lambda job: pytest.fail("this process must not run jobs"))
    app = FastAPI(lifespan=agenda_lifespan(agenda, start_worker=False))

    @app.post("/reports")
    async def order_report(agenda: AgendaDep) -> dict[str, int]:
        await agenda.now("report")
        return {"queued": (await agenda.query_jobs(name="report")).total}

    async with LifespanDriver(app):
        assert not agenda.is_running
        async with http(app) as client:
            response = await client.post("/reports")
        assert response.json() == {"queued": 1}
        await asyncio.sleep(0.3)
        [job] = (await agenda.query_jobs(name="report")).jobs
        assert job.last_run_at is None


async def test_shutdown_lets_running_jobs_finish_within_the_grace(agenda: Agenda) -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    @agenda.define("long")
    async def long(job: Job) -> None:
        started.set()
        await job.stopping()  # a well-behaved handler wraps up when asked to stop
        finished.set()

    app = FastAPI(lifespan=agenda_lifespan(agenda, grace=5))
    async with LifespanDriver(app):
        job = await agenda.now("long")
        await asyncio.wait_for(started.wait(), 15)
    assert finished.is_set()
    check = Agenda(agenda.store)
    try:
        stored = await check.get_job(job.id or "")
    finally:
        await check.close()
    assert stored is not None and stored.last_finished_at is not None and stored.locked_at is None


# -- Starlette ---------------------------------------------------------------------------------------


async def test_wrap_composes_with_the_apps_own_lifespan(agenda: Agenda) -> None:
    order: list[tuple[str, bool]] = []

    @asynccontextmanager
    async def existing(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        order.append(("startup", agenda.is_running))
        await agenda.every("1 hour", "hourly report")  # the Agenda is usable in the app's startup
        yield {"cache": "warm"}
        order.append(("shutdown", agenda.is_running))

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"jobs": (await get_agenda(request).query_jobs()).total})

    app = Starlette(routes=[Route("/", endpoint)], lifespan=agenda_lifespan(agenda, wrap=existing))
    async with LifespanDriver(app) as server:
        assert server.state == {"cache": "warm"}
        async with http(app) as client:
            assert (await client.get("/")).json() == {"jobs": 1}
    assert order == [("startup", True), ("shutdown", True)]  # inside: the worker outlives the app's own
    assert not agenda.is_running


async def test_wrap_accepts_an_async_generator_lifespan(agenda: Agenda) -> None:
    events: list[str] = []

    async def existing(app: Starlette) -> AsyncIterator[None]:
        events.append("up")
        yield
        events.append("down")

    app = Starlette(lifespan=agenda_lifespan(agenda, wrap=existing, start_worker=False))
    async with LifespanDriver(app):
        assert events == ["up"]
    assert events == ["up", "down"]


async def test_get_agenda_without_the_lifespan_is_a_clear_error() -> None:
    async def endpoint(request: Request) -> JSONResponse:
        get_agenda(request)
        return JSONResponse({})

    app = Starlette(routes=[Route("/", endpoint)])
    async with http(app) as client:
        with pytest.raises(RuntimeError, match="agenda_lifespan"):
            await client.get("/")


async def test_an_unreachable_database_fails_the_startup() -> None:
    agenda = Agenda("mongodb://127.0.0.1:9/app?serverSelectionTimeoutMS=300")
    app = Starlette(lifespan=agenda_lifespan(agenda))
    with pytest.raises(RuntimeError, match="cannot reach MongoDB"):
        async with LifespanDriver(app):
            pass
    assert not agenda.is_running


# -- Starlette's TestClient (the app on its own loop, in a thread) -----------------------------------


@pytest.fixture
def sync_db_url(db_url: str) -> Iterator[str]:
    yield db_url
    sync_client: MongoClient[dict[str, Any]]
    with MongoClient(db_url) as sync_client:
        sync_client.drop_database(sync_client.get_default_database().name)


def test_starlette_test_client(sync_db_url: str) -> None:
    agenda = Agenda(sync_db_url, process_every=0.05)
    pinged = threading.Event()
    agenda.define("ping", lambda job: pinged.set())  # a sync handler: run in a worker thread

    async def endpoint(request: Request) -> JSONResponse:
        job = await get_agenda(request).now("ping")
        return JSONResponse({"id": job.id})

    app = Starlette(routes=[Route("/ping", endpoint, methods=["POST"])], lifespan=agenda_lifespan(agenda))
    with warnings.catch_warnings():
        # Starlette 1.x would rather drive its TestClient with httpx2; httpx still works.
        warnings.filterwarnings("ignore", message=".*httpx2")
        from starlette.testclient import TestClient
    with TestClient(app) as client:
        assert client.post("/ping").status_code == 200
        assert pinged.wait(15)
    assert not agenda.is_running

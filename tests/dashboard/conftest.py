"""Fixtures of the dashboard tests: HTTP clients on the app through the ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from dashboard_support import ORIGIN, MakeClient
from starlette.types import ASGIApp

from agendapy import Agenda
from agendapy.dashboard import create_app


@pytest.fixture
async def make_client(agenda: Agenda) -> AsyncIterator[MakeClient]:
    """``await make_client(**create_app_options)``: an httpx client on a fresh dashboard app of ``agenda``
    (base URL http://127.0.0.1, a loopback host, as an unauthenticated dashboard requires; without token
    or basic_auth it is built with ``insecure_no_auth=True``)."""
    clients: list[httpx.AsyncClient] = []

    async def make(
        *, app: ASGIApp | None = None, base_url: str = ORIGIN, **options: Any
    ) -> httpx.AsyncClient:
        if "token" not in options and "basic_auth" not in options:
            options.setdefault("insecure_no_auth", True)  # most tests look at behaviour, not sign-in
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app or create_app(agenda, **options)), base_url=base_url
        )
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
async def http(make_client: MakeClient) -> httpx.AsyncClient:
    """A client on an unauthenticated, writable dashboard."""
    return await make_client()

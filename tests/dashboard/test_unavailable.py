"""The dashboard when its database does not answer: a clear 503, not a traceback."""

from __future__ import annotations

import httpx
import pytest

from agendapy import Agenda
from agendapy.dashboard import create_app

from ports import free_port

TOKEN = "unavailable-database-test-token-0123456789"


@pytest.fixture
async def client() -> httpx.AsyncClient:
    agenda = Agenda(f"mongodb://127.0.0.1:{free_port()}/app?serverSelectionTimeoutMS=300")
    app = create_app(agenda, token=TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as http:
        yield http
    await agenda.close()


@pytest.mark.parametrize("path", ["/", "/jobs", "/new"])
async def test_pages_say_the_database_is_unavailable(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert "Database unavailable" in response.text
    assert "cannot reach MongoDB at mongodb://127.0.0.1:" in response.text
    assert "Traceback" not in response.text
    assert response.headers["retry-after"] == "5"


async def test_api_answers_503_with_a_json_error(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/overview")
    assert response.status_code == 503
    assert response.json()["error"].startswith("Database unavailable: cannot reach MongoDB")

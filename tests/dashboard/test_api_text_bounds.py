"""Issue 16.1: a long date or interval string in ``POST /api/jobs`` is refused at once with a 400.

Before the bounds, ``{"schedule": "a" + " " * 16000 + "x"}`` held the event loop for 4.2 s (a quadratic
pattern in the date reader) while other requests waited.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from dashboard_support import post

from agendapy import Agenda

LONG = "a" + " " * 16_000 + "x"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "task", "schedule": LONG}, "longer than 256 characters"),
        ({"name": "task", "repeat_every": LONG}, "longer than 1024 characters"),
        ({"name": "task", "repeat_every": "1" * 600 + " minutes"}, "longer than 256 characters"),
    ],
)
async def test_long_schedule_strings_are_refused_without_holding_other_requests(
    agenda: Agenda, http: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    creating = asyncio.create_task(post(http, "/api/jobs", body))
    overview = await http.get("/api/overview")  # answered while (or after) the bad request is handled
    response = await creating

    assert overview.status_code == 200
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error
    assert len(error) < 400  # the input is named, cut short, not echoed whole
    assert (await agenda.query_jobs()).total == 0

"""Fixtures several PostgreSQL test modules share: a pool in both shapes a store may hand over, and the
Agendas a test starts (stopped and closed at its end)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agendapy import Agenda


@pytest.fixture(params=["store", "plain"])
async def pool(pg_url: str, request: pytest.FixtureRequest) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A pool as the job store makes it (autocommit, dict rows) or psycopg's defaults; its session time
    zone far from UTC (the test module's ``SESSION_TIME_ZONE``): every date must still read back as
    aware UTC."""
    kwargs: dict[str, Any] = {"options": f"-c TimeZone={request.module.SESSION_TIME_ZONE}"}
    if request.param == "store":
        kwargs |= {"autocommit": True, "row_factory": dict_row}
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        pg_url, min_size=1, max_size=8, open=False, kwargs=kwargs
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def agendas() -> AsyncIterator[list[Agenda]]:
    """The Agendas a test makes (it appends them); stopped and closed at the end of the test."""
    made: list[Agenda] = []
    try:
        yield made
    finally:
        for agenda in made:
            await agenda.stop(grace=1.0)
            await agenda.close()

"""Fixtures several PostgreSQL test modules share: a pool in both shapes a store may hand over, and the
Agendas a test starts (stopped and closed at its end), and Agendas made on the test's database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
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


MakeAgenda = Callable[..., Awaitable[Agenda]]


@pytest.fixture
async def make_pg_agenda(pg_url: str) -> AsyncIterator[MakeAgenda]:
    """``await make_pg_agenda(**options)``: an Agenda on this test's PostgreSQL database (process_every
    0.1 s unless given; closed after the test)."""
    made: list[Agenda] = []

    async def make(**options: Any) -> Agenda:
        options.setdefault("process_every", 0.1)
        agenda = Agenda(pg_url, **options)
        made.append(agenda)
        return agenda

    try:
        yield make
    finally:
        for agenda in made:
            await agenda.close()

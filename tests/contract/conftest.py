"""The contract suite's backends: every test here runs on MongoDB, PostgreSQL and the in-memory store.

``store`` is a connected JobStore; ``make_store(**options)`` builds more (with history options);
``make_agenda(**options)`` builds Agendas on the test's store (several Agendas share it, as several
workers share one collection). If the two backends disagree, one of them is wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from contract_helpers import MakeAgenda, MakeStore
from pymongo import AsyncMongoClient

from agendapy import Agenda
from agendapy.store.base import JobStore
from agendapy.store.mongo import MongoJobStore
from agendapy.store.postgres import PostgresJobStore
from agendapy.testing import MemoryJobStore

BACKENDS = ["mongo", "memory", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(
    backend: str, request: pytest.FixtureRequest, pg_store_url: str | None
) -> AsyncIterator[MakeStore]:
    """Build connected stores of this test's backend; ``history_keep``/``history_ttl`` are passed on.
    MongoDB and PostgreSQL stores all use this test's own database (dropped afterwards)."""
    made: list[JobStore] = []
    # Only the MongoDB runs need the server (getfixturevalue works for the synchronous fixtures only).
    db_url: str | None = request.getfixturevalue("db_url") if backend == "mongo" else None
    pg_url = pg_store_url

    async def make(**options: Any) -> JobStore:
        store: JobStore
        if pg_url is not None:
            store = PostgresJobStore(pg_url, **options)
        elif db_url is None:
            store = MemoryJobStore(**options)
        else:
            store = MongoJobStore(db_url, **options)
        await store.connect()
        made.append(store)
        return store

    try:
        yield make
    finally:
        for store in made:
            await store.close()
        if db_url is not None:
            client: AsyncMongoClient[Any] = AsyncMongoClient(db_url)
            try:
                await client.drop_database(client.get_default_database().name)
            finally:
                await client.close()


@pytest.fixture
def pg_store_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """This test's own PostgreSQL database on the postgres backend (None on the others).

    ``pg_url`` is an async fixture, which ``getfixturevalue`` cannot start from an async one; a
    synchronous fixture asking for it lazily can, so the other backends never start PostgreSQL.
    """
    return str(request.getfixturevalue("pg_url")) if backend == "postgres" else None


@pytest.fixture
async def store(make_store: MakeStore) -> JobStore:
    """A connected, empty job store of this test's backend."""
    return await make_store()


@pytest.fixture
async def make_agenda(store: JobStore) -> AsyncIterator[MakeAgenda]:
    """Agendas on this test's store (process_every 50 ms unless given); stopped and closed afterwards."""
    made: list[Agenda] = []

    async def make(**options: Any) -> Agenda:
        options.setdefault("process_every", 0.05)
        agenda = Agenda(store, **options)
        made.append(agenda)
        await agenda.connect()
        return agenda

    try:
        yield make
    finally:
        for agenda in made:
            await agenda.stop(grace=1.0)
        for agenda in made:
            await agenda.close()


@pytest.fixture
async def agenda(make_agenda: MakeAgenda) -> Agenda:
    """One connected, not started Agenda on this test's store."""
    return await make_agenda()

"""The contract suite's backends: every test here runs once on MongoDB and once on the in-memory store.

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
from agendapy.testing import MemoryJobStore

BACKENDS = ["mongo", "memory"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """Build connected stores of this test's backend; ``history_keep``/``history_ttl`` are passed on.
    MongoDB stores all use this test's own database (dropped afterwards)."""
    made: list[JobStore] = []
    # Only the MongoDB runs need the server (getfixturevalue works for the synchronous fixtures only).
    db_url: str | None = request.getfixturevalue("db_url") if backend == "mongo" else None

    async def make(**options: Any) -> JobStore:
        store: JobStore = MemoryJobStore(**options) if db_url is None else MongoJobStore(db_url, **options)
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

"""Shared fixtures: one real MongoDB-wire server per folder of tests, one fresh database per test.

The server is ``$AGENDAPY_TEST_MONGO_URL`` when set (a real mongod), else SecantusDB started by
agendapy's own embedded-server manager on a free loopback port with a temporary data directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from bson import CodecOptions
from hypothesis import settings
from pymongo import AsyncMongoClient

from agendapy import Agenda

# CI runs the same property-test examples on every run, so a red CI run is one the next run repeats;
# local runs keep exploring new examples (and a failure found there becomes an @example).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def _serve_mongo() -> Iterator[str]:
    url = os.environ.get("AGENDAPY_TEST_MONGO_URL")
    if url:
        yield url
        return
    from agendapy.embedded import EmbeddedServer

    server = EmbeddedServer(None)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class _ServerPerFolder:
    """One server per folder of tests (``tests/contract``, ``tests/integration`` ...), started when the
    folder's first test asks for it and stopped when a test of another folder does: tests run folder
    by folder, and no server carries a whole session's data and load (SecantusDB keeps every write in
    its oplog and its cache; a server filled by a long session once stalled inside its storage engine).
    A module marked ``own_mongo_server`` (it writes documents at BSON's 16 MB limit) gets one of its own
    the same way."""

    def __init__(self) -> None:
        self._folder: str | None = None
        self._serving: Iterator[str] | None = None
        self._url = ""

    def url_for(self, folder: str) -> str:
        if folder != self._folder:
            self.close()
            self._serving = _serve_mongo()
            self._url = next(self._serving)
            self._folder = folder
        return self._url

    def close(self) -> None:
        serving, self._serving, self._folder = self._serving, None, None
        if serving is not None:
            next(serving, None)


@pytest.fixture(scope="session")
def _mongo_servers() -> Iterator[_ServerPerFolder]:
    servers = _ServerPerFolder()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def mongo_url(_mongo_servers: _ServerPerFolder, request: pytest.FixtureRequest) -> str:
    """The MongoDB-wire server of this test's folder, or of its module when the module is marked
    ``own_mongo_server`` (see ``_ServerPerFolder``)."""
    if request.node.get_closest_marker("own_mongo_server") is not None:
        return _mongo_servers.url_for(str(request.path))
    tests = Path(__file__).parent
    folder = request.path.relative_to(tests).parts[0] if request.path.is_relative_to(tests) else ""
    return _mongo_servers.url_for(folder)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server: ``$AGENDAPY_TEST_POSTGRES_URL`` when set, else a temporary cluster
    (``tests/pg_server.py``) on a free loopback port."""
    url = os.environ.get("AGENDAPY_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    from pg_server import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def pg_url(postgres_url: str, db_name: str) -> AsyncIterator[str]:
    """A URL naming a fresh PostgreSQL database of this test's own (dropped at the end)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{db_name}"')
    try:
        yield with_database(postgres_url, db_name)
    finally:
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
def db_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def db_url(mongo_url: str, db_name: str) -> str:
    """A URL naming this test's own database."""
    return with_database(mongo_url, db_name)


@pytest.fixture
async def client(mongo_url: str, db_name: str) -> AsyncIterator[AsyncMongoClient[Any]]:
    # A bound on every operation: a stuck server fails the test instead of hanging the run.
    c: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url, tz_aware=True, timeoutMS=60_000)
    try:
        yield c
    finally:
        await c.drop_database(db_name)
        await c.close()


@pytest.fixture
def jobs_collection(client: AsyncMongoClient[Any], db_name: str) -> Any:
    """The raw ``agendaJobs`` collection of this test's database, for assertions on documents."""
    from datetime import UTC

    return client[db_name].get_collection("agendaJobs", codec_options=CodecOptions(tz_aware=True, tzinfo=UTC))


MakeAgenda = Callable[..., Awaitable[Agenda]]


@pytest.fixture
async def make_agenda(db_url: str, client: AsyncMongoClient[Any]) -> AsyncIterator[MakeAgenda]:
    """Build connected Agendas on this test's database (process_every 50 ms unless given); all are
    closed at the end of the test."""
    made: list[Agenda] = []

    async def make(**options: Any) -> Agenda:
        options.setdefault("process_every", 0.05)
        agenda = Agenda(options.pop("db", db_url), **options)
        made.append(agenda)
        await agenda.connect()
        return agenda

    try:
        yield make
    finally:
        for agenda in made:
            await agenda.stop(grace=1.0)
            await agenda.close()


@pytest.fixture
async def agenda(make_agenda: MakeAgenda) -> Agenda:
    """One connected, not yet started Agenda with process_every 50 ms."""
    return await make_agenda()

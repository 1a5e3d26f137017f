"""Where a store's database comes from: URL checks, database names, messages without passwords."""

from __future__ import annotations

import pytest
from pymongo import AsyncMongoClient

from agendapy.connections import MongoConnection, redact_url
from agendapy.errors import DatabaseUnavailable, InvalidInput


def test_redact_url_hides_the_password_only() -> None:
    assert redact_url("mongodb://ann:secret@db:27017/x") == "mongodb://ann:***@db:27017/x"
    assert redact_url("mongodb://db:27017/x") == "mongodb://db:27017/x"


@pytest.mark.parametrize("url", ["http://db/x", "mongodb://ann:secret@db:notaport/x"])
def test_a_bad_url_is_refused_at_once_without_its_password(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        MongoConnection(url)
    assert caught.value.field == "db"
    assert "secret" not in str(caught.value)


async def test_the_database_comes_from_the_argument_then_the_url_then_the_default() -> None:
    for url, database, expected in [
        ("mongodb://127.0.0.1:1/fromurl", "given", "given"),
        ("mongodb://127.0.0.1:1/fromurl", None, "fromurl"),
        ("mongodb://127.0.0.1:1", None, "agenda"),
    ]:
        connection = MongoConnection(url, database=database)
        assert connection.database().name == expected
        await connection.close()


async def test_a_given_client_is_used_and_left_open() -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        "mongodb://127.0.0.1:1/mine", connect=False
    )
    connection = MongoConnection(client)
    assert connection.database().client is client
    await connection.close()
    assert connection.database().name == "mine"  # still usable: closing it was not ours to do
    await client.close()


def test_unreachable_names_the_server_without_the_password() -> None:
    connection = MongoConnection("mongodb://ann:secret@127.0.0.1:1/x")
    error = connection.unavailable(OSError("refused (configured timeouts: 1s)"))
    assert isinstance(error, DatabaseUnavailable)
    assert str(error) == "cannot reach MongoDB at mongodb://ann:***@127.0.0.1:1/x: refused"


def test_something_else_is_refused_when_resolved() -> None:
    with pytest.raises(InvalidInput, match="must be a mongodb:// URL"):
        MongoConnection(42).database()

"""Which store ``Agenda(db)`` builds, and the options that belong to one store only (no database needed)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from agendapy import Agenda
from agendapy.connections import environment_url
from agendapy.errors import InvalidInput
from agendapy.store.mongo import MongoJobStore
from agendapy.store_source import PostgresDriverMissing, postgres_table, store_kind
from agendapy.testing import MemoryJobStore


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://db.example/app", "'http://'"),
        ("mysql://root:secret@db/app", "'mysql://'"),
        ("localhost:27017", "no scheme"),
    ],
)
def test_an_unknown_scheme_is_refused_naming_the_value_and_the_accepted_schemes(url: str, shown: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Agenda(url)
    message = str(caught.value)
    assert caught.value.field == "db" and shown in message
    for scheme in ("mongodb://", "mongodb+srv://", "postgresql://", "postgres://"):
        assert scheme in message
    assert "secret" not in message  # the password never reaches a message


@pytest.mark.parametrize("url", ["postgresql://u:pw@db:5432/app", "postgres://db/app", "POSTGRESQL://db/app"])
def test_postgres_urls_select_the_postgres_store(url: str) -> None:
    assert store_kind(url) == "postgresql"


def test_mongodb_urls_clients_and_job_stores_keep_their_stores() -> None:
    assert store_kind("mongodb://localhost/app") == "mongodb"
    assert store_kind("mongodb+srv://cluster.example.net/app") == "mongodb"
    assert store_kind(MemoryJobStore()) == "custom"
    assert isinstance(Agenda("mongodb://localhost/app").store, MongoJobStore)


def test_a_psycopg_pool_selects_the_postgres_store() -> None:
    psycopg_pool = pytest.importorskip("psycopg_pool")
    pool = psycopg_pool.AsyncConnectionPool("postgresql://localhost/x", open=False)
    assert store_kind(pool) == "postgresql"


@pytest.mark.parametrize(("option", "value"), [("collection", "jobs"), ("database", "app")])
def test_mongodb_only_options_are_refused_on_postgres(option: str, value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Agenda("postgresql://localhost/app", **{option: value})
    assert caught.value.field == option and caught.value.value == value
    assert "MongoDB only" in str(caught.value)


def test_mongodb_defaults_passed_explicitly_are_fine_on_postgres() -> None:
    pytest.importorskip("psycopg")
    agenda = Agenda("postgresql://localhost/app", collection="agendaJobs", runs_collection="agendaRuns")
    assert type(agenda.store).__name__ == "PostgresJobStore"


def test_the_other_names_stand_for_postgres_tables() -> None:
    assert postgres_table("runs_collection", "agendaRuns") == "agendapy_runs"
    assert postgres_table("workers_collection", "agendaWorkers") == "agendapy_workers"
    assert postgres_table("activity_collection", "agendaActivity") == "agendapy_activity"
    assert postgres_table("logs_collection", "agenda_logs") == "agenda_logs"
    assert postgres_table("runs_collection", "billing_runs") == "billing_runs"


@pytest.mark.parametrize(
    "option", ["table", "runs_collection", "logs_collection", "workers_collection", "activity_collection"]
)
def test_a_name_postgres_cannot_take_is_refused_naming_the_option(option: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(InvalidInput) as caught:
        Agenda("postgresql://localhost/app", **{option: "bad-name; DROP TABLE x"})
    assert option.split("_")[0] in caught.value.field
    assert caught.value.value == "bad-name; DROP TABLE x"


def test_table_is_refused_on_mongodb() -> None:
    with pytest.raises(InvalidInput) as caught:
        Agenda("mongodb://localhost/app", table="jobs")
    assert caught.value.field == "table" and "PostgreSQL only" in str(caught.value)


def test_without_the_postgres_extra_the_error_says_how_to_install_it(monkeypatch: Any) -> None:
    # Simulate a machine without psycopg: the import of the store package fails on the driver.
    for name in list(sys.modules):
        if name.split(".")[0] in ("psycopg", "psycopg_pool") or name.startswith("agendapy.store.postgres"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    with pytest.raises(PostgresDriverMissing) as caught:
        Agenda("postgresql://localhost/app")
    assert "pip install 'agendapy[postgres]'" in str(caught.value)
    assert isinstance(caught.value, ImportError)


def test_the_database_url_variable_comes_before_the_mongo_one(monkeypatch: Any) -> None:
    monkeypatch.delenv("AGENDAPY_DATABASE_URL", raising=False)
    monkeypatch.delenv("AGENDAPY_MONGO_URL", raising=False)
    assert environment_url() is None
    monkeypatch.setenv("AGENDAPY_MONGO_URL", "mongodb://old/app")
    assert environment_url() == "mongodb://old/app"
    monkeypatch.setenv("AGENDAPY_DATABASE_URL", "postgresql://new/app")
    assert environment_url() == "postgresql://new/app"
    monkeypatch.setenv("AGENDAPY_DATABASE_URL", "")
    assert environment_url() == "mongodb://old/app"

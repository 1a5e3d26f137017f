"""Which ``JobStore`` an ``Agenda`` uses for the ``db`` it was given (and the stand-in until the default
database is known).

``db`` picks the store: a ``JobStore`` is used as it is; a ``postgresql://``/``postgres://`` URL or a
psycopg ``AsyncConnectionPool``/``AsyncConnection`` gets the PostgreSQL store (imported only then: the
``postgres`` extra is optional); a ``mongodb://``/``mongodb+srv://`` URL or a MongoDB client or database
gets the MongoDB store. ``collection`` and ``database`` are refused on PostgreSQL and ``table`` on
MongoDB, so a setting that would silently do nothing is an error instead; the other naming options name
a collection on MongoDB and a table on PostgreSQL.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, cast

from .connections import redact_url
from .errors import AgendaError, InvalidInput
from .joblogs import DEFAULT_LOGS_COLLECTION
from .store.base import JobStore, is_job_store
from .store.mongo import DEFAULT_COLLECTION, MongoJobStore
from .store.runs import DEFAULT_RUNS_COLLECTION
from .workers import DEFAULT_ACTIVITY_COLLECTION, DEFAULT_WORKERS_COLLECTION

__all__ = [
    "ACCEPTED_SCHEMES",
    "DEFAULT_TABLE",
    "POSTGRES_TABLES",
    "PendingStore",
    "PostgresDriverMissing",
    "StoreKind",
    "StoreSettings",
    "is_postgres_store",
    "postgres_table",
    "store_kind",
]

StoreKind = Literal["mongodb", "postgresql", "custom"]

#: The URL schemes ``db`` may use, in the order error messages list them.
ACCEPTED_SCHEMES = ("mongodb://", "mongodb+srv://", "postgresql://", "postgres://")
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_MONGO_SCHEMES = ("mongodb", "mongodb+srv")
#: The PostgreSQL jobs table: Node Agenda's postgres backend's, so both share it.
DEFAULT_TABLE = "agenda_jobs"
#: PostgreSQL's names for the other tables, used while the option keeps its MongoDB default.
POSTGRES_TABLES = {
    "runs_collection": (DEFAULT_RUNS_COLLECTION, "agendapy_runs"),
    "logs_collection": (DEFAULT_LOGS_COLLECTION, DEFAULT_LOGS_COLLECTION),  # Node's agenda_logs
    "workers_collection": (DEFAULT_WORKERS_COLLECTION, "agendapy_workers"),
    "activity_collection": (DEFAULT_ACTIVITY_COLLECTION, "agendapy_activity"),
}
#: The driver packages whose connection objects select the PostgreSQL store.
_PSYCOPG_MODULES = ("psycopg", "psycopg_pool")
_INSTALL_HINT = "pip install 'agendapy[postgres]'"


class PostgresDriverMissing(AgendaError, ImportError):
    """A PostgreSQL database was given but the ``postgres`` extra (psycopg) is not installed."""


def store_kind(db: Any) -> StoreKind:
    """Which store ``db`` selects; a URL with any other scheme raises ``InvalidInput`` naming it."""
    if is_job_store(db):
        return "custom"
    if isinstance(db, str):
        scheme = db.split("://", 1)[0].lower() if "://" in db else ""
        if scheme in _POSTGRES_SCHEMES:
            return "postgresql"
        if scheme in _MONGO_SCHEMES:
            return "mongodb"
        accepted = ", ".join(ACCEPTED_SCHEMES[:-1]) + " or " + ACCEPTED_SCHEMES[-1]
        what = f"unknown scheme {scheme + '://'!r}" if scheme else "no scheme"
        raise InvalidInput("db", redact_url(db), f"{what}: must start with {accepted}")
    if type(db).__module__.split(".", 1)[0] in _PSYCOPG_MODULES:
        return "postgresql"
    # Clients and databases of PyMongo and Motor; MongoConnection names what it accepts otherwise.
    return "mongodb"


def postgres_table(option: str, value: str) -> str:
    """The PostgreSQL table a MongoDB-named option stands for: PostgreSQL's default name while the option
    keeps MongoDB's default (``agendaRuns`` -> ``agendapy_runs``), else the name given."""
    mongo_default, table = POSTGRES_TABLES[option]
    return table if value == mongo_default else value


def is_postgres_store(store: object) -> bool:
    """Whether ``store`` is agendapy's PostgreSQL store (told by its module, so nothing is imported)."""
    return type(store).__module__.startswith("agendapy.store.postgres")


@dataclass(frozen=True)
class StoreSettings:
    """The ``Agenda`` arguments a job store is built with.

    ``collection`` and ``database`` apply to MongoDB only and ``table`` to PostgreSQL only; changing one
    for the other store is an ``InvalidInput`` naming it. ``runs_collection``, ``logs_collection``,
    ``workers_collection`` and ``activity_collection`` name a table on PostgreSQL once changed from their
    defaults (which stand for ``agendapy_runs``, ``agenda_logs``, ``agendapy_workers`` and
    ``agendapy_activity`` there), checked as table names when the store is built.
    """

    collection: str
    database: str | None
    ensure_indexes: bool
    runs_collection: str
    history_ttl: timedelta
    history_keep: int
    table: str | None = None
    logs_collection: str = DEFAULT_LOGS_COLLECTION
    workers_collection: str = DEFAULT_WORKERS_COLLECTION
    activity_collection: str = DEFAULT_ACTIVITY_COLLECTION

    def store_for(self, db: Any, *, state_write_window: timedelta) -> JobStore:
        """``db`` itself when it is a ``JobStore`` (agendapy.testing's in-memory store, say), else a
        PostgreSQL or MongoDB store on it (see :func:`store_kind`)."""
        kind = store_kind(db)
        if kind == "custom":
            return cast(JobStore, db)
        if kind == "postgresql":
            return self.postgres(db, state_write_window=state_write_window)
        return self.mongo(db, state_write_window=state_write_window)

    def mongo(self, db: Any, *, state_write_window: timedelta) -> MongoJobStore:
        """A MongoDB store on ``db`` (a URL, client or database)."""
        if self.table is not None:
            raise InvalidInput(
                "table", self.table, "applies to PostgreSQL only; on MongoDB use collection= instead"
            )
        return MongoJobStore(
            db,
            collection=self.collection,
            database=self.database,
            ensure_indexes=self.ensure_indexes,
            runs_collection=self.runs_collection,
            history_ttl=self.history_ttl,
            history_keep=self.history_keep,
            state_write_window=state_write_window.total_seconds(),
        )

    def postgres(self, db: Any, *, state_write_window: timedelta) -> JobStore:
        """A PostgreSQL store on ``db`` (a URL, an ``AsyncConnectionPool`` or an ``AsyncConnection``)."""
        self._refuse_mongo_names()
        store_class = _postgres_store_class()
        check_table_name = importlib.import_module("agendapy.store.postgres.schema").check_table_name
        for option in ("workers_collection", "activity_collection"):
            check_table_name(postgres_table(option, getattr(self, option)), option)
        return store_class(
            db,
            table=self.table or DEFAULT_TABLE,
            runs_table=postgres_table("runs_collection", self.runs_collection),
            logs_table=postgres_table("logs_collection", self.logs_collection),
            ensure_schema=self.ensure_indexes,
            history_ttl=self.history_ttl,
            history_keep=self.history_keep,
            state_write_window=state_write_window.total_seconds(),
        )

    def _refuse_mongo_names(self) -> None:
        if self.collection != DEFAULT_COLLECTION:
            raise InvalidInput(
                "collection", self.collection, "applies to MongoDB only; on PostgreSQL name the jobs' table="
            )
        if self.database is not None:
            raise InvalidInput(
                "database", self.database, "applies to MongoDB only; on PostgreSQL the URL names the database"
            )


def _postgres_store_class() -> Callable[..., JobStore]:
    """The PostgreSQL store class, imported on first use: without the ``postgres`` extra, an error
    saying how to install it (``PostgresDriverMissing``, an ImportError) rather than psycopg's own."""
    try:
        # Imported by name: the package and its driver load only for a PostgreSQL database.
        module = importlib.import_module("agendapy.store.postgres")
    except ImportError as exc:
        missing = (exc.name or "").split(".", 1)[0]
        if missing in _PSYCOPG_MODULES:
            raise PostgresDriverMissing(
                f"a postgresql:// database needs the PostgreSQL driver (module {exc.name!r} is missing): "
                f"{_INSTALL_HINT}"
            ) from exc
        raise
    return cast(Callable[..., JobStore], module.PostgresJobStore)


class PendingStore:
    """Stands in until ``connect()`` resolves the default database."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("the Agenda is not connected yet (await agenda.connect() or start())")

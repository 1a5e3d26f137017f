"""Which ``JobStore`` an ``Agenda`` uses for the ``db`` it was given (and the stand-in until the default
database is known)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from .store.base import JobStore, is_job_store
from .store.mongo import MongoJobStore

__all__ = ["PendingStore", "StoreSettings"]


@dataclass(frozen=True)
class StoreSettings:
    """The ``Agenda`` arguments a MongoDB job store is built with."""

    collection: str
    database: str | None
    ensure_indexes: bool
    runs_collection: str
    history_ttl: timedelta
    history_keep: int

    def store_for(self, db: Any, *, state_write_window: timedelta) -> JobStore:
        """``db`` itself when it is a ``JobStore`` (agendapy.testing's in-memory store, say), else a
        MongoDB store on it."""
        if is_job_store(db):
            return cast(JobStore, db)
        return self.mongo(db, state_write_window=state_write_window)

    def mongo(self, db: Any, *, state_write_window: timedelta) -> MongoJobStore:
        """A MongoDB store on ``db`` (a URL, client or database)."""
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


class PendingStore:
    """Stands in until ``connect()`` resolves the default database."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("the Agenda is not connected yet (await agenda.connect() or start())")

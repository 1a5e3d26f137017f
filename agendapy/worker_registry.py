"""The workers-list side of an ``Agenda``: its own entry while started, and reading the fleet's.

``Agenda.workers``, ``Agenda.activity`` and the presence kept between ``start()`` and the end of
processing delegate here; the documents themselves are ``agendapy.workers``' business.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, cast

from .errors import InvalidInput
from .events import EventEmitter
from .store.mongo import MongoJobStore
from .store_source import is_postgres_store, postgres_table
from .workers import MongoWorkerDirectory, WorkerDirectory, WorkerInfo, WorkerPresence

if TYPE_CHECKING:
    from .agenda import Agenda

__all__ = ["WorkerRegistry", "package_version"]

log = logging.getLogger("agendapy")


def package_version() -> str:
    """agendapy's installed version (``0.0.0`` when run from a source tree that is not installed)."""
    try:
        return version("agendapy")
    except PackageNotFoundError:
        return "0.0.0"


def worker_directory(
    store: Any, *, workers_collection: str, activity_collection: str
) -> WorkerDirectory | None:
    """Where ``store``'s workers register: a store that keeps its own (a ``worker_directory``
    attribute), collections beside MongoDB's jobs, tables beside PostgreSQL's; None for a store that
    keeps none (the in-memory store: its one process needs no list)."""
    own = getattr(type(store), "worker_directory", None)
    if own is not None:
        return cast(WorkerDirectory, store.worker_directory)
    if isinstance(store, MongoJobStore):
        return MongoWorkerDirectory(
            store.database,
            jobs_collection=store.collection.name,
            workers_collection=workers_collection,
            activity_collection=activity_collection,
        )
    if is_postgres_store(store):
        # Imported here: psycopg is there whenever a PostgreSQL store is.
        from .workers_postgres import PostgresWorkerDirectory

        return PostgresWorkerDirectory(
            store.pool,
            jobs_table=store.table,
            workers_table=postgres_table("workers_collection", workers_collection),
            activity_table=postgres_table("activity_collection", activity_collection),
        )
    return None


class WorkerRegistry:
    """One Agenda's view of the workers and activity of its store (MongoDB collections, PostgreSQL
    tables; a store without a directory, such as the in-memory one, lists no workers and registers
    none).

    Args:
        agenda: whose entry is kept (read through its public ``store``, ``connect``, ``name`` ...).
        events: the Agenda's emitter, tapped while registered to count finished runs.
        workers_collection: where started workers register themselves.
        activity_collection: the per-minute counters every worker's heartbeat adds to.
    """

    def __init__(
        self, agenda: Agenda, events: EventEmitter, *, workers_collection: str, activity_collection: str
    ) -> None:
        self._agenda = agenda
        self._events = events
        self._workers_collection = workers_collection
        self._activity_collection = activity_collection
        self._presence: WorkerPresence | None = None
        self._registering = False

    def _directory(self) -> WorkerDirectory | None:
        return worker_directory(
            self._agenda.store,
            workers_collection=self._workers_collection,
            activity_collection=self._activity_collection,
        )

    async def workers(self, *, include_stopped: bool) -> list[WorkerInfo]:
        """The registered workers (see ``Agenda.workers``)."""
        await self._agenda.connect()
        directory = self._directory()
        if directory is None:
            return []
        return await directory.workers(include_stopped=include_stopped)

    async def activity(self, minutes: int) -> list[dict[str, Any]]:
        """The fleet's last ``minutes`` minutes (see ``Agenda.activity``)."""
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 24 * 60:
            raise InvalidInput("minutes", minutes, "must be an int from 1 to 1440")
        await self._agenda.connect()
        directory = self._directory()
        if directory is None:
            return []
        return await directory.activity(minutes)

    async def create_tables(self) -> None:
        """Create PostgreSQL's workers and activity tables with the rest of the schema on connect (when
        the store creates its schema), so the deploy step that creates the schema creates them too and
        the workers may then run under a role without CREATE. A role that cannot create them gets a
        warning here, and the first worker start tries again (as before)."""
        store = self._agenda.store
        if not is_postgres_store(store) or not getattr(store, "creates_schema", False):
            return
        directory = self._directory()
        if directory is None:
            return
        try:
            await directory.ensure()
        except Exception as exc:
            log.warning("could not create the workers' and activity tables: %s", exc)

    def count_runs(self, *, every: timedelta) -> None:
        """Count this worker's finished runs from now on, before its first claim: runs of the first
        pass can end before ``register`` (a one-off job whose start its claim wrote ends after one
        write). ``register`` writes the entry with them."""
        directory = self._directory()
        if directory is None or self._presence is not None:
            return
        presence = WorkerPresence(self._agenda, directory, every=every, version=package_version())
        self._events.tap(presence.observe)
        self._presence = presence

    async def register(self, *, every: timedelta) -> None:
        """Write this worker's entry and refresh it every ``every`` until ``unregister`` (once)."""
        if self._presence is None:
            self.count_runs(every=every)
        presence = self._presence
        if presence is None or self._registering:
            return
        self._registering = True
        await presence.start()

    async def unregister(self, timeout: float = 1.0) -> None:
        """Mark this worker's entry stopped within ``timeout`` seconds (nothing to do when it is not
        registered)."""
        presence, self._presence = self._presence, None
        registered, self._registering = self._registering, False
        if presence is not None:
            self._events.untap(presence.observe)
            if not registered:
                return  # counting only: no entry was written
            await presence.stop(timeout)

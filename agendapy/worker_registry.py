"""The workers-list side of an ``Agenda``: its own entry while started, and reading the fleet's.

``Agenda.workers``, ``Agenda.activity`` and the presence kept between ``start()`` and the end of
processing delegate here; the documents themselves are ``agendapy.workers``' business.
"""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput
from .events import EventEmitter
from .store.mongo import MongoJobStore
from .workers import WorkerInfo, WorkerPresence, list_workers, recent_activity

if TYPE_CHECKING:
    from .agenda import Agenda

__all__ = ["WorkerRegistry", "package_version"]


def package_version() -> str:
    """agendapy's installed version (``0.0.0`` when run from a source tree that is not installed)."""
    try:
        return version("agendapy")
    except PackageNotFoundError:
        return "0.0.0"


class WorkerRegistry:
    """One Agenda's view of the workers and activity collections (MongoDB stores only: other stores
    list no workers and register none).

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

    def _mongo_store(self) -> MongoJobStore | None:
        store: Any = self._agenda.store
        return store if isinstance(store, MongoJobStore) else None

    async def workers(self, *, include_stopped: bool) -> list[WorkerInfo]:
        """The registered workers (see ``Agenda.workers``)."""
        await self._agenda.connect()
        store = self._mongo_store()
        if store is None:
            return []
        return await list_workers(
            store.database,
            jobs_collection=store.collection.name,
            workers_collection=self._workers_collection,
            include_stopped=include_stopped,
        )

    async def activity(self, minutes: int) -> list[dict[str, Any]]:
        """The fleet's last ``minutes`` minutes (see ``Agenda.activity``)."""
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 24 * 60:
            raise InvalidInput("minutes", minutes, "must be an int from 1 to 1440")
        await self._agenda.connect()
        store = self._mongo_store()
        if store is None:
            return []
        return await recent_activity(store.database[self._activity_collection], minutes=minutes)

    async def register(self, *, every: timedelta) -> None:
        """Write this worker's entry and refresh it every ``every`` until ``unregister`` (once)."""
        store = self._mongo_store()
        if store is None or self._presence is not None:
            return
        presence = WorkerPresence(
            self._agenda,
            store.database[self._workers_collection],
            activity=store.database[self._activity_collection],
            every=every,
            version=package_version(),
        )
        self._events.tap(presence.observe)
        self._presence = presence
        await presence.start()

    async def unregister(self) -> None:
        """Mark this worker's entry stopped (nothing to do when it is not registered)."""
        presence, self._presence = self._presence, None
        if presence is not None:
            self._events.untap(presence.observe)
            await presence.stop()

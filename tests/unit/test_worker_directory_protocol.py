"""A job store may bring its own worker directory: ``Agenda.workers()``/``activity()`` and the heartbeat
use it (the in-memory store has none and lists no workers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId

from agendapy import Agenda
from agendapy.testing import MemoryJobStore
from agendapy.workers import WorkerInfo


class _Directory:
    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.ensured = 0

    async def ensure(self) -> None:
        self.ensured += 1

    async def write(self, worker_id: ObjectId, doc: dict[str, Any]) -> None:
        self.entries[str(worker_id)] = doc

    async def add_activity(self, minute: datetime, *, done: int, failed: int, queued: int | None) -> None:
        pass

    async def workers(self, *, include_stopped: bool) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                id=key,
                name=str(doc["name"]),
                host=str(doc["host"]),
                pid=int(doc["pid"]),
                version="",
                started_at=None,
                last_seen=None,
                state="live" if doc["state"] == "running" else "stopped",
                heartbeat_every=1.0,
            )
            for key, doc in self.entries.items()
            if include_stopped or doc["state"] == "running"
        ]

    async def activity(self, minutes: int) -> list[dict[str, Any]]:
        return [{"minute": None, "done": 7, "failed": 0, "queued": None}]


class _StoreWithDirectory(MemoryJobStore):
    directory = _Directory()

    @property
    def worker_directory(self) -> _Directory:
        return self.directory


async def test_a_store_with_its_own_directory_registers_and_lists_workers() -> None:
    store = _StoreWithDirectory()
    agenda = Agenda(store, name="own-1", process_every=0.05)
    await agenda.start()
    try:
        assert [w.name for w in await agenda.workers()] == ["own-1"]
        assert (await agenda.activity(1))[0]["done"] == 7
        assert store.directory.ensured == 1
    finally:
        await agenda.close()
    assert [w.state for w in await agenda.workers(include_stopped=True)] == ["stopped"]


async def test_the_memory_store_lists_no_workers() -> None:
    agenda = Agenda(MemoryJobStore(), name="mem-1", process_every=0.05)
    await agenda.start()
    try:
        assert await agenda.workers() == []
        assert await agenda.activity(2) == []
    finally:
        await agenda.close()

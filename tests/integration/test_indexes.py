"""Indexes exist as documented, and (on mongod) every hot query is served by one.

SecantusDB, the test server here, plans every query as a collection scan (DESIGN.md section 9), so the
plan checks run only against a real mongod (AGENDAPY_TEST_MONGO_URL); the index definitions are
checked everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from agendapy import Agenda
from agendapy.job import Job
from agendapy.store.base import ClaimRequest
from agendapy.store.mongo import MongoJobStore
from agendapy.store.queries import BY_ID, CLAIM_SORT, claim_filter


async def test_indexes_are_created_on_connect(agenda: Agenda, client: Any, db_name: str) -> None:
    jobs = await client[db_name]["agendaJobs"].index_information()
    assert jobs["findAndLockNextJobIndex"]["key"] == [
        ("name", 1), ("nextRunAt", 1), ("priority", -1), ("lockedAt", 1), ("disabled", 1)
    ]  # fmt: skip
    assert jobs["agendapySingleJobName"]["unique"] is True
    runs = await client[db_name]["agendaRuns"].index_information()
    assert runs["agendapyIntervalKey"]["unique"] is True
    assert runs["agendapyRunsByName"]["key"] == [("name", 1), ("startedAt", -1)]
    assert "expireAfterSeconds" in runs["agendapyRunsTTL"]


def _stages(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for key in ("inputStage", "queryPlan"):
        if isinstance(plan.get(key), dict):
            out += _stages(plan[key])
    for child in plan.get("inputStages", []):
        out += _stages(child)
    return out


async def _explain(
    client: Any, db_name: str, collection: str, flt: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    command = {"find": collection, "filter": flt, **extra}
    result: dict[str, Any] = await client[db_name].command(
        {"explain": command, "verbosity": "executionStats"}
    )
    return result


@pytest.fixture
async def mongod_only(client: Any, db_name: str) -> None:
    probe = await client[db_name].command({"explain": {"find": "x", "filter": {}}})
    if probe.get("serverInfo", {}).get("host") == "secantus":
        pytest.skip("SecantusDB plans every query as a collection scan; run against a mongod to check plans")


@pytest.mark.usefixtures("mongod_only")
async def test_claim_query_is_an_index_scan(agenda: Agenda, client: Any, db_name: str) -> None:
    now = datetime.now(UTC)
    await agenda.insert_many(
        [
            agenda.create(f"name {i % 10}", {"i": i}).schedule(now + timedelta(minutes=i - 100))
            for i in range(2000)
        ]
    )
    request = ClaimRequest(
        names=["name 1", "name 2"],
        now=now,
        next_scan_at=now,
        lock_deadlines={"name 1": now - timedelta(minutes=10), "name 2": now - timedelta(minutes=10)},
        owner=None,
    )
    # The second find of a batch leaves out the candidates it already picked.
    picked = [ObjectId() for _ in range(20)]
    for flt in (claim_filter(request), claim_filter(request, exclude=picked)):
        explained = await _explain(client, db_name, "agendaJobs", flt, sort=dict(CLAIM_SORT), limit=20)
        stages = _stages(explained["queryPlanner"]["winningPlan"])
        assert all(stage["stage"] != "COLLSCAN" for stage in stages)
        assert any(stage.get("indexName") == "findAndLockNextJobIndex" for stage in stages)
    stats = explained["executionStats"]
    assert stats["nReturned"] == 20
    assert stats["totalDocsExamined"] <= 3 * stats["nReturned"]


@pytest.mark.usefixtures("mongod_only")
async def test_run_history_query_is_an_index_scan(agenda: Agenda, client: Any, db_name: str) -> None:
    explained = await _explain(client, db_name, "agendaRuns", {"name": "x"}, sort={"startedAt": -1}, limit=10)
    stages = _stages(explained["queryPlanner"]["winningPlan"])
    assert any(stage.get("indexName") == "agendapyRunsByName" for stage in stages)


class _Commands(monitoring.CommandListener):
    """The commands a client sends, by name."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_the_batched_lock_goes_by_id(mongo_url: str, db_name: str) -> None:
    """The batched lock names its documents by _id with no ``$or`` (a server may then plan the update
    by _id: SecantusDB scans the collection for an update whose filter has one), and its read-back
    names the _id index, which it finds them through."""
    commands = _Commands()
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_url, tz_aware=True, event_listeners=[commands])
    store = MongoJobStore(client, database=db_name, state_write_window=0)
    try:
        await store.connect()
        now = datetime.now(UTC)
        await store.insert_many(
            [Job(name="work", data={"i": i}, next_run_at=now - timedelta(minutes=1)) for i in range(5)],
            last_modified_by=None,
        )
        request = ClaimRequest(
            names=["work"],
            now=now,
            next_scan_at=now,
            lock_deadlines={"work": now - timedelta(minutes=10)},
            owner=None,
        )
        commands.sent.clear()
        assert len(await store.claim(request, "token-1", 3)) == 3
        locks = [
            statement
            for name, command in commands.sent
            if name == "update" and command["update"] == "agendaJobs"
            for statement in command["updates"]
        ]
        assert len(locks) == 1
        assert "$or" not in str(locks[0]["q"])
        assert "$in" in locks[0]["q"]["_id"]
        reads = [
            command for name, command in commands.sent if name == "find" and "lockToken" in command["filter"]
        ]
        assert len(reads) == 1
        assert dict(reads[0]["hint"]) == {"_id": 1}
        explained = await _explain(client, db_name, "agendaJobs", reads[0]["filter"], hint=dict(BY_ID))
        assert explained["executionStats"]["totalDocsExamined"] <= 3
    finally:
        await store.close()
        await client.close()

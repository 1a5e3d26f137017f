"""Building jobs and claim requests for the store contract suite, and writing stored documents as
another tool would (``insert_raw``/``raw_document``: the one backend-specific part)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from agendapy import Agenda, Job
from agendapy.schedule import utcnow
from agendapy.store.base import ClaimRequest, JobStore
from agendapy.store.mongo import MongoJobStore
from agendapy.store.postgres import PostgresJobStore
from agendapy.store.postgres.schema import COLUMNS, row_to_document
from agendapy.testing import MemoryJobStore

__all__ = [
    "MINUTE",
    "MakeAgenda",
    "MakeStore",
    "claim",
    "claim_request",
    "insert_raw",
    "job",
    "ms",
    "raw_document",
    "save",
    "utcnow",
]

MINUTE = timedelta(minutes=1)

#: ``make_store(**options)`` and ``make_agenda(**options)`` fixtures (see conftest.py).
MakeStore = Callable[..., Awaitable[JobStore]]
MakeAgenda = Callable[..., Awaitable[Agenda]]


def ms(value: datetime) -> datetime:
    """``value`` as a BSON date reads back: aware UTC, milliseconds."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def job(name: str = "work", data: Any = None, **fields: Any) -> Job:
    """A new job, due now unless ``next_run_at`` is given."""
    fields.setdefault("next_run_at", utcnow())
    return Job(name=name, data=data, **fields)


async def save(store: JobStore, item: Job, *, now: datetime | None = None, by: str | None = "tester") -> Job:
    """``save_job`` as the façade calls it."""
    await store.save_job(item, now=now or utcnow(), last_modified_by=by)
    return item


def claim_request(
    names: str | Sequence[str],
    *,
    now: datetime | None = None,
    window: timedelta = timedelta(0),
    lifetime: timedelta = 10 * MINUTE,
    deadlines: dict[str, datetime] | None = None,
    owner: str | None = "worker-1",
    per_name: dict[str, int] | None = None,
    start_due: bool = False,
    held: Sequence[str | None] = (),
) -> ClaimRequest:
    """A claim pass at ``now`` looking ``window`` ahead; locks older than ``lifetime`` count as expired;
    ``per_name``: each name's room in the batch; ``held``: the ids of the jobs the claimer holds."""
    name_list = [names] if isinstance(names, str) else list(names)
    at = now or utcnow()
    return ClaimRequest(
        names=name_list,
        now=at,
        next_scan_at=at + window,
        lock_deadlines=deadlines or {name: at - lifetime for name in name_list},
        owner=owner,
        per_name=per_name,
        start_due=start_due,
        held=frozenset(job_id for job_id in held if job_id is not None),
    )


async def claim(
    store: JobStore, names: str | Sequence[str], limit: int = 1, *, token: str | None = None, **options: Any
) -> list[Job]:
    """One claim pass with a fresh token."""
    return await store.claim(claim_request(names, **options), token or uuid.uuid4().hex, limit)


async def insert_raw(store: JobStore, doc: dict[str, Any]) -> str:
    """Write ``doc`` as another tool would, bypassing every check of agendapy; returns its id.

    On PostgreSQL the document becomes a row of Node's table: a value its column cannot hold (a
    string in an integer or date column, a row without a name) cannot be written there by any tool,
    so the test is skipped for that value, saying which.
    """
    if isinstance(store, PostgresJobStore):
        return await _insert_row(store, doc)
    doc = {"_id": ObjectId(), **doc}
    if isinstance(store, MongoJobStore):
        await store.collection.insert_one(doc)
    else:
        assert isinstance(store, MemoryJobStore)
        with store._lock:
            store._insert(doc)
    return str(doc["_id"])


async def raw_document(store: JobStore, job_id: str) -> dict[str, Any]:
    """The stored document of ``job_id`` as it is (on PostgreSQL: its row, as a document)."""
    if isinstance(store, PostgresJobStore):
        async with store.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                sql.SQL("SELECT * FROM {} WHERE id = %s").format(sql.Identifier(store.table)), [job_id]
            )
            row = await cur.fetchone()
        assert row is not None
        return row_to_document(row)
    if isinstance(store, MongoJobStore):
        found = await store.collection.find_one({"_id": ObjectId(job_id)})
        assert found is not None
        return found
    assert isinstance(store, MemoryJobStore)
    return next(doc for doc in store.documents() if str(doc["_id"]) == job_id)


#: What each kind of column of Node's table holds, as Python values (JSONB: anything).
_HOLDS: dict[str, Callable[[Any], bool]] = {
    "text": lambda v: isinstance(v, str),
    "interval": lambda v: isinstance(v, str),
    "type": lambda v: v in ("normal", "single"),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
    "real": lambda v: isinstance(v, float) and (math.isnan(v) or abs(v) < 3e38),
    "bool": lambda v: isinstance(v, bool),
    "date": lambda v: isinstance(v, datetime),
    "json": lambda v: True,
}


async def _insert_row(store: PostgresJobStore, doc: dict[str, Any]) -> str:
    if not isinstance(doc.get("name"), str):
        pytest.skip(f"PostgreSQL: the name column (VARCHAR NOT NULL) cannot hold {doc.get('name')!r}")
    values: dict[str, Any] = {}
    for column in COLUMNS:
        if column.field not in doc:
            continue
        value = doc[column.field]
        if value is not None and not _HOLDS[column.kind](value):
            pytest.skip(f"PostgreSQL: the {column.column} column ({column.kind}) cannot hold {value!r}")
        values[column.column] = Jsonb(value) if column.kind == "json" else value
    statement = sql.SQL("INSERT INTO {t} ({c}) VALUES ({v}) RETURNING id").format(
        t=sql.Identifier(store.table),
        c=sql.SQL(", ").join(map(sql.Identifier, values)),
        v=sql.SQL(", ").join(sql.Placeholder(c) for c in values),
    )
    async with store.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(statement, values)
        row = await cur.fetchone()
    assert row is not None
    return str(row["id"])

"""Saving jobs on PostgreSQL: Agenda's saveJob (update by id, every() upsert, unique()/debounce upsert,
plain insert, locked on the fly) and bulk inserts, by agendapy's rules (``agendapy.store.queries``).

A write that leaves a job claimable (unlocked, enabled, with a next run) announces it on the jobs
channel in Node's format (``notify.due_notes``), in the same transaction, so agendapy's and Node's
workers wake at once; polling stays the fallback.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql

from ...job import Job
from ...testing._mql import apply_update, check_filter, upsert_document
from ..common import absorb, document_to_save, leased
from ..queries import lock_fields, save_fields, single_update, unique_filter, unique_update
from . import notify
from .connection import PgPool, execute
from .filters import SqlFilter, as_uuid, unique_sql, user_filter_of
from .schema import COLUMNS, document_to_row, row_to_document, to_millis

__all__ = ["JobSaver"]

_ALL_COLUMNS = [c.column for c in COLUMNS]
_EMPTY = sql.SQL("")
#: Rows per statement of a bulk insert.
_BULK_CHUNK = 5000
#: The array type a bulk insert sends each kind of column as.
_ARRAY_TYPES = {
    "text": "text",
    "interval": "text",
    "type": "text",
    "int": "int4",
    "real": "float4",
    "bool": "bool",
    "date": "timestamptz",
    "json": "jsonb",
}
#: Attempts of an every() save racing another process's insert of the same name.
_SINGLE_ATTEMPTS = 3


class JobSaver:
    """The saving half of ``PostgresJobStore`` on one table (``channel``: where wake-ups go)."""

    def __init__(self, table: str, channel: str) -> None:
        self._table = sql.Identifier(table)
        self._table_name = table
        self._channel = channel

    async def _announce(self, conn: AsyncConnection[Any], docs: Sequence[dict[str, Any]]) -> None:
        """Wake the workers of the names these written rows made claimable (one note per name)."""
        source = next(
            (d.get("lastModifiedBy") for d in docs if isinstance(d.get("lastModifiedBy"), str)), None
        )
        await notify.publish(conn, notify.due_notes(self._channel, docs, source))

    async def save_job(
        self,
        pool: PgPool,
        job: Job,
        *,
        now: datetime,
        last_modified_by: str | None,
        lock_token: str | None = None,
    ) -> Job | None:
        """Agenda's saveJob: update by id, upsert a recurring or unique job, or insert (locked on the
        fly with ``lock_token``: the lock rides on the insert)."""
        doc = document_to_save(job, last_modified_by)
        document_to_row(doc)  # every value checked before anything is written
        props = save_fields(doc)
        if job.id is not None:
            job_id = as_uuid(job.id)
            if job_id is None:
                return None
            async with pool.connection() as conn:
                found = await self._update_row(conn, job_id, props, name=job.name)
            if found is not None:
                absorb(job, found)
            return None
        if job.type == "single":
            await self._save_single(pool, job, doc, props, now)
        elif job.unique_query is not None:
            await self._save_unique(pool, job, doc, now)
        else:
            locked_at = to_millis(now)
            if lock_token is not None:
                doc.update(lock_fields(locked_at, lock_token, last_modified_by))
            async with pool.connection() as conn:
                stored = await self._insert_row(conn, doc)
            job.id = stored["_id"]
            if lock_token is not None:
                return leased(stored, lock_token, locked_at)
        return None

    async def insert_many(self, pool: PgPool, jobs: Sequence[Job], *, last_modified_by: str | None) -> None:
        """Insert new one-off jobs: one statement per 5,000 (their columns as arrays, unnested), which
        also announces the names made claimable; one transaction. Sets each job's id (made here)."""
        if not jobs:
            return
        rows = [_full_row(document_to_save(job, last_modified_by)) for job in jobs]
        ids = [uuid.uuid4() for _ in jobs]
        written = [
            {**row_to_document(row), "_id": str(job_id)} for row, job_id in zip(rows, ids, strict=True)
        ]
        notes = notify.due_notes(self._channel, written, last_modified_by)
        async with pool.connection() as conn, conn.transaction():
            for start in range(0, len(rows), _BULK_CHUNK):
                chunk = rows[start : start + _BULK_CHUNK]
                params: list[Any] = [ids[start : start + _BULK_CHUNK]]
                params += [[row[column] for row in chunk] for column in _ALL_COLUMNS]
                last = start + _BULK_CHUNK >= len(rows)  # the notes go with the last chunk
                params += [[c for c, _ in notes] if last else [], [p for _, p in notes] if last else []]
                await conn.execute(self._bulk_insert(), params)
        for job, job_id in zip(jobs, ids, strict=True):
            job.id = str(job_id)

    def _bulk_insert(self) -> sql.Composed:
        arrays = [sql.SQL("%s::uuid[]")] + [
            sql.SQL("%s::{}[]").format(sql.SQL(_ARRAY_TYPES[c.kind])) for c in COLUMNS
        ]
        return sql.SQL(
            "WITH ins AS (INSERT INTO {t} ({cols}) SELECT * FROM unnest({arrays}) RETURNING 1)"
            " SELECT (SELECT count(*) FROM ins),"
            " (SELECT count(pg_notify(n.c, n.p)) FROM unnest(%s::text[], %s::text[]) AS n(c, p))"
        ).format(
            t=self._table,
            cols=sql.SQL(", ").join(map(sql.Identifier, ["id", *_ALL_COLUMNS])),
            arrays=sql.SQL(", ").join(arrays),
        )

    def _insert_statement(self, conflict: sql.Composable = _EMPTY) -> sql.Composed:
        return sql.SQL("INSERT INTO {t} ({cols}) VALUES ({vals}){conflict} RETURNING *").format(
            t=self._table,
            cols=sql.SQL(", ").join(map(sql.Identifier, _ALL_COLUMNS)),
            vals=sql.SQL(", ").join(sql.Placeholder(c) for c in _ALL_COLUMNS),
            conflict=conflict,
        )

    async def _insert_row(self, conn: AsyncConnection[Any], doc: dict[str, Any]) -> dict[str, Any]:
        """Insert one job and announce it if claimable, in one statement (one round trip: the
        notification is computed here, so the id is made here too, a random UUID as Node's)."""
        row = _full_row(doc)
        row["id"] = uuid.uuid4()
        written = {**doc, "_id": str(row["id"]), "nextRunAt": row["next_run_at"]}
        source = doc.get("lastModifiedBy") if isinstance(doc.get("lastModifiedBy"), str) else None
        notes = notify.due_notes(self._channel, [written], source)
        row["_channels"] = [channel for channel, _ in notes]
        row["_payloads"] = [payload for _, payload in notes]
        cur = await execute(conn, self._announced_insert(), row)
        inserted = await cur.fetchone()
        assert inserted is not None
        return row_to_document(inserted)

    def _announced_insert(self) -> sql.Composed:
        columns = ["id", *_ALL_COLUMNS]
        return sql.SQL(
            "WITH ins AS (INSERT INTO {t} ({cols}) VALUES ({vals}) RETURNING *)"
            " SELECT ins.*, (SELECT count(pg_notify(n.c, n.p))"
            " FROM unnest(%(_channels)s::text[], %(_payloads)s::text[]) AS n(c, p)) AS notified FROM ins"
        ).format(
            t=self._table,
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            vals=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
        )

    async def _update_row(
        self, conn: AsyncConnection[Any], job_id: Any, values: dict[str, Any], *, name: str | None = None
    ) -> dict[str, Any] | None:
        """``$set`` ``values`` on one row (only while it still holds ``name``, if given); the row after."""
        row_values = document_to_row(values)
        assignments: list[sql.Composable] = [
            sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in row_values
        ]
        sets = sql.SQL(", ").join(assignments or [sql.SQL("id = id")])
        where: sql.Composable = sql.SQL("id = %(_id)s")
        if name is not None:
            where += sql.SQL(" AND name = %(_name)s")
        statement = sql.SQL("UPDATE {t} SET {sets} WHERE {where} RETURNING *").format(
            t=self._table, sets=sets, where=where
        )
        cur = await execute(conn, statement, {**row_values, "_id": job_id, "_name": name})
        row = await cur.fetchone()
        if row is None:
            return None
        stored = row_to_document(row)
        await self._announce(conn, [stored])
        return stored

    async def _save_single(
        self, pool: PgPool, job: Job, doc: dict[str, Any], props: dict[str, Any], now: datetime
    ) -> None:
        # One row per recurring name: the unique index settles two processes inserting at once.
        insert = self._insert_statement(sql.SQL(" ON CONFLICT ((name)) WHERE type = 'single' DO NOTHING"))
        for _ in range(_SINGLE_ATTEMPTS):
            async with pool.connection() as conn, conn.transaction():
                cur = await execute(
                    conn,
                    sql.SQL(
                        "SELECT * FROM {t} WHERE name = %s AND type = 'single' LIMIT 1 FOR UPDATE"
                    ).format(t=self._table),
                    (job.name,),
                )
                existing = await cur.fetchone()
                if existing is None:
                    cur = await execute(conn, insert, _full_row(doc))
                    row = await cur.fetchone()
                    if row is None:
                        continue  # another process created it first; update that one
                    job.id = str(row["id"])
                    await self._announce(conn, [row_to_document(row)])
                    return
                stored = row_to_document(existing)
                update = single_update(stored, props, now)
                found = await self._update_row(conn, existing["id"], update["$set"])
                if found is not None:
                    absorb(job, found)
                    return
        raise RuntimeError(f"could not save recurring job {job.name!r}: it kept changing concurrently")

    async def _save_unique(self, pool: PgPool, job: Job, doc: dict[str, Any], now: datetime) -> None:
        query = unique_filter(job)
        with user_filter_of("unique", job.unique_query):
            check_filter(query)
        where = unique_sql(job.name, query)
        async with pool.connection() as conn, conn.transaction():
            # Saves of one name take turns, so two processes never both insert the same unique job.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (self._table_name, job.name)
            )
            existing = await self._first_match(conn, where)
            update = unique_update(job, doc, existing if job.debounce_options is not None else None, now)
            if existing is None:
                found = await self._insert_row(conn, upsert_document(query, update))
            else:
                new = dict(existing)
                apply_update(new, {k: v for k, v in update.items() if k != "$setOnInsert"})
                changed = {k: v for k, v in new.items() if k in update.get("$set", {})}
                found = existing
                if changed:
                    found = await self._update_row(conn, as_uuid(existing["_id"]), changed) or existing
        absorb(job, found)

    async def _first_match(self, conn: AsyncConnection[Any], where: SqlFilter) -> dict[str, Any] | None:
        cur = await execute(
            conn,
            sql.SQL("SELECT * FROM {t} WHERE {w} ORDER BY created_at, id FOR UPDATE").format(
                t=self._table, w=where.where
            ),
            where.params,
        )
        async for row in cur:
            doc = row_to_document(row)
            if where.keeps(doc):
                return doc
        return None


def _full_row(doc: dict[str, Any]) -> dict[str, Any]:
    """Every column for an INSERT: the document's values, NULL for fields it leaves out (Node's
    ``fork`` default kept), so all inserts share one statement (prepared once)."""
    row = dict.fromkeys(_ALL_COLUMNS)
    row["fork"] = False
    row.update(document_to_row(doc))
    if row["disabled"] is None:
        row["disabled"] = False
    return row

"""The claim statement reads through indexes: rows examined stay close to rows claimed, however many
other jobs the table holds (EXPLAIN ANALYZE on a real server, rolled back)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from psycopg.rows import dict_row

from agendapy.schedule import utcnow
from agendapy.store.base import ClaimRequest
from agendapy.store.postgres import PostgresJobStore
from agendapy.store.postgres.claims import claim_params, claim_statement

#: Jobs in the table besides the few due ones: finished one-offs and future runs of many names.
OTHER_ROWS = 30_000
DUE = 5


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def test_the_claim_uses_indexes_and_examines_about_the_rows_it_claims(pg_url: str) -> None:
    store = PostgresJobStore(pg_url)
    await store.connect()
    try:
        now = utcnow()
        async with store.pool.connection() as conn:
            # Many other names, their rows finished (no next run) or due (before and after "mail"), a
            # few locked by a live worker (not expired); and DUE rows of "mail", due now.
            await conn.execute(
                "INSERT INTO agenda_jobs (name, next_run_at, locked_at, data)"
                " SELECT 'name' || (i %% 50),"
                "  CASE WHEN i %% 3 = 0 THEN NULL ELSE %(now)s + ((i %% 200 - 100) || ' minutes')::interval END,"
                "  CASE WHEN i %% 1000 = 0 THEN %(now)s END, jsonb_build_object('i', i)"
                " FROM generate_series(1, %(n)s) AS i",
                {"now": now, "n": OTHER_ROWS},
            )
            await conn.execute(
                "INSERT INTO agenda_jobs (name, next_run_at) SELECT 'mail', %s FROM generate_series(1, %s)",
                (now - timedelta(seconds=1), DUE),
            )
            await conn.execute("ANALYZE agenda_jobs")

            names = ["mail", "idle"]
            request = ClaimRequest(
                names=names,
                now=now,
                next_scan_at=now,
                lock_deadlines=dict.fromkeys(names, now - timedelta(minutes=10)),
                owner="w1",
            )
            params = claim_params(request, uuid.uuid4().hex, 10)
            assert params is not None
            cur = conn.cursor(row_factory=dict_row)
            async with conn.transaction(force_rollback=True):
                await cur.execute(
                    b"EXPLAIN (ANALYZE, FORMAT JSON) " + claim_statement("agenda_jobs").as_bytes(conn), params
                )
                row = await cur.fetchone()
        assert row is not None
        plan = row["QUERY PLAN"]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        root = plan[0]["Plan"]
        scans = [
            n for n in nodes(root) if n.get("Relation Name") == "agenda_jobs" and "Scan" in n["Node Type"]
        ]
        assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), [n["Node Type"] for n in scans]
        examined = sum(
            n["Actual Rows"] * n.get("Actual Loops", 1) + n.get("Rows Removed by Filter", 0)
            + n.get("Rows Removed by Index Recheck", 0)
            for n in scans
        )  # fmt: skip
        claimed = root["Actual Rows"]
        assert claimed == DUE
        # Rows examined close to rows returned (not the 30,000 others, nor the name's future runs).
        assert examined <= claimed + 40, json.dumps(root, indent=1)[:4000]
    finally:
        await store.close()

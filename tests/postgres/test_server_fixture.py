"""The PostgreSQL the tests run against is real, reachable over TCP, and gives each test its own database."""

from __future__ import annotations

import psycopg


async def test_each_test_gets_its_own_empty_database_on_a_real_server(pg_url: str, db_name: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        row = await (await conn.execute("SELECT current_database(), inet_server_addr()::text")).fetchone()
        assert row is not None
        assert row[0] == db_name
        assert row[1].startswith("127.0.0.1")  # TCP on loopback, not a socket
        tables = await (
            await conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        ).fetchone()
        assert tables == (0,)

"""The pool's session reset (chatsdk/sessionreset.py), on a real PostgreSQL: a connection that
was not marked gets asyncpg's full reset, a marked one skips it once, and an open transaction
is rolled back either way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from chatsdk.sessionreset import MarkableConnection, reset_session


def _with_pool(database_url: str, body: Callable[[Any], Awaitable[None]]) -> None:
    async def main() -> None:
        # One connection, so every acquisition gets the one released before.
        pool = await asyncpg.create_pool(
            database_url,
            min_size=1,
            max_size=1,
            connection_class=MarkableConnection,
            reset=reset_session,
        )
        try:
            await body(pool)
        finally:
            await pool.close()

    asyncio.run(main())


def test_an_unmarked_connection_gets_the_full_reset(database_url: str) -> None:
    async def body(pool: Any) -> None:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'left behind'")
            await conn.execute("SELECT pg_advisory_lock(4242)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == ""
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"
            )
            assert held == 0

    _with_pool(database_url, body)


def test_a_marked_connection_skips_the_reset_once(database_url: str) -> None:
    async def body(pool: Any) -> None:
        async with pool.acquire() as conn:
            # A lie, so the skip can be seen: the state the reset would have undone stays.
            await conn.execute("SET application_name = 'kept'")
            conn.mark_stateless()
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "kept"
        # The mark was spent: this release resets again.
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == ""

    _with_pool(database_url, body)


def test_a_marked_connection_still_has_its_open_transaction_rolled_back(
    database_url: str,
) -> None:
    async def body(pool: Any) -> None:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TABLE never_committed (id int)")
            conn.mark_stateless()
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT to_regclass('never_committed')") is None

    _with_pool(database_url, body)

"""The pool's session reset, skipped once for a connection its user marked as left unchanged.

When a connection goes back to the pool, asyncpg rolls back an open transaction and then sends
`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;`, one more round trip to
PostgreSQL per acquisition: two for every sent message (the token check and the send). A
connection that ran only plain statements (no `SET`, no session-level advisory lock, no
`LISTEN`, no cursor kept open) has nothing for that query to undo. The hot paths say so where
the reader can check it: `mark_stateless()` as the last step of their block, reached only when
every statement before it succeeded. `reset_session`, the pool's reset, skips the query for a
marked connection, once; every other release gets the full reset as before. asyncpg's own
rollback of an open transaction and its clearing of listeners run first either way.
"""

from __future__ import annotations

import asyncpg


class MarkableConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection whose user can say it left no session state behind (see the module)."""

    stateless = False

    def mark_stateless(self) -> None:
        """Only plain statements ran on this connection since it was acquired."""
        self.stateless = True


async def reset_session(conn: asyncpg.Connection) -> None:
    """The pool's `reset=`: asyncpg's reset query, unless the connection was marked."""
    if getattr(conn, "stateless", False):
        conn.stateless = False
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)

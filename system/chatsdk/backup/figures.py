"""What a backup records about the database it copied, and what a restore is checked against:
the rows of every table, an ordered digest of the messages, and the live uploads. Read inside one
transaction, so all three describe the same snapshot."""

from __future__ import annotations

import hashlib
import json
from typing import Any

TABLES_SQL = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
# Every message in a stable order, with what it says and who said it.
MESSAGES_SQL = "SELECT channel_id, seq, id, user_id, text FROM messages ORDER BY channel_id, seq"
UPLOADS_SQL = (
    "SELECT id, storage_key, sha256, size FROM uploads WHERE deleted_at IS NULL ORDER BY id"
)
DIGEST_PREFETCH = 1000


async def table_rows(conn: Any) -> dict[str, int]:
    """Rows per table of the public schema."""
    rows: dict[str, int] = {}
    for record in await conn.fetch(TABLES_SQL):
        name = str(record["tablename"])
        quoted = await conn.fetchval("SELECT quote_ident($1)", name)
        # The name comes from the catalogue and is quoted by the server's quote_ident.
        sql = f"SELECT count(*) FROM public.{quoted}"  # noqa: S608
        rows[name] = int(await conn.fetchval(sql))
    return rows


async def messages_digest(conn: Any) -> tuple[str, int]:
    """sha256 over every message (channel, seq, id, author, text) in (channel, seq) order, and
    how many there were. Call inside a transaction (a cursor needs one)."""
    digest = hashlib.sha256()
    count = 0
    async for r in conn.cursor(MESSAGES_SQL, prefetch=DIGEST_PREFETCH):
        line = [r["channel_id"], r["seq"], r["id"], r["user_id"], r["text"]]
        digest.update(json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode())
        digest.update(b"\n")
        count += 1
    return digest.hexdigest(), count


async def live_uploads(conn: Any) -> list[dict[str, Any]]:
    return [
        {
            "upload_id": r["id"],
            "key": r["storage_key"],
            "sha256": r["sha256"],
            "size": int(r["size"]),
        }
        for r in await conn.fetch(UPLOADS_SQL)
    ]


async def schema_version(conn: Any) -> int | None:
    exists = await conn.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    if not exists:
        return None
    version = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    return None if version is None else int(version)


async def read_all(conn: Any) -> dict[str, Any]:
    """All figures, in the caller's transaction."""
    digest, messages = await messages_digest(conn)
    return {
        "rows": await table_rows(conn),
        "messages_digest": digest,
        "messages": messages,
        "uploads": await live_uploads(conn),
        "schema_version": await schema_version(conn),
    }

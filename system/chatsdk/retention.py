"""Data retention: how long the service keeps what it stores, and the job that deletes the rest.

The policy (CHATSDK_RETENTION_* settings; days, 0 keeps that data for ever):

- messages: RETENTION_MESSAGES_DAYS (2557, seven years) after sending, their content is
  deleted: text and client id set NULL, reactions, poll and attachment links deleted. The row
  stays as a tombstone, so channels keep their gap-free seq.
- uploads: RETENTION_UPLOADS_DAYS (2557) after upload, marked deleted (filename and hash cleared)
  and their bytes purged from storage.
- refresh tokens: deleted once expired.
- idempotency keys: deleted after 24 hours (a retry after a day is a new request).
- webhook deliveries: deleted 30 days after they were created, once delivered or failed.
- failed authentication kept in PostgreSQL while Redis was down (auththrottle.py): deleted once
  older than AUTH_THROTTLE_WINDOW.

Published outbox rows are pruned after an hour by the drainer, and erased users' content goes at
erasure (gdpr.py). The job runs in every API worker every RETENTION_INTERVAL seconds (one worker
at a time, under an advisory lock) and on demand with `python -m chatsdk.retention`, which
prints the policy and what it deleted as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web

from chatsdk import auththrottle, db
from chatsdk.background import stop_task
from chatsdk.errors import ApiError, SettingsError
from chatsdk.keys import SETTINGS
from chatsdk.settings import Settings
from chatsdk.storage import STORAGE, Storage, StorageError, storage_from_settings
from chatsdk.uploads import purge_batch, purge_finished

log = logging.getLogger("chatsdk.retention")

routes = web.RouteTableDef()

IDEMPOTENCY_HOURS = 24
WEBHOOK_DELIVERY_DAYS = 30
BATCH = 5000
LOCK_ID = 0x43_48_41_54_52_45_54  # "CHATRET": one retention run at a time, across workers
CONNECT_TIMEOUT_S = 10.0
STATEMENT_TIMEOUT_S = 60.0

EXPIRE_MESSAGES = """
WITH expired AS (
    SELECT id FROM messages
    WHERE created_at < now() - make_interval(days => $1)
      AND (text IS NOT NULL OR client_msg_id IS NOT NULL
           OR EXISTS (SELECT 1 FROM reactions r WHERE r.message_id = messages.id)
           OR EXISTS (SELECT 1 FROM message_uploads mu WHERE mu.message_id = messages.id)
           OR EXISTS (SELECT 1 FROM polls p WHERE p.message_id = messages.id))
    ORDER BY created_at LIMIT $2
    FOR UPDATE SKIP LOCKED
), reactions_gone AS (
    DELETE FROM reactions r USING expired e WHERE r.message_id = e.id RETURNING 1
), polls_gone AS (
    DELETE FROM polls p USING expired e WHERE p.message_id = e.id RETURNING 1
), links_gone AS (
    DELETE FROM message_uploads mu USING expired e WHERE mu.message_id = e.id RETURNING 1
), tombstoned AS (
    UPDATE messages m SET text = NULL, client_msg_id = NULL,
        deleted_at = coalesce(m.deleted_at, now())
    FROM expired e WHERE m.id = e.id RETURNING 1
)
SELECT (SELECT count(*) FROM tombstoned) AS messages,
       (SELECT count(*) FROM reactions_gone) AS reactions,
       (SELECT count(*) FROM polls_gone) AS polls
"""

EXPIRE_UPLOADS = """
WITH expired AS (
    SELECT id FROM uploads
    WHERE deleted_at IS NULL AND created_at < now() - make_interval(days => $1)
    ORDER BY created_at LIMIT $2
    FOR UPDATE SKIP LOCKED
), links_gone AS (
    DELETE FROM message_uploads mu USING expired e WHERE mu.upload_id = e.id RETURNING 1
)
UPDATE uploads u SET deleted_at = now(), filename = NULL, sha256 = ''
FROM expired e WHERE u.id = e.id
"""

SIMPLE = {
    "refresh_tokens": "DELETE FROM refresh_tokens WHERE expires_at < now()",
    "idempotency_keys": (
        "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'"
    ),
    "webhook_deliveries": (
        "DELETE FROM webhook_deliveries WHERE status IN ('delivered', 'failed') "
        "AND created_at < now() - interval '30 days'"
    ),
}


def policy(settings: Settings) -> dict[str, Any]:
    """The policy in force, per data type (days; 0: kept for ever)."""
    return {
        "messages_days": settings.retention_messages_days,
        "uploads_days": settings.retention_uploads_days,
        "refresh_tokens": "until expiry",
        "idempotency_keys_hours": IDEMPOTENCY_HOURS,
        "webhook_deliveries_days": WEBHOOK_DELIVERY_DAYS,
        "auth_failures_s": settings.auth_throttle_window,
        "interval_s": settings.retention_interval,
    }


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1]) if status and status[-1].isdigit() else 0


async def purge_uploads(conn: Any, storage: Storage) -> int:
    """Bytes of deleted uploads out of storage (the same work as the uploads sweeper)."""
    purged = 0
    while True:
        looked_at, done = await purge_batch(conn, storage)
        purged += done
        if purge_finished(looked_at, done):
            return purged


async def apply(conn: Any, storage: Storage, settings: Settings) -> dict[str, int]:
    """One pass of the policy over the whole database; returns what it deleted."""
    deleted = dict.fromkeys(("messages", "reactions", "polls", "uploads"), 0)
    if settings.retention_messages_days > 0:
        while True:
            row = await conn.fetchrow(EXPIRE_MESSAGES, settings.retention_messages_days, BATCH)
            for key in ("messages", "reactions", "polls"):
                deleted[key] += int(row[key])
            if row["messages"] < BATCH:
                break
    if settings.retention_uploads_days > 0:
        while True:
            count = _count(
                await conn.execute(EXPIRE_UPLOADS, settings.retention_uploads_days, BATCH)
            )
            deleted["uploads"] += count
            if count < BATCH:
                break
    for name, sql in SIMPLE.items():
        deleted[name] = _count(await conn.execute(sql))
    deleted["auth_failures"] = _count(
        await conn.execute(auththrottle.PRUNE_SQL, settings.auth_throttle_window)
    )
    deleted["upload_bytes_purged"] = await purge_uploads(conn, storage)
    return deleted


async def run_once(conn: Any, storage: Storage, settings: Settings, *, wait: bool) -> Any:
    """Apply the policy under the advisory lock; None when another run holds it and `wait` is
    false."""
    if wait:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    elif not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_ID):
        return None
    try:
        t0 = time.monotonic()
        deleted = await apply(conn, storage, settings)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    result = {
        "policy": policy(settings),
        "deleted": deleted,
        "duration_s": round(time.monotonic() - t0, 3),
    }
    if any(deleted.values()):
        log.info("retention applied", extra={"fields": {"deleted": deleted}})
    return result


async def retention_context(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_loop(app), name="chatsdk-retention")
    yield
    await stop_task(task)


async def _loop(app: web.Application) -> None:
    settings = app[SETTINGS]
    while True:
        await asyncio.sleep(settings.retention_interval * random.uniform(0.8, 1.2))  # noqa: S311
        try:
            async with db.pool(app).acquire() as conn:
                await run_once(conn, app[STORAGE], settings, wait=False)
        except (ApiError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("retention skipped: %s", type(exc).__name__)
        except Exception:
            log.exception("retention failed")


cleanup_contexts = [retention_context]


async def _main(settings: Settings) -> dict[str, Any]:
    conn = await asyncpg.connect(
        settings.database_url, timeout=CONNECT_TIMEOUT_S, command_timeout=STATEMENT_TIMEOUT_S
    )
    storage = storage_from_settings(settings)
    try:
        result: dict[str, Any] = await run_once(conn, storage, settings, wait=True)
    finally:
        await storage.close()
        await conn.close()
    return result


def main() -> int:
    """`python -m chatsdk.retention`: apply the policy once; prints it and what was deleted."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"chatsdk.retention: invalid settings: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_main(settings))
    except (OSError, asyncpg.PostgresError, StorageError) as exc:
        print(f"chatsdk.retention: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

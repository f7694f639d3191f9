"""GDPR: a user's export of everything stored about them, and erasure by the app's backend.

Erasure, decided:
- In one transaction: the profile is anonymised (name and avatar NULL, erased_at set; the row
  stays so the id cannot be re-registered and tokens minted for it fail), every message of the
  user is tombstoned (text and client_msg_id NULL), polls they created are deleted (question and
  options are their text), their reactions and poll votes are deleted (a vote can be as telling
  as a message), memberships, refresh tokens and idempotency keys are deleted, uploads are
  marked deleted (filename and hash cleared), the token version is bumped (open sockets close
  with 4401 via the outbox), and events still held in the outbox or in webhook deliveries are
  redacted where they carry the user's content.
- After the commit: the upload bytes are deleted from storage (`purged_at` marks success; the
  uploads sweeper finishes what a failure left, and repeating the DELETE is safe), and every
  Redis key naming the user (membership cache, rate-limit buckets, ...) is deleted. Those keys
  all expire within a minute by themselves, so a Redis outage during erasure delays, but does not
  prevent, their disappearance; the answer is 204 either way.
- What stays: the user id on tombstoned rows (an opaque id chosen by the app's backend, needed
  so that channels keep their seq sequence and threads their shape), sizes and types of deleted
  uploads, and the fact that an erasure happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from chatsdk import db, outbox, ratelimit
from chatsdk.audit import audit
from chatsdk.auth import require_app, require_user
from chatsdk.errors import not_found
from chatsdk.tokens import revoke_user_tokens
from chatsdk.uploads import purge_deleted
from chatsdk.validation import path_id

log = logging.getLogger("chatsdk.gdpr")

routes = web.RouteTableDef()

REDIS_ERASE_TIMEOUT = 5.0
EXPORT_PREFETCH = 500
# Fields that hold what a person wrote, reacted with or is called, wherever an event carries
# them (a reaction is as telling as a message: the reaction rows go, so do their events' emoji).
PERSONAL_KEYS = frozenset(
    {"text", "name", "avatar_url", "filename", "question", "user_name", "display_name", "emoji"}
)
# Fields that say whose object a JSON object is.
OWNER_KEYS = frozenset({"user_id", "created_by", "author_id", "sender_id"})


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


async def _export_sections(conn: Any, app_id: str, user_id: str) -> dict[str, Any]:
    profile = await conn.fetchrow(
        "SELECT id, name, avatar_url, created_at, token_version FROM users "
        "WHERE app_id = $1 AND id = $2",
        app_id,
        user_id,
    )
    memberships = await conn.fetch(
        "SELECT c.id, c.name, c.kind, c.created_at, c.created_by = $2 AS created_by_me, "
        "m.role, m.joined_at, m.last_read_seq, c.last_seq "
        "FROM channel_members m JOIN channels c ON c.id = m.channel_id "
        "WHERE m.app_id = $1 AND m.user_id = $2 AND c.app_id = $1 ORDER BY c.id",
        app_id,
        user_id,
    )
    reactions = await conn.fetch(
        "SELECT r.message_id, m.channel_id, m.seq, r.emoji, r.created_at "
        "FROM reactions r JOIN messages m ON m.id = r.message_id "
        "WHERE r.user_id = $2 AND m.app_id = $1 ORDER BY r.created_at",
        app_id,
        user_id,
    )
    votes = await conn.fetch(
        "SELECT v.poll_id, p.channel_id, v.option_id, o.text AS option_text, v.voted_at "
        "FROM poll_votes v JOIN polls p ON p.id = v.poll_id "
        "JOIN poll_options o ON o.poll_id = v.poll_id AND o.id = v.option_id "
        "WHERE v.user_id = $2 AND p.app_id = $1 ORDER BY v.voted_at",
        app_id,
        user_id,
    )
    polls = await conn.fetch(
        "SELECT p.id, p.channel_id, p.message_id, p.question, p.multiple, p.created_at, "
        "coalesce((SELECT array_agg(o.text ORDER BY o.position) FROM poll_options o "
        "WHERE o.poll_id = p.id), '{}') AS options "
        "FROM polls p WHERE p.app_id = $1 AND p.created_by = $2 ORDER BY p.created_at",
        app_id,
        user_id,
    )
    uploads = await conn.fetch(
        "SELECT id, size, content_type, sha256, filename, created_at, deleted_at FROM uploads "
        "WHERE app_id = $1 AND user_id = $2 ORDER BY created_at",
        app_id,
        user_id,
    )
    sessions = await conn.fetch(
        "SELECT expires_at, used_at FROM refresh_tokens "
        "WHERE app_id = $1 AND user_id = $2 ORDER BY expires_at",
        app_id,
        user_id,
    )
    idempotency = await conn.fetch(
        "SELECT key, status, created_at FROM idempotency_keys "
        "WHERE app_id = $1 AND user_id = $2 ORDER BY created_at",
        app_id,
        user_id,
    )
    return {
        "format": "chatsdk-export/1",
        "generated_at": datetime.now(UTC).isoformat(),
        "app_id": app_id,
        "profile": {
            "user_id": profile["id"],
            "name": profile["name"],
            "avatar_url": profile["avatar_url"],
            "created_at": profile["created_at"],
        },
        "channels": [
            {
                "channel_id": r["id"],
                "name": r["name"],
                "kind": r["kind"],
                "role": r["role"],
                "created_by_me": r["created_by_me"],
                "joined_at": r["joined_at"],
            }
            for r in memberships
        ],
        "read_state": [
            {
                "channel_id": r["id"],
                "last_read_seq": r["last_read_seq"],
                "unread": max(0, r["last_seq"] - r["last_read_seq"]),
            }
            for r in memberships
        ],
        "reactions": [
            {
                "message_id": r["message_id"],
                "channel_id": r["channel_id"],
                "seq": r["seq"],
                "emoji": r["emoji"],
                "created_at": r["created_at"],
            }
            for r in reactions
        ],
        "votes": [
            {
                "poll_id": r["poll_id"],
                "channel_id": r["channel_id"],
                "option_id": r["option_id"],
                "option_text": r["option_text"],
                "voted_at": r["voted_at"],
            }
            for r in votes
        ],
        "polls_created": [
            {
                "poll_id": r["id"],
                "channel_id": r["channel_id"],
                "message_id": r["message_id"],
                "question": r["question"],
                "options": list(r["options"]),
                "multiple": r["multiple"],
                "created_at": r["created_at"],
            }
            for r in polls
        ],
        "uploads": [
            {
                "upload_id": r["id"],
                "size": r["size"],
                "content_type": r["content_type"],
                "sha256": r["sha256"],
                "filename": r["filename"],
                "created_at": r["created_at"],
                "deleted_at": r["deleted_at"],
                "download_path": None if r["deleted_at"] else f"/v1/uploads/{r['id']}",
            }
            for r in uploads
        ],
        "sessions": [{"expires_at": r["expires_at"], "used_at": r["used_at"]} for r in sessions],
        "idempotency_keys": [
            {"key": r["key"], "status": r["status"], "created_at": r["created_at"]}
            for r in idempotency
        ],
    }


MESSAGES_SQL = """
SELECT m.id, m.channel_id, m.seq, m.kind, m.text, m.parent_id, m.client_msg_id, m.created_at,
       m.edited_at, m.deleted_at,
       coalesce((SELECT array_agg(mu.upload_id ORDER BY mu.upload_id) FROM message_uploads mu
                 WHERE mu.message_id = m.id), '{}') AS upload_ids
FROM messages m
WHERE m.app_id = $1 AND m.user_id = $2
ORDER BY m.channel_id, m.seq
"""


@routes.get("/v1/me/export")
async def export(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    await ratelimit.limit(request, user, "default")
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Content-Disposition": 'attachment; filename="chatsdk-export.json"',
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    # One snapshot for the whole archive; messages are streamed from a cursor, so an export of
    # a very active user never sits in memory whole.
    async with (
        db.pool(request).acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        sections = await _export_sections(conn, user.app_id, user.user_id)
        await response.prepare(request)
        await response.write(_dumps(sections)[:-1].encode() + b',"messages":[')
        first = True
        batch: list[bytes] = []
        async for r in conn.cursor(
            MESSAGES_SQL, user.app_id, user.user_id, prefetch=EXPORT_PREFETCH
        ):
            message = {
                "message_id": r["id"],
                "channel_id": r["channel_id"],
                "seq": r["seq"],
                "kind": r["kind"],
                "text": r["text"],
                "parent_id": r["parent_id"],
                "client_msg_id": r["client_msg_id"],
                "upload_ids": list(r["upload_ids"]),
                "created_at": r["created_at"],
                "edited_at": r["edited_at"],
                "deleted_at": r["deleted_at"],
            }
            batch.append((b"" if first else b",") + _dumps(message).encode())
            first = False
            if len(batch) >= EXPORT_PREFETCH:
                await response.write(b"".join(batch))
                batch.clear()
        batch.append(b"]}")
        await response.write(b"".join(batch))
    await response.write_eof()
    audit("user.export", f"user:{user.user_id}", user.user_id, app_id=user.app_id)
    return response


def _redact(value: Any, user_id: str, name: str | None, owned: bool = False) -> Any:
    """`value` without the user's content: personal fields of objects the user owns, and any
    string equal to their name."""
    if isinstance(value, dict):
        mine = owned or any(value.get(k) == user_id for k in OWNER_KEYS)
        return {
            k: None if mine and k in PERSONAL_KEYS else _redact(v, user_id, name, mine)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v, user_id, name, owned) for v in value]
    if isinstance(value, str) and name and value == name:
        return None
    return value


def _needles(user_id: str, name: str | None) -> list[str]:
    # As they appear in jsonb's text form: the id as a JSON string, the name JSON-escaped.
    found = [json.dumps(user_id)]
    if name:
        found.append(json.dumps(name, ensure_ascii=False)[1:-1])
    return found


async def _redact_events(conn: Any, app_id: str, user_id: str, name: str | None) -> None:
    """Events still stored (the outbox keeps published rows for an hour; webhook deliveries
    keep their payload) lose the user's content. The outbox first: a drainer holding those rows
    makes us wait, and the deliveries it created are then visible to the second statement.
    These scans are not indexed: erasure is rare and both tables are pruned."""
    needles = _needles(user_id, name)
    rows = await conn.fetch(
        "SELECT id, data::text AS data, user_id FROM outbox WHERE app_id = $1 "
        "AND (user_id = $2 OR EXISTS (SELECT 1 FROM unnest($3::text[]) n "
        "WHERE strpos(data::text, n) > 0)) FOR UPDATE",
        app_id,
        user_id,
        needles,
    )
    for row in rows:
        data = _redact(json.loads(row["data"]), user_id, name, row["user_id"] == user_id)
        await conn.execute(
            "UPDATE outbox SET data = $2::jsonb WHERE id = $1", row["id"], _dumps(data)
        )
    deliveries = await conn.fetch(
        "SELECT d.id, d.payload::text AS payload FROM webhook_deliveries d "
        "JOIN webhooks w ON w.id = d.webhook_id WHERE w.app_id = $1 "
        "AND EXISTS (SELECT 1 FROM unnest($2::text[]) n WHERE strpos(d.payload::text, n) > 0) "
        "FOR UPDATE OF d",
        app_id,
        needles,
    )
    for row in deliveries:
        payload = _redact(json.loads(row["payload"]), user_id, name)
        await conn.execute(
            "UPDATE webhook_deliveries SET payload = $2::jsonb WHERE id = $1",
            row["id"],
            _dumps(payload),
        )


async def _erase_rows(conn: Any, app_id: str, user_id: str, name: str | None) -> list[str]:
    """Everything in PostgreSQL; returns the channels the user left."""
    left = await conn.fetch(
        "DELETE FROM channel_members WHERE app_id = $1 AND user_id = $2 RETURNING channel_id",
        app_id,
        user_id,
    )
    await _redact_events(conn, app_id, user_id, name)
    await conn.execute(
        "UPDATE messages SET text = NULL, client_msg_id = NULL, "
        "deleted_at = coalesce(deleted_at, now()) WHERE app_id = $1 AND user_id = $2",
        app_id,
        user_id,
    )
    await conn.execute("DELETE FROM polls WHERE app_id = $1 AND created_by = $2", app_id, user_id)
    await conn.execute(
        "DELETE FROM reactions r USING messages m "
        "WHERE r.message_id = m.id AND m.app_id = $1 AND r.user_id = $2",
        app_id,
        user_id,
    )
    await conn.execute(
        "DELETE FROM poll_votes v USING polls p "
        "WHERE v.poll_id = p.id AND p.app_id = $1 AND v.user_id = $2",
        app_id,
        user_id,
    )
    await conn.execute(
        "DELETE FROM message_uploads mu USING uploads u "
        "WHERE mu.upload_id = u.id AND u.app_id = $1 AND u.user_id = $2",
        app_id,
        user_id,
    )
    await conn.execute(
        "UPDATE uploads SET deleted_at = coalesce(deleted_at, now()), filename = NULL, "
        "sha256 = '' WHERE app_id = $1 AND user_id = $2",
        app_id,
        user_id,
    )
    await revoke_user_tokens(conn, app_id, user_id)
    await conn.execute(
        "DELETE FROM refresh_tokens WHERE app_id = $1 AND user_id = $2", app_id, user_id
    )
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE app_id = $1 AND user_id = $2", app_id, user_id
    )
    await conn.execute(
        "UPDATE users SET name = NULL, avatar_url = NULL, erased_at = coalesce(erased_at, now()) "
        "WHERE app_id = $1 AND id = $2",
        app_id,
        user_id,
    )
    channel_ids = [str(r["channel_id"]) for r in left]
    for channel_id in channel_ids:
        await outbox.emit(
            conn,
            app_id,
            "member.left",
            {"channel_id": channel_id, "user_id": user_id, "reason": "erased"},
            channel_id=channel_id,
        )
    return channel_ids


def _names_user(key: str, user_id: str) -> bool:
    # The id as a whole segment of the key (keys are built like member:<channel>:<user>), so
    # erasing "user1" leaves the keys of "user10" alone.
    return re.search(rf"(?:^|[:{{}}|/]){re.escape(user_id)}(?:$|[:{{}}|/])", key) is not None


async def forget_in_redis(app: web.Application, user_id: str) -> int:
    """Delete every Redis key that names the user; returns how many were deleted."""
    redis = db.redis(app)
    deleted = 0
    batch: list[bytes] = []
    # Ids are [A-Za-z0-9_.:@-]: nothing in them is a glob metacharacter.
    async with asyncio.timeout(REDIS_ERASE_TIMEOUT):
        async for key in redis.scan_iter(match=f"*{user_id}*", count=1000):
            if _names_user(key.decode(errors="replace"), user_id):
                batch.append(key)
            if len(batch) >= 500:
                deleted += int(await redis.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(await redis.unlink(*batch))
    return deleted


@routes.delete("/v1/users/{user_id}")
async def erase(request: web.Request) -> web.Response:
    app_id = await require_app(request)
    user_id = path_id(request, "user_id")
    async with db.transaction(request) as conn:
        row = await conn.fetchrow(
            "SELECT name FROM users WHERE app_id = $1 AND id = $2 FOR UPDATE", app_id, user_id
        )
        if row is None:
            raise not_found("user")
        await _erase_rows(conn, app_id, user_id, row["name"])
    outbox.wake(request)
    try:
        await purge_deleted(request.app, app_id, user_id)
    except Exception:
        # Committed already: the sweeper (or a repeated DELETE) finishes the purge.
        log.warning("erasure: uploads not purged yet", exc_info=True)
    try:
        await forget_in_redis(request.app, user_id)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("erasure: Redis keys not deleted (%s); they expire", type(exc).__name__)
    log.info("user erased", extra={"fields": {"app_id": app_id, "erased_user": user_id}})
    audit("user.erase", f"app:{app_id}", user_id)
    return web.Response(status=204)

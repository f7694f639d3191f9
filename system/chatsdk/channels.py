"""Channels, their members and read state.

- Everything answers 404 `channel` to a caller who is not a member, of this app or another: a
  channel's existence is only confirmed to its members. A member who may see but not change
  gets 403.
- Kinds: `public` (any member may add members), `private` (only the owner adds), `direct`
  (the caller and one other user, or the caller alone: a channel with yourself; fixed at
  creation). The creator is the owner; only the owner renames or
  deletes (soft delete); the owner cannot leave (delete the channel instead).
- Ids named in a body (`member_ids`, `user_ids`) that are not users of the caller's app are
  well-formed ids of users that do not exist for the caller: 409 `unknown_reference` naming the
  field, the same answer for "unknown" and "other app" (errors.unknown_reference).
- `Idempotency-Key` on creation is stored in PostgreSQL with a hash of the body: the same key and
  body replay the first response (201, header `Idempotent-Replayed: true`), the same key with
  another body is 422. The key row is claimed with INSERT ... ON CONFLICT in the creating
  transaction, so a concurrent duplicate waits for the first and then replays it.
- `unread` counts messages after the caller's read position that others sent and that are not
  deleted (capped at UNREAD_CAP). Read positions only move forward, never past `last_seq`: a seq
  beyond it marks everything read.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from aiohttp import web

from chatsdk import db, membership, outbox, ratelimit
from chatsdk.auth import User, require_user
from chatsdk.errors import ApiError, bad_request, forbidden, not_found, unknown_reference
from chatsdk.ids import new_id
from chatsdk.validation import (
    Field,
    identifier,
    integer,
    list_of,
    one_of,
    path_id,
    query_int,
    read_body,
    read_json,
    string,
    validate,
)

routes = web.RouteTableDef()

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
UNREAD_CAP = 10_000  # in channel_unread() of migration 0003
MAX_MEMBERS_SHOWN = 1000
CHANNEL_NAME = string(1, 200)


def channel_json(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "channel_id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "created_by": row["created_by"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "last_seq": row["last_seq"],
    }
    keys = row.keys()
    for extra in ("role", "last_read_seq", "unread"):
        if extra in keys:
            out[extra] = row[extra]
    return out


MEMBER_ROLE_SQL = (
    "SELECT c.*, m.role, m.last_read_seq "
    "FROM channels c JOIN channel_members m ON m.channel_id = c.id "
    "WHERE c.id = $1 AND c.app_id = $2 AND c.deleted_at IS NULL "
    "AND m.user_id = $3 AND m.app_id = $2"
)
MEMBER_ROLE_LOCKED_SQL = MEMBER_ROLE_SQL + " FOR UPDATE OF m"


async def member_role(conn: Any, user: User, channel_id: str, *, lock: bool = False) -> Any:
    """The caller's membership row joined with the live channel, or None."""
    return await conn.fetchrow(
        MEMBER_ROLE_LOCKED_SQL if lock else MEMBER_ROLE_SQL,
        channel_id,
        user.app_id,
        user.user_id,
    )


async def require_role(conn: Any, user: User, channel_id: str, *, lock: bool = False) -> Any:
    row = await member_role(conn, user, channel_id, lock=lock)
    if row is None:
        raise not_found("channel")
    return row


async def check_users(conn: Any, app_id: str, field: str, user_ids: list[str]) -> None:
    """409 naming the first id that is not a live user of the app."""
    if not user_ids:
        return
    found = {
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM users WHERE app_id = $1 AND id = ANY($2::text[]) AND erased_at IS NULL",
            app_id,
            user_ids,
        )
    }
    for i, uid in enumerate(user_ids):
        if uid not in found:
            raise unknown_reference(f"Field {field}[{i}] names no user of this app.")


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise bad_request(
            f"Header {IDEMPOTENCY_HEADER} must be 1 to 255 printable ASCII characters."
        )
    return key


def body_hash(request: web.Request, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{request.method} {request.path}\n{canonical}".encode()).hexdigest()


CREATE_SPEC = {
    "name": Field(CHANNEL_NAME),
    "kind": Field(one_of("public", "private", "direct")),
    "member_ids": Field(list_of(identifier(), 0, 500), required=False),
}


@routes.post("/v1/channels")
async def create_channel(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "create_channel")
    key = idempotency_key(request)
    raw = await read_json(request)
    body = validate(raw, CREATE_SPEC)
    others = [u for u in dict.fromkeys(body.get("member_ids", [])) if u != user.user_id]
    if body["kind"] == "direct" and not body.get("member_ids"):
        raise bad_request("Field member_ids must name the other user (or you) of a direct channel.")
    request_hash = body_hash(request, raw)
    channel_id = new_id("ch")
    async with db.transaction(request) as conn:
        if key is not None:
            claimed = await conn.fetchval(
                "INSERT INTO idempotency_keys "
                "(app_id, user_id, key, request_hash, status, response) "
                "VALUES ($1, $2, $3, $4, 0, '{}'::jsonb) ON CONFLICT DO NOTHING RETURNING 1",
                user.app_id,
                user.user_id,
                key,
                request_hash,
            )
            if claimed is None:
                return await replay(conn, user, key, request_hash)
        await check_users(conn, user.app_id, "member_ids", others)
        if body["kind"] == "direct" and len(others) > 1:
            raise bad_request(
                "Field member_ids must name at most one other user for a direct channel."
            )
        row = await conn.fetchrow(
            "INSERT INTO channels (id, app_id, name, kind, created_by) "
            "VALUES ($1, $2, $3, $4, $5) "
            "RETURNING id, name, kind, created_by, created_at, updated_at, last_seq",
            channel_id,
            user.app_id,
            body["name"],
            body["kind"],
            user.user_id,
        )
        await conn.execute(
            "INSERT INTO channel_members (channel_id, app_id, user_id, role) "
            "SELECT $1, $2, u, CASE WHEN u = $3 THEN 'owner' ELSE 'member' END "
            "FROM unnest($4::text[]) AS u",
            channel_id,
            user.app_id,
            user.user_id,
            [user.user_id, *others],
        )
        result = {
            **channel_json(row),
            "role": "owner",
            "last_read_seq": 0,
            "unread": 0,
            "member_ids": sorted([user.user_id, *others]),
            "member_count": 1 + len(others),
        }
        await outbox.emit(conn, user.app_id, "channel.created", result, channel_id=channel_id)
        if key is not None:
            await conn.execute(
                "UPDATE idempotency_keys SET status = 201, response = $4::jsonb "
                "WHERE app_id = $1 AND user_id = $2 AND key = $3",
                user.app_id,
                user.user_id,
                key,
                json.dumps(result),
            )
    outbox.wake(request)
    return web.json_response(result, status=201)


async def replay(conn: Any, user: User, key: str, request_hash: str) -> web.Response:
    stored = await conn.fetchrow(
        "SELECT request_hash, status, response FROM idempotency_keys "
        "WHERE app_id = $1 AND user_id = $2 AND key = $3",
        user.app_id,
        user.user_id,
        key,
    )
    if stored is None or stored["status"] == 0:  # pragma: no cover - only if the row vanished
        raise ApiError(409, "conflict", "A request with this Idempotency-Key is in progress.")
    if stored["request_hash"] != request_hash:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"This {IDEMPOTENCY_HEADER} was used with a different request body.",
        )
    response = stored["response"]
    data = json.loads(response) if isinstance(response, str) else response
    return web.json_response(data, status=stored["status"], headers={"Idempotent-Replayed": "true"})


@routes.get("/v1/channels")
async def list_channels(request: web.Request) -> web.Response:
    user = await require_user(request)
    raw_after = request.query.get("after")  # present but empty is not an id either: 400
    after = identifier()("after", raw_after) if raw_after is not None else ""
    limit = _query_limit(request)
    rows = await db.pool(request).fetch(
        "SELECT c.*, m.role, m.last_read_seq, "
        "channel_unread(m.channel_id, m.user_id, m.last_read_seq) AS unread "
        "FROM channel_members m JOIN channels c ON c.id = m.channel_id "
        "WHERE m.app_id = $1 AND m.user_id = $2 AND m.channel_id > $3 "
        "AND c.app_id = $1 AND c.deleted_at IS NULL "
        "ORDER BY m.channel_id LIMIT $4",
        user.app_id,
        user.user_id,
        after,
        limit + 1,
    )
    page = [channel_json(r) for r in rows[:limit]]
    return web.json_response({"channels": page, "has_more": len(rows) > limit})


def _query_limit(request: web.Request) -> int:
    value = query_int(request, "limit", 100, 1, 200)
    assert value is not None
    return value


@routes.get("/v1/channels/{channel_id}")
async def get_channel(request: web.Request) -> web.Response:
    user = await require_user(request)
    channel_id = path_id(request, "channel_id")
    async with db.pool(request).acquire() as conn:
        row = await conn.fetchrow(
            "SELECT c.*, m.role, m.last_read_seq, "
            "channel_unread(m.channel_id, m.user_id, m.last_read_seq) AS unread "
            "FROM channels c JOIN channel_members m ON m.channel_id = c.id "
            "WHERE c.id = $1 AND c.app_id = $2 AND c.deleted_at IS NULL "
            "AND m.user_id = $3 AND m.app_id = $2",
            channel_id,
            user.app_id,
            user.user_id,
        )
        if row is None:
            raise not_found("channel")
        members = await conn.fetch(
            "SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY user_id LIMIT $2",
            channel_id,
            MAX_MEMBERS_SHOWN,
        )
        count = await conn.fetchval(
            "SELECT count(*) FROM channel_members WHERE channel_id = $1", channel_id
        )
    return web.json_response(
        {
            **channel_json(row),
            "member_ids": [m["user_id"] for m in members],
            "member_count": count,
        }
    )


@routes.patch("/v1/channels/{channel_id}")
async def update_channel(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "default")
    channel_id = path_id(request, "channel_id")
    body = await read_body(request, {"name": Field(CHANNEL_NAME)})
    async with db.transaction(request) as conn:
        current = await require_role(conn, user, channel_id)
        if current["role"] != "owner":
            raise forbidden("Only the channel's owner may rename it.")
        row = await conn.fetchrow(
            "UPDATE channels SET name = $3, updated_at = now() "
            "WHERE id = $1 AND app_id = $2 AND deleted_at IS NULL RETURNING *",
            channel_id,
            user.app_id,
            body["name"],
        )
        if row is None:  # deleted meanwhile
            raise not_found("channel")
        result = {**channel_json(row), "role": "owner"}
        await outbox.emit(conn, user.app_id, "channel.updated", result, channel_id=channel_id)
    outbox.wake(request)
    return web.json_response(result)


@routes.delete("/v1/channels/{channel_id}")
async def delete_channel(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "default")
    channel_id = path_id(request, "channel_id")
    async with db.transaction(request) as conn:
        current = await require_role(conn, user, channel_id)
        if current["role"] != "owner":
            raise forbidden("Only the channel's owner may delete it.")
        deleted = await conn.fetchval(
            "UPDATE channels SET deleted_at = now(), updated_at = now() "
            "WHERE id = $1 AND app_id = $2 AND deleted_at IS NULL RETURNING 1",
            channel_id,
            user.app_id,
        )
        if deleted is None:
            raise not_found("channel")
        member_ids = [
            r["user_id"]
            for r in await conn.fetch(
                "SELECT user_id FROM channel_members WHERE channel_id = $1", channel_id
            )
        ]
        await outbox.emit(
            conn,
            user.app_id,
            "channel.deleted",
            {"channel_id": channel_id, "deleted_by": user.user_id},
            channel_id=channel_id,
        )
    await membership.forget(request, channel_id, member_ids)
    outbox.wake(request)
    return web.Response(status=204)


@routes.post("/v1/channels/{channel_id}/members")
async def add_members(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "default")
    channel_id = path_id(request, "channel_id")
    body = await read_body(request, {"user_ids": Field(list_of(identifier(), 1, 100))})
    async with db.transaction(request) as conn:
        current = await require_role(conn, user, channel_id)
        if current["kind"] == "direct":
            raise ApiError(409, "conflict", "A direct channel's members cannot change.")
        if current["kind"] == "private" and current["role"] != "owner":
            raise forbidden("Only the owner may add members to a private channel.")
        await check_users(conn, user.app_id, "user_ids", body["user_ids"])
        added = [
            r["user_id"]
            for r in await conn.fetch(
                "INSERT INTO channel_members (channel_id, app_id, user_id) "
                "SELECT $1, $2, u FROM unnest($3::text[]) AS u "
                "ON CONFLICT DO NOTHING RETURNING user_id",
                channel_id,
                user.app_id,
                body["user_ids"],
            )
        ]
        for uid in added:
            await outbox.emit(
                conn,
                user.app_id,
                "member.joined",
                {"channel_id": channel_id, "user_id": uid, "added_by": user.user_id},
                channel_id=channel_id,
            )
    await membership.admit(request, channel_id, added)
    outbox.wake(request)
    return web.json_response({"channel_id": channel_id, "added": added})


@routes.delete("/v1/channels/{channel_id}/members/{user_id}")
async def remove_member(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "default")
    channel_id = path_id(request, "channel_id")
    target = path_id(request, "user_id")
    async with db.transaction(request) as conn:
        current = await require_role(conn, user, channel_id)
        if target == user.user_id:
            if current["role"] == "owner":
                raise ApiError(
                    409, "conflict", "The owner cannot leave the channel; delete it instead."
                )
        elif current["role"] != "owner":
            raise forbidden("Only the channel's owner may remove other members.")
        removed = await conn.fetchval(
            "DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2 AND app_id = $3 "
            "RETURNING 1",
            channel_id,
            target,
            user.app_id,
        )
        if removed is None:
            raise not_found("member")
        await outbox.emit(
            conn,
            user.app_id,
            "member.left",
            {"channel_id": channel_id, "user_id": target, "removed_by": user.user_id},
            channel_id=channel_id,
        )
    await membership.forget(request, channel_id, [target])
    outbox.wake(request)
    return web.Response(status=204)


@routes.post("/v1/channels/{channel_id}/read")
async def mark_read(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "default")
    channel_id = path_id(request, "channel_id")
    body = await read_body(request, {"seq": Field(integer(0))})
    seq = body["seq"]
    async with db.transaction(request) as conn:
        current = await require_role(conn, user, channel_id, lock=True)
        # Past the end means "everything": the position stops at last_seq.
        position = max(min(seq, current["last_seq"]), current["last_read_seq"])
        if position != current["last_read_seq"]:
            await conn.execute(
                "UPDATE channel_members SET last_read_seq = $3 "
                "WHERE channel_id = $1 AND user_id = $2",
                channel_id,
                user.user_id,
                position,
            )
            await outbox.emit(
                conn,
                user.app_id,
                "read.updated",
                {"channel_id": channel_id, "user_id": user.user_id, "last_read_seq": position},
                channel_id=channel_id,
            )
        unread = await conn.fetchval(
            "SELECT channel_unread($1, $2, $3)", channel_id, user.user_id, position
        )
    outbox.wake(request)
    return web.json_response(
        {
            "channel_id": channel_id,
            "last_read_seq": position,
            "last_seq": current["last_seq"],
            "unread": unread,
        }
    )

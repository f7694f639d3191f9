"""Messages: sends with gap-free per-channel seq, idempotent client_msg_id, threads, reactions,
edits and tombstones.

- seq: `UPDATE channels SET last_seq = last_seq + 1 ... RETURNING last_seq` and the INSERT run in
  one transaction. The row lock serialises the channel's senders across workers and a rollback
  gives the number back, so seqs are strictly increasing without gaps or duplicates.
- A send is one statement in autocommit (SEND_SQL): the bump, the message, its attachments and
  its outbox row are one CTE, so the channel row is locked only while PostgreSQL executes and
  commits it, never across client round trips that wait on a busy event loop (docs/
  PERFORMANCE.md measured that wait as the send path's ceiling). One statement is one
  transaction: message, attachments and event are committed together or not at all.
- client_msg_id: a repeat answers 200 with the original message. It is looked up before the
  send (cheap retries take no lock). A racing duplicate waits on the channel row, then its
  INSERT meets the committed original in the unique index `messages_client_msg`: the whole
  statement fails (its seq given back) and the original is answered.
- Every handler first checks membership (membership.py, cached): a non-member, of this app or
  another, gets 404 and no data. Only the author edits; the author or the channel owner deletes.
- Tombstones keep their seq and place in history with `text: null, deleted: true`; their
  attachments and reactions are removed. Tombstoned or poll messages cannot be edited (409).
- Body references (`parent_id`, `upload_ids`) that name nothing visible to the sender are 409
  `unknown_reference` naming the field (errors.unknown_reference). Threads are one level deep:
  a reply's parent is a top-level message of the same channel (a reply as parent: 400). Replies
  are also part of the channel's history (they have seqs).
- History pages by seq through the (channel_id, seq) index, never OFFSET. `after_seq` pages
  forward from after_seq + 1; `before_seq` returns the `limit` messages just before it; neither
  returns the latest page. Pages are always in ascending seq; `has_more` says whether more exist
  in the paging direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from chatsdk import db, faults, membership, outbox, ratelimit
from chatsdk.auth import User, require_user
from chatsdk.errors import ApiError, bad_request, forbidden, not_found, unknown_reference
from chatsdk.ids import new_id
from chatsdk.keys import METRICS
from chatsdk.validation import (
    EMOJI,
    Field,
    identifier,
    list_of,
    path_id,
    query_int,
    read_body,
    string,
)

routes = web.RouteTableDef()

MAX_TEXT = 4000
MAX_SEQ = 2**62
TEXT = string(1, MAX_TEXT)
# Every column of messages (the queries here use *; realtime.py builds its backfill from this).
MESSAGE_COLUMNS = (
    "id, app_id, channel_id, seq, user_id, kind, text, client_msg_id, parent_id, "
    "created_at, edited_at, deleted_at"
)


@dataclass
class Extras:
    reactions: dict[str, dict[str, int]] = field(default_factory=dict)
    reply_counts: dict[str, int] = field(default_factory=dict)
    uploads: dict[str, list[str]] = field(default_factory=dict)
    polls: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def timed(request: web.Request, operation: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        request.app[METRICS].db_query_duration.labels(operation).observe(
            time.perf_counter() - started
        )


def message_json(row: Any, extras: Extras | None = None) -> dict[str, Any]:
    extras = extras or Extras()
    mid = row["id"]
    deleted = row["deleted_at"] is not None
    out: dict[str, Any] = {
        "message_id": mid,
        "seq": row["seq"],
        "channel_id": row["channel_id"],
        "user_id": row["user_id"],
        "kind": row["kind"],
        "text": None if deleted else row["text"],
        "client_msg_id": row["client_msg_id"],
        "parent_id": row["parent_id"],
        "created_at": row["created_at"].isoformat(),
        "edited_at": row["edited_at"].isoformat() if row["edited_at"] else None,
        "deleted": deleted,
        "deleted_at": row["deleted_at"].isoformat() if deleted else None,
        "upload_ids": [] if deleted else extras.uploads.get(mid, []),
        "reactions": {} if deleted else extras.reactions.get(mid, {}),
        "reply_count": extras.reply_counts.get(mid, 0),
    }
    if row["kind"] == "poll":
        out["poll_id"] = extras.polls.get(mid)
    return out


# Reactions (counted per emoji), reply counts, attachments and poll ids of a page of messages,
# in one round trip: four indexed selects, each row tagged with what it is. $1: every message id
# of the page; $2: the top-level ones (replies have no replies); $3: the polls.
EXTRAS_SQL = """
SELECT 'reaction' AS kind, message_id AS id, emoji AS value, count(*) AS n
  FROM reactions WHERE message_id = ANY($1::text[]) GROUP BY message_id, emoji
UNION ALL
SELECT 'replies', parent_id, NULL, count(*)
  FROM messages WHERE parent_id = ANY($2::text[]) GROUP BY parent_id
UNION ALL
SELECT 'upload', message_id, upload_id, NULL
  FROM message_uploads WHERE message_id = ANY($1::text[])
UNION ALL
SELECT 'poll', message_id, id, NULL FROM polls WHERE message_id = ANY($3::text[])
ORDER BY kind, id, value
"""


async def load_extras(conn: Any, rows: list[Any]) -> Extras:
    """Reactions, reply counts, attachments and poll ids of a page (EXTRAS_SQL): reactions by
    emoji and attachments by upload id, as the messages show them."""
    extras = Extras()
    ids = [r["id"] for r in rows]
    if not ids:
        return extras
    top_level = [r["id"] for r in rows if r["parent_id"] is None]
    polls = [r["id"] for r in rows if r["kind"] == "poll"]
    for r in await conn.fetch(EXTRAS_SQL, ids, top_level, polls):
        kind, message_id = r["kind"], r["id"]
        if kind == "reaction":
            extras.reactions.setdefault(message_id, {})[r["value"]] = r["n"]
        elif kind == "replies":
            extras.reply_counts[message_id] = r["n"]
        elif kind == "upload":
            extras.uploads.setdefault(message_id, []).append(r["value"])
        else:
            extras.polls[message_id] = r["value"]
    return extras


async def messages_json(conn: Any, rows: list[Any]) -> list[dict[str, Any]]:
    extras = await load_extras(conn, rows)
    return [message_json(r, extras) for r in rows]


async def bump_seq(conn: Any, app_id: str, channel_id: str) -> int:
    seq = await conn.fetchval(
        "UPDATE channels SET last_seq = last_seq + 1 "
        "WHERE id = $1 AND app_id = $2 AND deleted_at IS NULL RETURNING last_seq",
        channel_id,
        app_id,
    )
    if seq is None:
        raise not_found("channel")
    return int(seq)


async def find_by_client_id(conn: Any, user: User, channel_id: str, client_msg_id: str) -> Any:
    return await conn.fetchrow(
        "SELECT * FROM messages "
        "WHERE channel_id = $1 AND user_id = $2 AND client_msg_id = $3 AND app_id = $4",
        channel_id,
        user.user_id,
        client_msg_id,
        user.app_id,
    )


async def append_message(conn: Any, user: User, channel_id: str, *, kind: str, text: str) -> Any:
    """Take the channel's next seq and insert the message, inside the caller's transaction (polls
    and the demo seed, which write more rows after it). Keep work after this short: the channel
    row stays locked until the commit. Sends use SEND_SQL instead."""
    seq = await bump_seq(conn, user.app_id, channel_id)
    return await conn.fetchrow(
        "INSERT INTO messages (id, app_id, channel_id, seq, user_id, kind, text) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        new_id("msg"),
        user.app_id,
        channel_id,
        seq,
        user.user_id,
        kind,
        text,
    )


async def message_in_channel(conn: Any, user: User, channel_id: str, message_id: str) -> Any:
    return await conn.fetchrow(
        "SELECT * FROM messages WHERE id = $1 AND channel_id = $2 AND app_id = $3",
        message_id,
        channel_id,
        user.app_id,
    )


async def locked_message(conn: Any, user: User, channel_id: str, message_id: str) -> Any:
    """The message, row-locked for a change in this transaction; 404 when not visible."""
    current = await conn.fetchrow(
        "SELECT * FROM messages WHERE id = $1 AND channel_id = $2 AND app_id = $3 FOR UPDATE",
        message_id,
        channel_id,
        user.app_id,
    )
    if current is None:
        raise not_found("message")
    return current


SEND_SPEC = {
    "text": Field(TEXT),
    "client_msg_id": Field(identifier(), required=False),
    "parent_id": Field(identifier(), required=False),
    "upload_ids": Field(list_of(identifier(), 0, 10), required=False),
}


# m.created_at exactly as `datetime.isoformat()` writes what asyncpg decodes (UTC, "+00:00",
# microseconds only when not zero), so the event built in SQL carries the same created_at string
# as the response built in Python (to_json would write "+00" or trim trailing zeros).
CREATED_AT_ISO = (
    "to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
    "|| CASE WHEN to_char(m.created_at AT TIME ZONE 'UTC', 'US') = '000000' THEN '' "
    "ELSE to_char(m.created_at AT TIME ZONE 'UTC', '.US') END || '+00:00'"
)
# $1 channel, $2 app, $3 message id, $4 sender, $5 text, $6 client_msg_id, $7 parent_id,
# $8 upload ids, $9 the event's data less seq and created_at (which only the statement knows).
# No channel row (missing, of another app, deleted) means no message, attachment or event.
SEND_SQL = f"""
WITH s AS (
    UPDATE channels SET last_seq = last_seq + 1
    WHERE id = $1 AND app_id = $2 AND deleted_at IS NULL
    RETURNING last_seq
), m AS (
    INSERT INTO messages (id, app_id, channel_id, seq, user_id, kind, text, client_msg_id,
                          parent_id)
    SELECT $3, $2, $1, s.last_seq, $4, 'text', $5, $6, $7 FROM s
    RETURNING *
), u AS (
    INSERT INTO message_uploads (message_id, upload_id)
    SELECT m.id, x FROM m, unnest($8::text[]) AS x
), o AS (
    INSERT INTO outbox (app_id, channel_id, user_id, type, seq, data)
    SELECT m.app_id, m.channel_id, m.user_id, 'message.new', m.seq,
           $9::jsonb || jsonb_build_object('seq', m.seq, 'created_at', {CREATED_AT_ISO})
    FROM m
)
SELECT * FROM m
"""  # noqa: S608 (constant text: every value is a parameter)
CLIENT_MSG_UNIQUE = "messages_client_msg"
# Stands in for the two values the statement fills in; removed before the template is sent.
_PENDING = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)


def new_message_event(
    message_id: str,
    user: User,
    channel_id: str,
    text: str,
    *,
    client_msg_id: str | None,
    parent_id: str | None,
    upload_ids: list[str],
) -> dict[str, Any]:
    """message.new's data as message_json would build it, less seq and created_at."""
    data = message_json(
        {
            "id": message_id,
            "seq": 0,
            "channel_id": channel_id,
            "user_id": user.user_id,
            "kind": "text",
            "text": text,
            "client_msg_id": client_msg_id,
            "parent_id": parent_id,
            "created_at": _PENDING,
            "edited_at": None,
            "deleted_at": None,
        },
        Extras(uploads={message_id: sorted(upload_ids)}),
    )
    del data["seq"], data["created_at"]
    return data


async def check_references(
    conn: Any, user: User, channel_id: str, parent_id: str | None, upload_ids: list[str]
) -> None:
    """409 unless the parent and the uploads are the sender's to reference (400 for a parent
    that is itself a reply). Checked before the
    send, as before it was one statement: neither can change in a way the check misses (a
    message's channel and parent never change; uploads and messages are soft-deleted, and a
    hard delete fails the statement's foreign keys)."""
    if parent_id is not None:
        parent = await message_in_channel(conn, user, channel_id, parent_id)
        if parent is None:
            raise unknown_reference("Field parent_id names no message of this channel.")
        if parent["parent_id"] is not None:
            raise bad_request("Field parent_id must name a top-level message of this channel.")
    if upload_ids:
        owned = await conn.fetchval(
            "SELECT count(*) FROM uploads WHERE app_id = $1 AND user_id = $2 "
            "AND id = ANY($3::text[]) AND deleted_at IS NULL",
            user.app_id,
            user.user_id,
            upload_ids,
        )
        if owned != len(upload_ids):
            raise unknown_reference("Field upload_ids must name uploads of the sender.")


async def _existing_json(conn: Any, message_id: str) -> dict[str, Any]:
    row = await conn.fetchrow("SELECT * FROM messages WHERE id = $1", message_id)
    return (await messages_json(conn, [row]))[0]


@routes.post("/v1/channels/{channel_id}/messages")
async def send_message(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "send_message")
    channel_id = path_id(request, "channel_id")
    body = await read_body(request, SEND_SPEC)
    await membership.require_member(request, user.app_id, channel_id, user.user_id)
    client_msg_id: str | None = body.get("client_msg_id")
    parent_id: str | None = body.get("parent_id")
    upload_ids: list[str] = body.get("upload_ids", [])
    message_id = new_id("msg")
    event = new_message_event(
        message_id,
        user,
        channel_id,
        body["text"],
        client_msg_id=client_msg_id,
        parent_id=parent_id,
        upload_ids=upload_ids,
    )
    args = (
        channel_id,
        user.app_id,
        message_id,
        user.user_id,
        body["text"],
        client_msg_id,
        parent_id,
        upload_ids,
        json.dumps(event, separators=(",", ":"), default=str),
    )
    early: web.Response | None = None
    async with db.pool(request).acquire() as conn:
        if client_msg_id is not None:
            existing = await find_by_client_id(conn, user, channel_id, client_msg_id)
            if existing is not None:
                return web.json_response(await _existing_json(conn, existing["id"]), status=200)
        try:
            with timed(request, "send_message"):
                await check_references(conn, user, channel_id, parent_id, upload_ids)
                if faults.injected(faults.ACK_BEFORE_COMMIT):
                    # The fault needs a commit to hold back: the same statement, in a transaction.
                    async with conn.transaction():
                        row = await conn.fetchrow(SEND_SQL, *args)
                        if row is None:
                            raise not_found("channel")
                        data = message_json(row, Extras(uploads={row["id"]: sorted(upload_ids)}))
                        early = await _fault_ack_before_commit(request, data)
                else:
                    row = await conn.fetchrow(SEND_SQL, *args)
                    if row is None:
                        raise not_found("channel")
                    data = message_json(row, Extras(uploads={row["id"]: sorted(upload_ids)}))
                    # Only SELECTs and the one-statement send ran, in autocommit: no session
                    # reset needed (chatsdk/sessionreset.py).
                    conn.mark_stateless()
        except asyncpg.UniqueViolationError as exc:
            if client_msg_id is None or exc.constraint_name != CLIENT_MSG_UNIQUE:
                return _answered_or_raise(early, exc)
            existing = await find_by_client_id(conn, user, channel_id, client_msg_id)
            if existing is None:
                raise
            return web.json_response(await _existing_json(conn, existing["id"]), status=200)
        except Exception as exc:
            return _answered_or_raise(early, exc)
    outbox.wake(request)
    request.app[METRICS].messages_sent.inc()
    return early if early is not None else web.json_response(data, status=201)


async def _fault_ack_before_commit(request: web.Request, data: Any) -> web.Response | None:
    """The test-only fault `ack_before_commit` (chatsdk/faults.py): answer 201 now, inside the
    transaction, and hold the commit back a little. Nothing happens unless it is injected."""
    if not faults.injected(faults.ACK_BEFORE_COMMIT):
        return None
    early = web.json_response(data, status=201)
    await early.prepare(request)
    await early.write_eof()
    await asyncio.sleep(faults.ACK_BEFORE_COMMIT_DELAY_S)
    return early


def _answered_or_raise(early: web.Response | None, exc: Exception) -> web.Response:
    """Under `ack_before_commit` the 201 is out already, whatever the commit did."""
    if early is None:
        raise exc
    return early


PAGE_FORWARD_SQL = (
    "SELECT * FROM messages WHERE channel_id = $1 AND app_id = $2 AND seq > $3 AND seq < $4 "
    "ORDER BY seq ASC LIMIT $5"
)
PAGE_BACK_SQL = (
    "SELECT * FROM messages WHERE channel_id = $1 AND app_id = $2 AND seq > $3 AND seq < $4 "
    "ORDER BY seq DESC LIMIT $5"
)


def _page_limit(request: web.Request) -> int:
    value = query_int(request, "limit", 50, 1, 200)
    assert value is not None
    return value


@routes.get("/v1/channels/{channel_id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    user = await require_user(request)
    channel_id = path_id(request, "channel_id")
    after = query_int(request, "after_seq", None, 0, MAX_SEQ)
    before = query_int(request, "before_seq", None, 1, MAX_SEQ)
    limit = _page_limit(request)
    await membership.require_member(request, user.app_id, channel_id, user.user_id)
    # after_seq pages forward; otherwise the page just before before_seq (or the latest).
    ascending = after is not None
    args = (channel_id, user.app_id, after or 0, before or MAX_SEQ, limit + 1)
    with timed(request, "list_messages"):
        async with db.pool(request).acquire() as conn:
            rows = await conn.fetch(PAGE_FORWARD_SQL if ascending else PAGE_BACK_SQL, *args)
            page = rows[:limit] if ascending else list(reversed(rows[:limit]))
            out = await messages_json(conn, page)
            conn.mark_stateless()  # two SELECTs: no session reset needed (chatsdk/sessionreset.py)
    return web.json_response({"messages": out, "has_more": len(rows) > limit})


@routes.get("/v1/channels/{channel_id}/messages/{message_id}/replies")
async def list_replies(request: web.Request) -> web.Response:
    user = await require_user(request)
    channel_id = path_id(request, "channel_id")
    message_id = path_id(request, "message_id")
    after = query_int(request, "after_seq", 0, 0, MAX_SEQ)
    limit = _page_limit(request)
    await membership.require_member(request, user.app_id, channel_id, user.user_id)
    async with db.pool(request).acquire() as conn:
        if await message_in_channel(conn, user, channel_id, message_id) is None:
            raise not_found("message")
        rows = await conn.fetch(
            "SELECT * FROM messages WHERE parent_id = $1 AND seq > $2 "
            "AND channel_id = $3 AND app_id = $4 ORDER BY seq LIMIT $5",
            message_id,
            after,
            channel_id,
            user.app_id,
            limit + 1,
        )
        out = await messages_json(conn, rows[:limit])
    return web.json_response({"messages": out, "has_more": len(rows) > limit})


@routes.patch("/v1/channels/{channel_id}/messages/{message_id}")
async def edit_message(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "send_message")
    channel_id = path_id(request, "channel_id")
    message_id = path_id(request, "message_id")
    body = await read_body(request, {"text": Field(TEXT)})
    await membership.require_member(request, user.app_id, channel_id, user.user_id)
    async with db.transaction(request) as conn:
        current = await locked_message(conn, user, channel_id, message_id)
        if current["user_id"] != user.user_id:
            raise forbidden("Only the author may edit a message.")
        if current["deleted_at"] is not None:
            raise ApiError(409, "conflict", "A deleted message cannot be edited.")
        if current["kind"] != "text":
            raise ApiError(409, "conflict", "A poll's message cannot be edited.")
        row = await conn.fetchrow(
            "UPDATE messages SET text = $2, edited_at = now() WHERE id = $1 RETURNING *",
            message_id,
            body["text"],
        )
        data = (await messages_json(conn, [row]))[0]
        await outbox.emit(
            conn, user.app_id, "message.updated", data, channel_id=channel_id, user_id=user.user_id
        )
    outbox.wake(request)
    return web.json_response(data)


@routes.delete("/v1/channels/{channel_id}/messages/{message_id}")
async def delete_message(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "default")
    channel_id = path_id(request, "channel_id")
    message_id = path_id(request, "message_id")
    await membership.require_member(request, user.app_id, channel_id, user.user_id)
    async with db.transaction(request) as conn:
        current = await locked_message(conn, user, channel_id, message_id)
        if current["user_id"] != user.user_id:
            role = await conn.fetchval(
                "SELECT role FROM channel_members WHERE channel_id = $1 AND user_id = $2",
                channel_id,
                user.user_id,
            )
            if role != "owner":
                raise forbidden("Only the author or the channel's owner may delete a message.")
        if current["deleted_at"] is None:
            row = await conn.fetchrow(
                "UPDATE messages SET text = NULL, deleted_at = now() WHERE id = $1 RETURNING *",
                message_id,
            )
            await conn.execute("DELETE FROM message_uploads WHERE message_id = $1", message_id)
            await conn.execute("DELETE FROM reactions WHERE message_id = $1", message_id)
            data = (await messages_json(conn, [row]))[0]
            await outbox.emit(
                conn,
                user.app_id,
                "message.deleted",
                {**data, "deleted_by": user.user_id},
                channel_id=channel_id,
                user_id=user.user_id,
            )
    outbox.wake(request)
    return web.Response(status=204)


def emoji_of(request: web.Request) -> str:
    value = str(request.match_info["emoji"])
    if not 1 <= len(value) <= 32 or not EMOJI.fullmatch(value):
        raise bad_request(
            "Path parameter emoji must be an emoji or a short name (letters and digits of any "
            "script, _+-:), 1 to 32 characters, without spaces, controls or invisible marks."
        )
    return value


async def _reaction_target(conn: Any, user: User, channel_id: str, message_id: str) -> Any:
    row = await message_in_channel(conn, user, channel_id, message_id)
    if row is None:
        raise not_found("message")
    return row


async def _reaction_summary(conn: Any, message_id: str) -> dict[str, int]:
    return {
        r["emoji"]: r["n"]
        for r in await conn.fetch(
            "SELECT emoji, count(*) AS n FROM reactions WHERE message_id = $1 "
            "GROUP BY emoji ORDER BY emoji",
            message_id,
        )
    }


async def _reaction_request(request: web.Request) -> tuple[User, str, str, str]:
    """Who reacts, where and with what; checked (rate, ids, membership) before any change."""
    user = await require_user(request)
    await ratelimit.limit(request, user, "react")
    channel_id = path_id(request, "channel_id")
    message_id = path_id(request, "message_id")
    emoji = emoji_of(request)
    await membership.require_member(request, user.app_id, channel_id, user.user_id)
    return user, channel_id, message_id, emoji


@routes.put("/v1/channels/{channel_id}/messages/{message_id}/reactions/{emoji}")
async def add_reaction(request: web.Request) -> web.Response:
    user, channel_id, message_id, emoji = await _reaction_request(request)
    async with db.transaction(request) as conn:
        target = await _reaction_target(conn, user, channel_id, message_id)
        if target["deleted_at"] is not None:
            raise ApiError(409, "conflict", "A deleted message cannot get reactions.")
        added = await conn.fetchval(
            "INSERT INTO reactions (message_id, user_id, emoji) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            message_id,
            user.user_id,
            emoji,
        )
        summary = await _reaction_summary(conn, message_id)
        if added is not None:
            await outbox.emit(
                conn,
                user.app_id,
                "reaction.added",
                {
                    "channel_id": channel_id,
                    "message_id": message_id,
                    "user_id": user.user_id,
                    "emoji": emoji,
                    "count": summary.get(emoji, 0),
                },
                channel_id=channel_id,
                user_id=user.user_id,
            )
    outbox.wake(request)
    return web.json_response({"message_id": message_id, "emoji": emoji, "reactions": summary})


@routes.delete("/v1/channels/{channel_id}/messages/{message_id}/reactions/{emoji}")
async def remove_reaction(request: web.Request) -> web.Response:
    user, channel_id, message_id, emoji = await _reaction_request(request)
    async with db.transaction(request) as conn:
        await _reaction_target(conn, user, channel_id, message_id)
        removed = await conn.fetchval(
            "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3 "
            "RETURNING 1",
            message_id,
            user.user_id,
            emoji,
        )
        if removed is not None:
            count = await conn.fetchval(
                "SELECT count(*) FROM reactions WHERE message_id = $1 AND emoji = $2",
                message_id,
                emoji,
            )
            await outbox.emit(
                conn,
                user.app_id,
                "reaction.removed",
                {
                    "channel_id": channel_id,
                    "message_id": message_id,
                    "user_id": user.user_id,
                    "emoji": emoji,
                    "count": count,
                },
                channel_id=channel_id,
                user_id=user.user_id,
            )
    outbox.wake(request)
    return web.Response(status=204)

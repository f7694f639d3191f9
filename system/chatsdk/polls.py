"""Polls: a poll is a message of kind `poll` (it takes a seq and is announced as message.new) plus
its question, options and votes.

- Only members of the poll's channel see or vote (404 `poll` for anyone else, of any app).
- A vote replaces the caller's earlier vote on that poll: single-choice polls take exactly one
  option, multiple-choice polls one or more. Concurrent votes of one user on one poll are
  serialised with a transaction-scoped advisory lock, so a single-choice poll never ends up
  with two votes from one user.
- Deleting the poll's message closes the poll: votes are then refused with 409.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from chatsdk import db, membership, outbox, ratelimit
from chatsdk.auth import User, require_user
from chatsdk.errors import ApiError, bad_request, not_found, unknown_reference
from chatsdk.ids import new_id
from chatsdk.messages import Extras, append_message, message_json
from chatsdk.validation import Field, boolean, identifier, list_of, path_id, read_body, string

routes = web.RouteTableDef()

MAX_OPTIONS = 10

CREATE_SPEC = {
    "question": Field(string(1, 500)),
    "options": Field(list_of(string(1, 200), 2, MAX_OPTIONS)),
    "multiple": Field(boolean(), required=False),
}


async def poll_json(conn: Any, poll: Any, user_id: str) -> dict[str, Any]:
    counts = {
        r["option_id"]: r["n"]
        for r in await conn.fetch(
            "SELECT option_id, count(*) AS n FROM poll_votes WHERE poll_id = $1 GROUP BY option_id",
            poll["id"],
        )
    }
    options = await conn.fetch(
        "SELECT id, text FROM poll_options WHERE poll_id = $1 ORDER BY position", poll["id"]
    )
    mine = await conn.fetch(
        "SELECT option_id FROM poll_votes WHERE poll_id = $1 AND user_id = $2", poll["id"], user_id
    )
    order = {o["id"]: i for i, o in enumerate(options)}
    return {
        "poll_id": poll["id"],
        "message_id": poll["message_id"],
        "channel_id": poll["channel_id"],
        "question": poll["question"],
        "multiple": poll["multiple"],
        "created_by": poll["created_by"],
        "created_at": poll["created_at"].isoformat(),
        "closed": poll["deleted_at"] is not None,
        "options": [
            {"option_id": o["id"], "text": o["text"], "votes": counts.get(o["id"], 0)}
            for o in options
        ],
        "my_votes": sorted((m["option_id"] for m in mine), key=lambda x: order.get(x, 0)),
    }


POLL_SQL = (
    "SELECT p.id, p.channel_id, p.message_id, p.question, p.multiple, p.created_by, "
    "p.created_at, m.deleted_at FROM polls p JOIN messages m ON m.id = p.message_id "
    "WHERE p.id = $1 AND p.app_id = $2"
)


async def visible_poll(request: web.Request, conn: Any, user: User, poll_id: str) -> Any:
    poll = await conn.fetchrow(POLL_SQL, poll_id, user.app_id)
    if poll is None or not await membership.is_member(
        request, user.app_id, poll["channel_id"], user.user_id
    ):
        raise not_found("poll")
    return poll


@routes.post("/v1/channels/{channel_id}/polls")
async def create_poll(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "send_message")
    channel_id = path_id(request, "channel_id")
    body = await read_body(request, CREATE_SPEC)
    await membership.require_member(request, user.app_id, channel_id, user.user_id)
    poll_id = new_id("poll")
    async with db.transaction(request) as conn:
        row = await append_message(conn, user, channel_id, kind="poll", text=body["question"])
        await conn.execute(
            "INSERT INTO polls (id, app_id, channel_id, message_id, question, multiple, "
            "created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            poll_id,
            user.app_id,
            channel_id,
            row["id"],
            body["question"],
            body.get("multiple", False),
            user.user_id,
        )
        await conn.execute(
            "INSERT INTO poll_options (poll_id, id, position, text) "
            "SELECT $1, o.id, o.position, o.text "
            "FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS o(id, text, position)",
            poll_id,
            [new_id("opt") for _ in body["options"]],
            body["options"],
        )
        poll = await conn.fetchrow(POLL_SQL, poll_id, user.app_id)
        result = await poll_json(conn, poll, user.user_id)
        data = {
            **message_json(row, Extras(polls={row["id"]: poll_id})),
            "poll": {k: v for k, v in result.items() if k != "my_votes"},
        }
        await outbox.emit(
            conn,
            user.app_id,
            "message.new",
            data,
            channel_id=channel_id,
            user_id=user.user_id,
            seq=row["seq"],
        )
    outbox.wake(request)
    return web.json_response({**result, "seq": row["seq"]}, status=201)


@routes.get("/v1/polls/{poll_id}")
async def get_poll(request: web.Request) -> web.Response:
    user = await require_user(request)
    poll_id = path_id(request, "poll_id")
    async with db.pool(request).acquire() as conn:
        poll = await visible_poll(request, conn, user, poll_id)
        return web.json_response(await poll_json(conn, poll, user.user_id))


@routes.post("/v1/polls/{poll_id}/votes")
async def vote(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "vote")
    poll_id = path_id(request, "poll_id")
    body = await read_body(request, {"option_ids": Field(list_of(identifier(), 1, MAX_OPTIONS))})
    option_ids: list[str] = body["option_ids"]
    async with db.transaction(request) as conn:
        poll = await visible_poll(request, conn, user, poll_id)
        if poll["deleted_at"] is not None:
            raise ApiError(409, "poll_closed", "This poll's message was deleted; it is closed.")
        known = await conn.fetchval(
            "SELECT count(*) FROM poll_options WHERE poll_id = $1 AND id = ANY($2::text[])",
            poll_id,
            option_ids,
        )
        if known != len(option_ids):
            raise unknown_reference("Field option_ids must name options of this poll.")
        if not poll["multiple"] and len(option_ids) != 1:
            raise bad_request("Field option_ids must name exactly one option of this poll.")
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"vote:{poll_id}:{user.user_id}",
        )
        await conn.execute(
            "DELETE FROM poll_votes WHERE poll_id = $1 AND user_id = $2", poll_id, user.user_id
        )
        await conn.execute(
            "INSERT INTO poll_votes (poll_id, option_id, user_id) "
            "SELECT $1, o, $2 FROM unnest($3::text[]) AS o",
            poll_id,
            user.user_id,
            option_ids,
        )
        result = await poll_json(conn, poll, user.user_id)
        await outbox.emit(
            conn,
            user.app_id,
            "poll.updated",
            {k: v for k, v in result.items() if k != "my_votes"},
            channel_id=poll["channel_id"],
        )
    outbox.wake(request)
    return web.json_response(result)

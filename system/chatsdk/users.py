"""Users: their own profile, and other users of the same app."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from chatsdk import db, ratelimit
from chatsdk.auth import require_user
from chatsdk.errors import bad_request, not_found
from chatsdk.validation import Field, path_id, read_body, string, url

routes = web.RouteTableDef()


def user_json(row: Any) -> dict[str, Any]:
    return {
        "user_id": row["id"],
        "name": row["name"],
        "avatar_url": row["avatar_url"],
        "created_at": row["created_at"].isoformat(),
    }


@routes.get("/v1/me")
async def me(request: web.Request) -> web.Response:
    user = await require_user(request)
    row = await db.pool(request).fetchrow(
        "SELECT id, name, avatar_url, created_at FROM users WHERE app_id = $1 AND id = $2",
        user.app_id,
        user.user_id,
    )
    return web.json_response(user_json(row))


@routes.patch("/v1/me")
async def update_me(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "default")
    body = await read_body(
        request,
        {
            "name": Field(string(1, 200), required=False),
            "avatar_url": Field(url(2000, ("https",)), required=False),
        },
    )
    if not body:
        raise bad_request("Give at least one of name, avatar_url.")
    row = await db.pool(request).fetchrow(
        "UPDATE users SET name = coalesce($3, name), avatar_url = coalesce($4, avatar_url) "
        "WHERE app_id = $1 AND id = $2 RETURNING id, name, avatar_url, created_at",
        user.app_id,
        user.user_id,
        body.get("name"),
        body.get("avatar_url"),
    )
    return web.json_response(user_json(row))


@routes.get("/v1/users/{user_id}")
async def get_user(request: web.Request) -> web.Response:
    user = await require_user(request)
    row = await db.pool(request).fetchrow(
        "SELECT id, name, avatar_url, created_at FROM users "
        "WHERE app_id = $1 AND id = $2 AND erased_at IS NULL",
        user.app_id,
        path_id(request, "user_id"),
    )
    if row is None:
        raise not_found("user")
    return web.json_response(user_json(row))

"""Apps and their API keys (operator only)."""

from __future__ import annotations

from aiohttp import web

from chatsdk import db
from chatsdk.audit import OPERATOR, audit
from chatsdk.auth import new_api_key, require_admin
from chatsdk.errors import not_found
from chatsdk.ids import new_id
from chatsdk.validation import Field, path_id, read_body, string

routes = web.RouteTableDef()


@routes.post("/v1/apps")
async def create_app_(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_body(request, {"name": Field(string(1, 200))})
    app_id, key_id = new_id("app"), new_id("key")
    api_key, key_hash = new_api_key(key_id)
    async with db.transaction(request) as conn:
        await conn.execute("INSERT INTO apps (id, name) VALUES ($1, $2)", app_id, body["name"])
        await conn.execute(
            "INSERT INTO api_keys (key_id, app_id, key_hash) VALUES ($1, $2, $3)",
            key_id,
            app_id,
            key_hash,
        )
    audit("app.create", OPERATOR, app_id, key_id=key_id)
    return web.json_response(
        {"app_id": app_id, "name": body["name"], "api_key": api_key, "key_id": key_id}, status=201
    )


@routes.post("/v1/apps/{app_id}/keys")
async def create_key(request: web.Request) -> web.Response:
    await require_admin(request)
    app_id = path_id(request, "app_id")
    key_id = new_id("key")
    api_key, key_hash = new_api_key(key_id)
    async with db.transaction(request) as conn:
        if await conn.fetchval("SELECT 1 FROM apps WHERE id = $1", app_id) is None:
            raise not_found("app")
        await conn.execute(
            "INSERT INTO api_keys (key_id, app_id, key_hash) VALUES ($1, $2, $3)",
            key_id,
            app_id,
            key_hash,
        )
    audit("key.create", OPERATOR, app_id, key_id=key_id)
    return web.json_response({"key_id": key_id, "api_key": api_key}, status=201)


@routes.delete("/v1/apps/{app_id}/keys/{key_id}")
async def revoke_key(request: web.Request) -> web.Response:
    await require_admin(request)
    app_id, key_id = path_id(request, "app_id"), path_id(request, "key_id")
    done = await db.pool(request).fetchval(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
        "WHERE app_id = $1 AND key_id = $2 RETURNING 1",
        app_id,
        key_id,
    )
    if done is None:
        raise not_found("key")
    audit("key.revoke", OPERATOR, app_id, key_id=key_id)
    return web.Response(status=204)

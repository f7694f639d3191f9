"""User tokens: minted by an app's backend, refreshed with rotation, revoked durably."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from chatsdk import db, outbox
from chatsdk.audit import audit
from chatsdk.auth import (
    ACCESS_TTL,
    decode_guarded,
    mint,
    require_app,
    token_version,
    unauthorized,
)
from chatsdk.errors import not_found
from chatsdk.keys import SETTINGS
from chatsdk.validation import Field, identifier, path_id, read_body, string

routes = web.RouteTableDef()


async def _pair(
    request: web.Request, conn: Any, app_id: str, user_id: str, version: int
) -> dict[str, Any]:
    secret = request.app[SETTINGS].jwt_secret
    access, _, _ = mint(secret, app_id, user_id, version, "access")
    refresh, jti, expires = mint(secret, app_id, user_id, version, "refresh")
    await conn.execute(
        "INSERT INTO refresh_tokens (jti, app_id, user_id, expires_at) VALUES ($1, $2, $3, $4)",
        jti,
        app_id,
        user_id,
        datetime.fromtimestamp(expires, UTC),
    )
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": ACCESS_TTL,
    }


@routes.post("/v1/tokens")
async def create_token(request: web.Request) -> web.Response:
    app_id = await require_app(request)
    body = await read_body(
        request, {"user_id": Field(identifier()), "name": Field(string(1, 200), required=False)}
    )
    async with db.transaction(request) as conn:
        row = await conn.fetchrow(
            "INSERT INTO users (app_id, id, name) VALUES ($1, $2, $3) "
            "ON CONFLICT (app_id, id) DO UPDATE SET name = coalesce($3, users.name) "
            "RETURNING token_version, erased_at",
            app_id,
            body["user_id"],
            body.get("name"),
        )
        if row["erased_at"] is not None:
            raise not_found("user")
        pair = await _pair(request, conn, app_id, body["user_id"], row["token_version"])
    return web.json_response({**pair, "user_id": body["user_id"]}, status=201)


@routes.post("/v1/tokens/refresh")
async def refresh_token(request: web.Request) -> web.Response:
    body = await read_body(request, {"refresh_token": Field(string(1, 4096))})
    claims = await decode_guarded(request, body["refresh_token"], "refresh")
    app_id, user_id = claims["app"], claims["sub"]
    async with db.transaction(request) as conn:
        # Rotation: the row is marked used in the same statement that checks it, so two
        # concurrent refreshes with one token cannot both succeed.
        used = await conn.fetchval(
            "UPDATE refresh_tokens SET used_at = now() "
            "WHERE jti = $1 AND app_id = $2 AND user_id = $3 AND used_at IS NULL "
            "AND expires_at > now() RETURNING 1",
            claims["jti"],
            app_id,
            user_id,
        )
        version = await token_version(conn, app_id, user_id)
        if used is None or version is None or version != claims["ver"]:
            raise unauthorized("The refresh token is not valid (used, expired or revoked).")
        pair = await _pair(request, conn, app_id, user_id, version)
    return web.json_response(pair, status=201)


async def revoke_user_tokens(conn: Any, app_id: str, user_id: str) -> bool:
    """Bump the token version (every token dies), and tell open sockets via the outbox."""
    bumped = await conn.fetchval(
        "UPDATE users SET token_version = token_version + 1 "
        "WHERE app_id = $1 AND id = $2 RETURNING token_version",
        app_id,
        user_id,
    )
    if bumped is None:
        return False
    await conn.execute(
        "UPDATE refresh_tokens SET used_at = coalesce(used_at, now()) "
        "WHERE app_id = $1 AND user_id = $2",
        app_id,
        user_id,
    )
    await outbox.emit(conn, app_id, "user.revoked", {"user_id": user_id}, user_id=user_id)
    return True


@routes.post("/v1/users/{user_id}/revoke")
async def revoke(request: web.Request) -> web.Response:
    app_id = await require_app(request)
    user_id = path_id(request, "user_id")
    async with db.transaction(request) as conn:
        if not await revoke_user_tokens(conn, app_id, user_id):
            raise not_found("user")
    outbox.wake(request)
    audit("user.revoke_tokens", f"app:{app_id}", user_id)
    return web.Response(status=204)

"""Demo sign-in for the bundled web client (system/web): anyone may become a user of one demo app.

Off unless CHATSDK_DEMO is set; its routes are then not registered at all (create_app), so a
production deployment answers 404 like for any unknown path. It exists for `preflight up` (a
person tries the web client) and for the browser journeys (checks/testing/test_browser_*.py),
which need users who sign in through the client's own screen.

- `GET /v1/demo` -> 200 {"demo": true}: the client shows its sign-in form only then.
- `POST /v1/demo/session` {name} -> 201 a token pair for the demo user of that name (created on
  first use, so the same name is the same user again), who is made a member of the demo's public
  channels. The demo app, its host user and those channels are created on first use.

The demo app is an app like any other: its users see only the demo's channels, never another
app's data, and its tokens expire, rotate and revoke like every token.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from aiohttp import web

from chatsdk import db, membership, outbox
from chatsdk.auth import User
from chatsdk.errors import ApiError
from chatsdk.messages import Extras, append_message, message_json
from chatsdk.tokens import _pair  # the one place that mints a token pair
from chatsdk.validation import Field, read_body, string

routes = web.RouteTableDef()

DEMO_APP_ID = "app_demo"
DEMO_APP_NAME = "ChatSDK demo"
HOST_USER_ID = "demo-host"
HOST_NAME = "Demo host"
USER_PREFIX = "demo-"
# id, name, the first message (from the host) when the channel is created.
CHANNELS = (
    ("ch_demo_general", "general", "Welcome to the ChatSDK demo. Say hello!"),
    ("ch_demo_random", "random", "Anything goes here."),
)
NAME = string(1, 40)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def user_id_for(name: str) -> str:
    """`Ada Lovelace` -> `demo-ada-lovelace`; names without a letter or digit get `demo-user`."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_name.lower()).strip("-")[:40].strip("-")
    return USER_PREFIX + (slug or "user")


@routes.get("/v1/demo")
async def demo_info(request: web.Request) -> web.Response:
    return web.json_response({"demo": True, "channels": [name for _, name, _ in CHANNELS]})


async def _ensure_world(conn: Any) -> None:
    """The demo app, its host and its channels, each created once (concurrent first sign-ins
    race harmlessly: ON CONFLICT DO NOTHING)."""
    await conn.execute(
        "INSERT INTO apps (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        DEMO_APP_ID,
        DEMO_APP_NAME,
    )
    await conn.execute(
        "INSERT INTO users (app_id, id, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        DEMO_APP_ID,
        HOST_USER_ID,
        HOST_NAME,
    )
    for channel_id, name, welcome in CHANNELS:
        created = await conn.fetchval(
            "INSERT INTO channels (id, app_id, name, kind, created_by) "
            "VALUES ($1, $2, $3, 'public', $4) ON CONFLICT DO NOTHING RETURNING 1",
            channel_id,
            DEMO_APP_ID,
            name,
            HOST_USER_ID,
        )
        if created is None:
            continue
        await conn.execute(
            "INSERT INTO channel_members (channel_id, app_id, user_id, role) "
            "VALUES ($1, $2, $3, 'owner')",
            channel_id,
            DEMO_APP_ID,
            HOST_USER_ID,
        )
        host = User(DEMO_APP_ID, HOST_USER_ID)
        row = await append_message(conn, host, channel_id, kind="text", text=welcome)
        await outbox.emit(
            conn,
            DEMO_APP_ID,
            "message.new",
            message_json(row, Extras()),
            channel_id=channel_id,
            user_id=HOST_USER_ID,
            seq=row["seq"],
        )


@routes.post("/v1/demo/session")
async def demo_session(request: web.Request) -> web.Response:
    body = await read_body(request, {"name": Field(NAME)})
    name = body["name"].strip() or body["name"]
    user_id = user_id_for(name)
    joined: list[str] = []
    async with db.transaction(request) as conn:
        await _ensure_world(conn)
        row = await conn.fetchrow(
            "INSERT INTO users (app_id, id, name) VALUES ($1, $2, $3) "
            "ON CONFLICT (app_id, id) DO UPDATE SET name = $3 "
            "RETURNING token_version, erased_at",
            DEMO_APP_ID,
            user_id,
            name,
        )
        if row["erased_at"] is not None:
            # An erased demo user stays erased (GDPR erasure is final).
            raise ApiError(409, "conflict", "This demo user was erased; use another name.")
        for channel_id, _, _ in CHANNELS:
            added = await conn.fetchval(
                "INSERT INTO channel_members (channel_id, app_id, user_id) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                channel_id,
                DEMO_APP_ID,
                user_id,
            )
            if added is not None:
                joined.append(channel_id)
                await outbox.emit(
                    conn,
                    DEMO_APP_ID,
                    "member.joined",
                    {"channel_id": channel_id, "user_id": user_id, "added_by": HOST_USER_ID},
                    channel_id=channel_id,
                )
        pair = await _pair(request, conn, DEMO_APP_ID, user_id, row["token_version"])
    for channel_id in joined:
        await membership.admit(request, channel_id, [user_id])
    outbox.wake(request)
    return web.json_response(
        {**pair, "app_id": DEMO_APP_ID, "user_id": user_id, "name": name}, status=201
    )

"""The transactional outbox: events are rows written in the same transaction as the change they
announce. A drainer (realtime.py) publishes them to Redis and hands them to webhooks; handlers
call `wake` after their commit so the local drainer publishes at once instead of at its next
poll."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from chatsdk.keys import OUTBOX_WAKE

# The event types of API.md that clients and webhooks see. Internal events (user.revoked,
# channel.*) travel through the outbox too but are never offered to webhooks.
PUBLIC_EVENT_TYPES = (
    "message.new",
    "message.updated",
    "message.deleted",
    "reaction.added",
    "reaction.removed",
    "read.updated",
    "poll.updated",
    "member.joined",
    "member.left",
    "typing",
)


async def emit(
    conn: Any,
    app_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    channel_id: str | None = None,
    user_id: str | None = None,
    seq: int | None = None,
) -> int:
    """Record one event inside the caller's transaction; returns its outbox id."""
    outbox_id: int = await conn.fetchval(
        "INSERT INTO outbox (app_id, channel_id, user_id, type, seq, data) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING id",
        app_id,
        channel_id,
        user_id,
        event_type,
        seq,
        json.dumps(data, separators=(",", ":"), default=str),
    )
    return outbox_id


def wake(request: web.Request | web.Application) -> None:
    app = request.app if isinstance(request, web.Request) else request
    app[OUTBOX_WAKE].set()

"""Channel membership checks, with positive answers cached in Redis.

PostgreSQL is the truth; Redis only remembers "this user is a member of this live channel of this
app" for CACHE_TTL seconds. Only positive answers are cached, so a stale entry can only ever
grant, never deny; to keep it from granting after a removal, removal and channel deletion
overwrite the entry with a REVOKED marker (after their commit), and readers store a positive
entry only with SET NX. A reader that looked at PostgreSQL just before the removal committed
therefore cannot re-plant a stale positive after it: whichever of the two writes comes last, the
marker wins or the reader's NX write fails.

When Redis is down or slow the check goes to PostgreSQL: the cache never fails a request. After a
Redis failure, lookups skip it until it answers a ping again (the worker's RedisBreaker,
chatsdk/dependencies.py) instead of paying a timeout each time. If
Redis is unreachable exactly when a member is removed, a positive entry written before the outage
can outlive the removal by at most CACHE_TTL seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiohttp import web
from redis.exceptions import RedisError

from chatsdk import db
from chatsdk.dependencies import RedisBreaker
from chatsdk.errors import not_found
from chatsdk.keys import DEPENDENCIES, METRICS

CACHE = "membership"
CACHE_TTL = 60  # seconds
REVOKED = "-"
REDIS_TIMEOUT = 0.5  # seconds; a slow Redis must not slow every request by much


MEMBER_SQL = (
    "SELECT 1 FROM channel_members m JOIN channels c ON c.id = m.channel_id "
    "WHERE m.channel_id = $1 AND m.user_id = $2 AND m.app_id = $3 "
    "AND c.app_id = $3 AND c.deleted_at IS NULL"
)


def cache_key(channel_id: str, user_id: str) -> str:
    return f"member:{channel_id}:{user_id}"


def _app(request_or_app: web.Request | web.Application) -> web.Application:
    return request_or_app.app if isinstance(request_or_app, web.Request) else request_or_app


def _breaker(app: web.Application) -> RedisBreaker:
    return app[DEPENDENCIES].redis_breaker


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


async def is_member(
    request_or_app: web.Request | web.Application, app_id: str, channel_id: str, user_id: str
) -> bool:
    """True when `user_id` is a member of the live channel `channel_id` of `app_id`."""
    app = _app(request_or_app)
    metrics = app[METRICS]
    key = cache_key(channel_id, user_id)
    redis = db.redis(app)
    breaker = _breaker(app)
    if breaker.usable():
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                cached = await redis.get(key)
        except (RedisError, OSError, TimeoutError) as exc:
            breaker.trip("the membership cache", exc)
        else:
            # The value is the app id, checked again: a key can only ever answer for its app.
            if cached is not None and _text(cached) == app_id:
                metrics.cache_hits.labels(CACHE).inc()
                return True
    metrics.cache_misses.labels(CACHE).inc()
    found = await db.pool(app).fetchval(MEMBER_SQL, channel_id, user_id, app_id)
    if found is None:
        return False
    if breaker.usable():
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await redis.set(key, app_id, ex=CACHE_TTL, nx=True)
        except (RedisError, OSError, TimeoutError) as exc:
            breaker.trip("the membership cache", exc)
    return True


async def require_member(
    request_or_app: web.Request | web.Application, app_id: str, channel_id: str, user_id: str
) -> None:
    """404 (not 403) unless the user is a member: other apps' channels are not confirmed."""
    if not await is_member(request_or_app, app_id, channel_id, user_id):
        raise not_found("channel")


async def forget(
    request_or_app: web.Request | web.Application, channel_id: str, user_ids: Iterable[str]
) -> None:
    """After a removal or a channel deletion committed: no cached grant may survive it."""
    keys = [cache_key(channel_id, u) for u in user_ids]
    if not keys:
        return
    try:
        async with asyncio.timeout(REDIS_TIMEOUT):
            async with db.redis(_app(request_or_app)).pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, REVOKED, ex=CACHE_TTL)
                await pipe.execute()
    except (RedisError, OSError, TimeoutError) as exc:
        _breaker(_app(request_or_app)).trip("the membership cache", exc)


async def admit(
    request_or_app: web.Request | web.Application, channel_id: str, user_ids: Iterable[str]
) -> None:
    """After members were added: clear REVOKED markers so their grants can be cached again."""
    keys = [cache_key(channel_id, u) for u in user_ids]
    if not keys:
        return
    try:
        async with asyncio.timeout(REDIS_TIMEOUT):
            await db.redis(_app(request_or_app)).delete(*keys)
    except (RedisError, OSError, TimeoutError) as exc:
        _breaker(_app(request_or_app)).trip("the membership cache", exc)

"""Per-user, per-action rate limits: token buckets in Redis, shared by every worker.

A bucket holds up to `burst` tokens and refills at `rate` per second; a request takes one token
or is refused with 429 and an integer Retry-After (seconds until a token is back). The bucket
arithmetic runs in one Lua script on Redis's own clock, so workers with skewed clocks agree.

When Redis is down (the worker's RedisBreaker, chatsdk/dependencies.py, is tripped) the API does
not stop taking writes (messages are stored in PostgreSQL and must keep flowing, see the Redis
drills): it falls back to a bucket of the same size in this worker's memory. Limits then hold
per worker instead of globally (at most N workers times the rate) until Redis answers again;
the fallback is logged once per outage and counted in rate_limited_total like any refusal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiohttp import web
from redis.exceptions import RedisError

from chatsdk import db, faults
from chatsdk.auth import User
from chatsdk.errors import rate_limited
from chatsdk.keys import DEPENDENCIES, METRICS

log = logging.getLogger("chatsdk.ratelimit")


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second
    burst: int


DEFAULT_LIMITS: dict[str, Limit] = {
    "send_message": Limit(20, 40),
    "create_channel": Limit(2, 10),
    "react": Limit(10, 30),
    "vote": Limit(5, 20),
    "upload": Limit(2, 10),
    "default": Limit(50, 100),
}

# Returns {allowed (0/1), seconds until one token is back (string, float)}.
BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class LocalBuckets:
    """The in-memory fallback while Redis is down (one per worker)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, limit: Limit) -> float:
        """0 when allowed, else seconds to wait."""
        now = time.monotonic()
        tokens, ts = self._buckets.get(key, (float(limit.burst), now))
        tokens = min(limit.burst, tokens + (now - ts) * limit.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > 100_000:  # bounded: drop the oldest half
            for old in sorted(self._buckets, key=lambda k: self._buckets[k][1])[:50_000]:
                del self._buckets[old]
        return (1 - tokens) / limit.rate


@dataclass
class RateLimiter:
    limits: dict[str, Limit]
    local: LocalBuckets | None = None  # set while Redis is bypassed


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


async def limit(request: web.Request, user: User, action: str) -> None:
    """Take one token of `action` for `user`, or raise 429 with Retry-After."""
    if faults.injected(faults.NO_RATE_LIMITS):  # test-only (chatsdk/faults.py)
        return
    limiter = request.app[RATE_LIMITER]
    breaker = request.app[DEPENDENCIES].redis_breaker
    lim = limiter.limits.get(action) or limiter.limits["default"]
    key = f"rl:{action}:{user.app_id}:{user.user_id}"
    wait: float | None = None
    if breaker.usable():
        try:
            allowed, wait_text = await db.redis(request).eval(
                BUCKET_SCRIPT, 1, key, str(lim.rate), str(lim.burst)
            )
            wait = 0.0 if int(allowed) else float(wait_text)
            if limiter.local is not None:
                log.info("Redis answers again: rate limits are global again")
                limiter.local = None
        except (RedisError, OSError) as exc:
            breaker.trip("rate limits", exc)
    if wait is None:
        if limiter.local is None:
            log.warning("Redis is unavailable: rate limits fall back to this worker's memory")
            limiter.local = LocalBuckets()
        wait = limiter.local.take(key, lim)
    if wait > 0:
        request.app[METRICS].rate_limited.labels(action).inc()
        raise rate_limited(f"{action.replace('_', ' ')} requests", wait)

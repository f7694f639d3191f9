"""Throttling of failed authentication: guessing keys, tokens or the admin key gets 429.

A failure is a credential that does not verify (errors.BadCredential): an unknown API key id or
a wrong secret, a wrong admin key, a token that does not parse or whose signature does not
verify. An expired or revoked credential was genuine once and does not count, nor does a
request without any credential. Failures are kept in sliding windows, per:

- **client address** (chatsdk/clientaddress.py: the edge's X-Real-IP, an IPv6 client by /64):
  at most AUTH_FAILURE_BURST (25) in AUTH_BURST_WINDOW (10 s) and AUTH_FAILURES_PER_ADDRESS
  (200) in AUTH_THROTTLE_WINDOW (10 min). Past either, every authentication attempt from the
  address gets 429 before its credential is looked at, until enough failures have left the
  window (that is the Retry-After).
- **credential** (an API key id, a token's app and subject, the admin key), whichever addresses
  the failures come from: at most AUTH_FAILURES_PER_CREDENTIAL (30) in AUTH_THROTTLE_WINDOW.
  Past it, a failure for the credential gets 429 instead of 401, and an address that has itself
  failed for this credential within the window gets 429 before its attempt is looked at. Every
  other address is still checked as usual, so the credential's legitimate holder gets in from
  its own address: guessing from many addresses costs one address per guess, and locks nobody
  out.

Every 429 counts in auth_throttled_total; a client or credential that becomes throttled writes
an audit record (action `auth.throttled`).

The windows live in Redis (a sorted set of failure times per address and per credential, kept
to the newest `limit` entries, on Redis's clock in one Lua script). While Redis is down they
live in PostgreSQL (table auth_failures), so the limits stay global across workers instead of
multiplying by the number of workers; after a Redis error PostgreSQL decides alone until Redis
answers a ping again (the worker's RedisBreaker, chatsdk/dependencies.py). What failed during
an outage is not carried back into Redis. With both down nothing is throttled: the credentials'
own checks need PostgreSQL (all but the admin key's), and the throttle must not turn the operator
away during an outage.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from redis.exceptions import RedisError

from chatsdk import db
from chatsdk.audit import audit
from chatsdk.clientaddress import client_address
from chatsdk.errors import ApiError, BadCredential, rate_limited
from chatsdk.keys import DEPENDENCIES, METRICS
from chatsdk.settings import Settings

log = logging.getLogger("chatsdk.auththrottle")

_T = TypeVar("_T")

KEY_PREFIX = "authfail"
THROTTLED_ACTION = "auth.throttled"

# KEYS: the address's log [, the credential's log, the address-and-credential mark].
# ARGV: mode ("check" or "record"), burst, per_address, per_credential, window_ms, member.
# Returns {now_ms, the address's burst-th newest failure (ms, -1: none), its per_address-th
# newest, the credential's per_credential-th newest, 1 if the mark exists}.
WINDOWS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = tonumber(ARGV[2])
local per_address = tonumber(ARGV[3])
local per_credential = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local function nth_newest(key, n)
  local got = redis.call('ZREVRANGE', key, n - 1, n - 1, 'WITHSCORES')
  if got[2] == nil then return -1 end
  return tonumber(got[2])
end
local function add(key, keep)
  redis.call('ZADD', key, now, ARGV[6])
  redis.call('ZREMRANGEBYRANK', key, 0, -keep - 1)
  redis.call('PEXPIRE', key, window)
end
if ARGV[1] == 'record' then
  add(KEYS[1], math.max(burst, per_address))
  if #KEYS == 3 then
    add(KEYS[2], per_credential)
    redis.call('SET', KEYS[3], '1', 'PX', window)
  end
end
local credential, here = -1, 0
if #KEYS == 3 then
  credential = nth_newest(KEYS[2], per_credential)
  here = redis.call('EXISTS', KEYS[3])
end
return {now, nth_newest(KEYS[1], burst), nth_newest(KEYS[1], per_address), credential, here}
"""

RECORD_SQL = "INSERT INTO auth_failures (key) SELECT unnest($1::text[])"
PRUNE_SQL = "DELETE FROM auth_failures WHERE at < clock_timestamp() - make_interval(secs => $1)"
# The same question as the script's, of the rows: the n-th newest failure of each key.
WINDOWS_SQL = """
SELECT clock_timestamp() AS now,
  (SELECT at FROM auth_failures WHERE key = $1 ORDER BY at DESC OFFSET $2 - 1 LIMIT 1)
    AS address_burst,
  (SELECT at FROM auth_failures WHERE key = $1 ORDER BY at DESC OFFSET $3 - 1 LIMIT 1)
    AS address,
  (SELECT at FROM auth_failures WHERE key = $4 ORDER BY at DESC OFFSET $5 - 1 LIMIT 1)
    AS credential,
  EXISTS (SELECT 1 FROM auth_failures
          WHERE key = $6 AND at > clock_timestamp() - make_interval(secs => $7)) AS here
"""
# PostgreSQL failing, and db.pool's 503 (an ApiError) before it ever connected.
POSTGRES_DOWN: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    ApiError,
)


@dataclass(frozen=True)
class Limits:
    burst: int
    burst_window: float  # seconds
    per_address: int
    window: float  # seconds
    per_credential: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            burst=settings.auth_failure_burst,
            burst_window=settings.auth_burst_window,
            per_address=settings.auth_failures_per_address,
            window=settings.auth_throttle_window,
            per_credential=settings.auth_failures_per_credential,
        )


@dataclass
class AuthThrottle:
    """The app's throttle: its limits, whether Redis is being bypassed after an error, and
    whether PostgreSQL failed too."""

    limits: Limits
    on_postgres: bool = False
    stores_down: bool = False


class StoresDown(Exception):
    """Neither Redis nor PostgreSQL can keep the windows."""


AUTH_THROTTLE = web.AppKey("auth_throttle", AuthThrottle)


@dataclass(frozen=True)
class Attempt:
    """One authentication attempt: from where, with what kind of credential, naming which."""

    address: str  # chatsdk.clientaddress.client_address
    kind: str  # a label of auth_throttled_total: admin_key, api_key, access_token, ...
    credential: str | None  # "api key key_…", "user app_…/alice", "admin key"; None: unnamed

    def keys(self) -> list[str]:
        """Storage keys: the address's log, and the credential's log and the pair's mark."""
        keys = [_key("a", self.address)]
        if self.credential is not None:
            keys += [_key("c", self.credential), _key("p", f"{self.credential}\0{self.address}")]
        return keys


def _key(kind: str, name: str) -> str:
    # A digest: bounded length and no client text in Redis or PostgreSQL.
    return f"{KEY_PREFIX}:{kind}:{hashlib.sha256(name.encode()).hexdigest()[:32]}"


def attempt(request: web.Request, kind: str, credential: str | None) -> Attempt:
    return Attempt(client_address(request), kind, credential)


@dataclass(frozen=True)
class Marks:
    """The n-th newest failures that decide the limits (epoch seconds, None: fewer than n)."""

    now: float
    address_burst: float | None  # the address's `burst`-th newest
    address: float | None  # its `per_address`-th newest
    credential: float | None  # the credential's `per_credential`-th newest
    failed_here: bool  # this address failed for this credential within the window


@dataclass(frozen=True)
class Standing:
    """Seconds until each limit lets another failure through (0: not over it)."""

    address_wait: float
    credential_wait: float
    failed_here: bool

    def wait_before_checking(self) -> float:
        """> 0: refuse the attempt without looking at its credential."""
        if self.address_wait > 0:
            return self.address_wait
        return self.credential_wait if self.failed_here else 0.0

    def wait(self) -> float:
        """Seconds until both the address and the credential are under their limits."""
        return max(self.address_wait, self.credential_wait)


def _wait(nth: float | None, window: float, now: float) -> float:
    return 0.0 if nth is None else max(0.0, nth + window - now)


def standing(marks: Marks, limits: Limits) -> Standing:
    address_wait = max(
        _wait(marks.address_burst, limits.burst_window, marks.now),
        _wait(marks.address, limits.window, marks.now),
    )
    credential_wait = _wait(marks.credential, limits.window, marks.now)
    return Standing(address_wait, credential_wait, marks.failed_here)


# -- the two stores ------------------------------------------------------------------------------


def _seconds(ms: Any) -> float | None:
    value = int(ms)
    return None if value < 0 else value / 1000


async def _redis_marks(app: web.Application, att: Attempt, limits: Limits, mode: str) -> Marks:
    keys = att.keys()
    reply = await db.redis(app).eval(
        WINDOWS_SCRIPT,
        len(keys),
        *keys,
        mode,
        str(limits.burst),
        str(limits.per_address),
        str(limits.per_credential),
        str(math.ceil(limits.window * 1000)),
        secrets.token_hex(8),
    )
    now, address_burst, address, credential, here = reply
    return Marks(
        now=int(now) / 1000,
        address_burst=_seconds(address_burst),
        address=_seconds(address),
        credential=_seconds(credential),
        failed_here=bool(here),
    )


def _epoch(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


async def _postgres_marks(app: web.Application, att: Attempt, limits: Limits, mode: str) -> Marks:
    keys = att.keys()
    credential, pair = (keys[1], keys[2]) if len(keys) == 3 else (None, None)
    try:
        async with db.pool(app).acquire() as conn:
            if mode == "record":
                await conn.execute(PRUNE_SQL, limits.window)
                await conn.execute(RECORD_SQL, keys)
            row = await conn.fetchrow(
                WINDOWS_SQL,
                keys[0],
                limits.burst,
                limits.per_address,
                credential,
                limits.per_credential,
                pair,
                limits.window,
            )
    except POSTGRES_DOWN as exc:
        raise StoresDown(str(exc) or type(exc).__name__) from exc
    return Marks(
        row["now"].timestamp(),
        _epoch(row["address_burst"]),
        _epoch(row["address"]),
        _epoch(row["credential"]),
        bool(row["here"]),
    )


async def _marks(app: web.Application, att: Attempt, mode: str) -> Marks:
    """The marks from Redis, or from PostgreSQL while Redis is down; `record` adds a failure
    first. With both down there are none: the throttle lets attempts through to their own
    checks, which need PostgreSQL for everything but the admin key, rather than turn the admin
    key away during an outage."""
    throttle = app[AUTH_THROTTLE]
    try:
        marks = await _marks_from_a_store(app, att, mode)
    except StoresDown as exc:
        if not throttle.stores_down:
            log.warning("neither Redis nor PostgreSQL keeps failed authentication: %s", exc)
            throttle.stores_down = True
        return Marks(time.time(), None, None, None, failed_here=False)
    throttle.stores_down = False
    return marks


async def _marks_from_a_store(app: web.Application, att: Attempt, mode: str) -> Marks:
    throttle = app[AUTH_THROTTLE]
    breaker = app[DEPENDENCIES].redis_breaker
    if breaker.usable():
        try:
            marks = await _redis_marks(app, att, throttle.limits, mode)
        except (RedisError, OSError) as exc:
            breaker.trip("the authentication throttle", exc)
        else:
            if throttle.on_postgres:
                log.info("Redis answers again: failed authentication is kept in Redis again")
                throttle.on_postgres = False
            return marks
    if not throttle.on_postgres:
        log.warning("Redis is unavailable: failed authentication is kept in PostgreSQL")
        throttle.on_postgres = True
    return await _postgres_marks(app, att, throttle.limits, mode)


async def standing_of(app: web.Application, att: Attempt) -> Standing:
    """Where the attempt's address and credential stand, before the attempt."""
    return standing(await _marks(app, att, "check"), app[AUTH_THROTTLE].limits)


async def record_failure(app: web.Application, att: Attempt) -> Standing:
    """Count the attempt as a failure; where its address and credential stand after it."""
    return standing(await _marks(app, att, "record"), app[AUTH_THROTTLE].limits)


# -- the guard -----------------------------------------------------------------------------------


def throttled(app: web.Application, att: Attempt, wait: float, scope: str) -> ApiError:
    """The 429 for a throttled attempt, counted in auth_throttled_total."""
    app[METRICS].auth_throttled.labels(scope, att.kind).inc()
    return rate_limited("failed authentication attempts", wait)


def _audit_new_throttles(att: Attempt, before: Standing, after: Standing) -> None:
    """An audit record for each limit this failure put its address or credential over."""
    actor = f"client:{att.address}"
    if after.address_wait > 0 and before.address_wait == 0:
        audit(
            THROTTLED_ACTION,
            actor,
            att.address,
            outcome="throttled",
            scope="address",
            credential=att.credential or att.kind,
            retry_after_s=str(math.ceil(after.address_wait)),
        )
    if att.credential is not None and after.credential_wait > 0 and before.credential_wait == 0:
        audit(
            THROTTLED_ACTION,
            actor,
            att.credential,
            outcome="throttled",
            scope="credential",
            retry_after_s=str(math.ceil(after.credential_wait)),
        )


async def guard(request: web.Request, att: Attempt, verify: Callable[[], Awaitable[_T]]) -> _T:
    """`verify()` the attempt's credential unless the client is throttled (429). A credential
    that does not verify (BadCredential) is recorded; it keeps its 401 unless the credential was
    already over its limit (then 429): the failures a limit allows are answered 401, the
    attempts after them 429."""
    app = request.app
    before = await standing_of(app, att)
    if (wait := before.wait_before_checking()) > 0:
        scope = "address" if before.address_wait > 0 else "credential"
        raise throttled(app, att, wait, scope)
    try:
        return await verify()
    except BadCredential:
        after = await record_failure(app, att)
        _audit_new_throttles(att, before, after)
        if before.credential_wait > 0:  # a failure for a credential already over its limit
            raise throttled(app, att, after.wait(), "credential") from None
        raise

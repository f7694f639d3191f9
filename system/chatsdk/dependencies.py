"""PostgreSQL and Redis: connected in the background with backoff, checked on demand.

The API starts and answers liveness before either database is up; readiness reports what is
missing. A background task keeps (re)connecting, applies migrations once PostgreSQL answers and
refreshes the up/down gauges, so readiness recovers by itself when a database comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from chatsdk import faults
from chatsdk.background import stop_task
from chatsdk.dbtiming import timed_connection_class
from chatsdk.errors import MigrationError
from chatsdk.metrics import Metrics
from chatsdk.migrate import Migration, apply_migrations, load_migrations
from chatsdk.pooltiming import TimedPool
from chatsdk.sessionreset import reset_session
from chatsdk.settings import Settings

log = logging.getLogger("chatsdk.dependencies")

CONNECT_TIMEOUT = 3.0
COMMAND_TIMEOUT = 10.0
# A pooled connection whose server stops acknowledging what it was sent (a network partition:
# nothing refuses or closes the connection, packets just go nowhere) is dropped by the kernel
# after this long, so the statement on it fails at once (503) instead of after COMMAND_TIMEOUT.
# A busy server still acknowledges at once: TCP does, whatever the query costs.
UNACKNOWLEDGED_TIMEOUT = 3.0
REDIS_SOCKET_TIMEOUT = 2.0
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
MONITOR_INTERVAL = 2.0
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
# Client-side failures of a pooled connection: closed, or left mid-error by a server that
# terminated it while it sat idle (a PostgreSQL restart); the pool replaces such connections.
POOL_ERRORS = (asyncpg.InterfaceError, asyncpg.InternalClientError)


# While request handlers bypass Redis (RedisBreaker), the supervisor pings it this often.
REDIS_RETRY_SECONDS = 1.0


class RedisBreaker:
    """Whether request handlers use Redis now: one per worker, on Dependencies.

    The first Redis failure a handler meets trips it for every handler of the worker: the rate
    limits, the authentication throttle and the membership cache each fall back at once (the
    worker's memory, PostgreSQL) instead of waiting on Redis again. Handlers never probe a Redis
    that failed: a ping that answers (the dependency supervisor's, every REDIS_RETRY_SECONDS
    while tripped, or a readiness check's) resets it. So a Redis that stops answering without
    refusing anything (a network partition: every command waits out its timeout) costs the
    requests in flight at that moment one wait, not one wait per use of Redis per request."""

    def __init__(self) -> None:
        self.tripped = False

    def usable(self) -> bool:
        return not self.tripped

    def trip(self, user: str, exc: BaseException) -> None:
        if not self.tripped:
            log.warning(
                "Redis failed for %s (%s): request handlers bypass it until it answers a ping",
                user,
                type(exc).__name__,
            )
        self.tripped = True

    def reset(self) -> None:
        if self.tripped:
            log.info("Redis answers a ping again: request handlers use it again")
        self.tripped = False


class MigrationState(enum.StrEnum):
    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"


class Dependencies:
    def __init__(
        self, settings: Settings, metrics: Metrics, migrations: list[Migration] | None = None
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._migrations = migrations
        self.pool: Any = None  # TimedPool (over an asyncpg.Pool) once PostgreSQL answered
        # redis-py connects lazily and reconnects on its own; one quick retry covers a
        # connection that went stale while Redis restarted.
        redis_timeout: float | None = REDIS_SOCKET_TIMEOUT
        if faults.injected(faults.UNBOUNDED_REDIS_WAITS):  # test-only (chatsdk/faults.py)
            redis_timeout = None
        self.redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=redis_timeout,
            socket_connect_timeout=redis_timeout,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1),
            health_check_interval=15,
        )
        self.redis_breaker = RedisBreaker()
        self.migrations = MigrationState.PENDING
        # Set once both databases answered and the migrations settled (ok or failed): what a
        # worker needs before it opens its listener (server.start_server).
        self.settled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connect_failures = 0
        self._db_was_up: bool | None = None
        self._redis_was_up: bool | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="chatsdk-dependencies")

    async def check_database(self, wait_s: float) -> bool:
        pool = self.pool
        up = False
        if pool is not None:
            try:
                async with asyncio.timeout(wait_s):
                    async with pool.acquire(timeout=wait_s) as conn:
                        up = await conn.fetchval("SELECT 1", timeout=wait_s) == 1
            except (OSError, TimeoutError, asyncpg.PostgresError, *POOL_ERRORS) as exc:
                log.debug("database check failed: %s", type(exc).__name__)
        self._metrics.db_up.set(1 if up else 0)
        return up

    async def check_redis(self, wait_s: float) -> bool:
        up = False
        try:
            async with asyncio.timeout(wait_s):
                up = bool(await self.redis.ping())
        except Exception as exc:  # any failure means "not up"
            log.debug("redis check failed: %s", type(exc).__name__)
        if up:
            self.redis_breaker.reset()
        self._metrics.redis_up.set(1 if up else 0)
        return up

    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                settled = await self._tick()
            except Exception:
                # A bug here must not silently end reconnection for the life of the process.
                log.exception("dependency supervisor failed; retrying")
                settled = False
            if settled:
                self.settled.set()
                delay = BACKOFF_FIRST
                await asyncio.sleep(MONITOR_INTERVAL)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            if self.redis_breaker.tripped:  # handlers wait for the next ping to use Redis again
                delay = min(delay, REDIS_RETRY_SECONDS)

    async def _tick(self) -> bool:
        """Connect what is missing, migrate once, refresh the gauges; True when all is well."""
        if self.pool is None:
            await self._connect_database()
        if self.pool is not None and self.migrations is MigrationState.PENDING:
            await self._migrate()
        db_up = await self.check_database(CONNECT_TIMEOUT)
        redis_up = await self.check_redis(REDIS_SOCKET_TIMEOUT)
        if db_up != self._db_was_up:
            log.log(logging.INFO if db_up else logging.WARNING, "database %s", _updown(db_up))
        if redis_up != self._redis_was_up:
            log.log(logging.INFO if redis_up else logging.WARNING, "redis %s", _updown(redis_up))
        self._db_was_up, self._redis_was_up = db_up, redis_up
        return db_up and redis_up and self.migrations is not MigrationState.PENDING

    async def _connect_database(self) -> None:
        bounded = not faults.injected(faults.UNBOUNDED_DB_WAITS)  # test-only (chatsdk/faults.py)
        try:
            pool = await asyncpg.create_pool(
                self._settings.database_url,
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                # Unbounded: asyncpg's own default, 60 s, longer than any client waits.
                timeout=CONNECT_TIMEOUT if bounded else 60.0,
                command_timeout=COMMAND_TIMEOUT if bounded else None,
                max_inactive_connection_lifetime=60.0,
                # Every statement observed in db_query_duration_seconds{operation}.
                connection_class=timed_connection_class(self._metrics.db_query_duration),
                # asyncpg's reset query, skipped for a connection marked as left unchanged.
                reset=reset_session,
                init=_drop_when_unacknowledged if bounded else None,
            )
            # Every acquisition's wait observed in db_pool_wait_seconds.
            self.pool = TimedPool(
                pool, self._metrics.db_pool_wait, self._metrics.db_pool_acquire_failures
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, *POOL_ERRORS) as exc:
            # No host answered, or none accepts writes (target_session_attrs=read-write: a
            # standby not promoted yet). Warn on the first failure and then once a minute or
            # so, not on every attempt.
            level = logging.WARNING if self._connect_failures % 12 == 0 else logging.DEBUG
            self._connect_failures += 1
            log.log(
                level,
                "database not reachable yet: %s",
                type(exc).__name__,
                extra={"fields": {"attempts": self._connect_failures}},
            )
        else:
            self._connect_failures = 0
            log.info("database pool created")

    async def _migrate(self) -> None:
        try:
            migrations = self._migrations if self._migrations is not None else load_migrations()
            async with self.pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                applied = await apply_migrations(conn, migrations)
        except MigrationError as exc:
            # Not retried: a human must fix the files or the ledger; readiness stays 503.
            self.migrations = MigrationState.FAILED
            log.error("migrations failed: %s", exc)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("migrations not applied yet: %s: %s", type(exc).__name__, exc)
        else:
            self.migrations = MigrationState.OK
            log.info("migrations up to date", extra={"fields": {"applied": applied}})

    async def close(self, wait_s: float) -> None:
        if self._task is not None:
            await stop_task(self._task)
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), wait_s)
            except TimeoutError:
                log.warning("database pool did not close in %.1f s; terminating it", wait_s)
                self.pool.terminate()
        try:
            await asyncio.wait_for(self.redis.aclose(), wait_s)
        except TimeoutError:
            log.warning("redis client did not close in %.1f s", wait_s)


async def _drop_when_unacknowledged(conn: Any) -> None:
    """TCP_USER_TIMEOUT on a new pooled connection (see UNACKNOWLEDGED_TIMEOUT), where it is a
    TCP socket (Linux); a Unix socket has no peer to lose."""
    transport = conn._transport  # asyncpg gives no public way to its socket
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(AttributeError, OSError):  # not Linux: the statement's bound
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(UNACKNOWLEDGED_TIMEOUT * 1000)
            )


def _updown(up: bool) -> str:
    return "up" if up else "down"

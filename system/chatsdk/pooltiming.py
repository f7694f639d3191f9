"""db_pool_wait_seconds: how long each piece of work waited for a PostgreSQL connection.

Query time (dbtiming.py) says nothing about a pool that is too small: a request can spend most
of its life queued for a connection while every statement it runs is fast. `TimedPool` wraps the
asyncpg Pool so every acquisition is timed, whichever way it is made: `async with
pool.acquire()`, `await pool.acquire()`, or the pool's own shortcuts (`pool.fetchrow(...)`),
which asyncpg would otherwise run on a connection acquired behind the wrapper's back.

Only acquisitions that got a connection are observed. One that timed out, was cancelled or
failed did not "wait N seconds for a connection", it got none: it is counted in
db_pool_acquire_failures_total{reason} instead, so a saturated pool shows in both series and a
wait histogram never holds a number that is really a timeout setting. The wrapped pool does the
acquiring itself, so its timeout, cancellation and release behaviour are asyncpg's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from types import TracebackType
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram

# Methods of asyncpg.Pool that acquire a connection of their own and run the same-named method
# on it; the wrapper runs them on a connection acquired through the timer instead.
SHORTCUTS = frozenset(
    {
        "execute",
        "executemany",
        "fetch",
        "fetchrow",
        "fetchval",
        "fetchmany",
        "copy_from_table",
        "copy_from_query",
        "copy_to_table",
        "copy_records_to_table",
    }
)
FAILURE_REASONS = ("timeout", "cancelled", "error")


class TimedPool:
    """An asyncpg Pool whose acquisitions are observed; everything else is the pool's own."""

    def __init__(self, pool: asyncpg.Pool, wait: Histogram, failures: Counter) -> None:
        self._pool = pool
        self._wait = wait
        self._failures = failures

    def acquire(self, *, timeout: float | None = None) -> TimedAcquire:
        return TimedAcquire(self, timeout)

    async def timed_acquire(self, limit_s: float | None) -> Any:
        # `limit_s` is asyncpg's acquire `timeout=` (a bare `timeout` reads as the whole call's).
        started = time.perf_counter()
        try:
            connection = await self._pool.acquire(timeout=limit_s)
        except TimeoutError:
            self._failures.labels("timeout").inc()
            raise
        except asyncio.CancelledError:
            self._failures.labels("cancelled").inc()
            raise
        except Exception:
            self._failures.labels("error").inc()
            raise
        # No await between the acquisition and here: nothing can cancel us in between.
        self._wait.observe(time.perf_counter() - started)
        return connection

    def __getattr__(self, name: str) -> Any:
        if name in SHORTCUTS:
            return _Shortcut(self, name)
        return getattr(self._pool, name)


class TimedAcquire:
    """`async with pool.acquire() as conn` and `conn = await pool.acquire()`, as asyncpg's
    PoolAcquireContext, through the timer."""

    __slots__ = ("_connection", "_pool", "_timeout")

    def __init__(self, pool: TimedPool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._connection: Any = None

    async def __aenter__(self) -> Any:
        if self._connection is not None:
            raise asyncpg.InterfaceError("a connection is already acquired")
        self._connection = await self._pool.timed_acquire(self._timeout)
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        await self._pool.release(connection)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._pool.timed_acquire(self._timeout).__await__()


class _Shortcut:
    __slots__ = ("_name", "_pool")

    def __init__(self, pool: TimedPool, name: str) -> None:
        self._pool = pool
        self._name = name

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # As asyncpg's own shortcuts: no acquire timeout, `timeout=` is the statement's.
        async with self._pool.acquire() as connection:
            return await getattr(connection, self._name)(*args, **kwargs)

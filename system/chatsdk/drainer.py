"""The outbox drainer and the Redis pub/sub listener: one of each per worker.

The drainer publishes committed outbox rows to one Redis channel and marks them published in
the same PostgreSQL transaction that locked them (`FOR UPDATE SKIP LOCKED`, so several workers
share the work without publishing a row twice in the normal case). When Redis refuses the
publish, the transaction rolls back and nothing is marked: the rows are published after Redis
comes back, so an outage between commit and publish loses no event. A crash between publish
and commit publishes a row twice at worst; sockets drop duplicate `message.new` events by seq.

The listener subscribes to that channel and hands every event to a callback; it reconnects with
backoff, and reports every (re)subscription so that sockets can fetch from PostgreSQL whatever
was published while the subscription was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from chatsdk import db
from chatsdk.background import stop_task
from chatsdk.keys import METRICS, OUTBOX_CONSUMERS, OUTBOX_WAKE

log = logging.getLogger("chatsdk.outbox")

EVENTS_CHANNEL = "chatsdk:events"
POLL_INTERVAL = 0.2  # picks up rows committed by other workers or left behind by a crash
BATCH = 200
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 2.0  # a reconnect attempt every 2 s costs little and keeps recovery quick
PUBLISH_TIMEOUT = 3.0
ACQUIRE_TIMEOUT = 3.0
FINAL_DRAIN_TIMEOUT = 0.5
PRUNE_EVERY = 60.0
PRUNE_BATCH = 5000
PRUNE_MAX_BATCHES = 20
LISTEN_POLL = 1.0
SUBSCRIBE_TIMEOUT = 3.0

SELECT_DUE = (
    "SELECT id, app_id, channel_id, user_id, type, seq, data, created_at, "
    "extract(epoch FROM clock_timestamp() - created_at)::float8 AS lag "
    "FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
)
MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = any($1::bigint[])"
PRUNE = (
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox "
    "WHERE published_at < now() - interval '1 hour' LIMIT $1)"
)


def event_payload(row: Any) -> str:
    """The published JSON of an outbox row; `data` is spliced in as stored (jsonb text)."""
    head = json.dumps(
        {
            "id": row["id"],
            "app_id": row["app_id"],
            "channel_id": row["channel_id"],
            "user_id": row["user_id"],
            "type": row["type"],
            "seq": row["seq"],
        },
        separators=(",", ":"),
    )
    data = row["data"] if isinstance(row["data"], str) else json.dumps(row["data"])
    return f'{head[:-1]},"data":{data}}}'


async def publish(app: web.Application, payload: str) -> None:
    """One ephemeral event straight to Redis (typing); raises when Redis is down."""
    async with asyncio.timeout(PUBLISH_TIMEOUT):
        await db.redis(app).publish(EVENTS_CHANNEL, payload)


async def drain_once(app: web.Application) -> int:
    """Publish one batch of due rows; returns how many. Raises when a dependency fails."""
    pool = db.pool(app)
    async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn, conn.transaction():
        rows = await conn.fetch(SELECT_DUE, BATCH)
        if not rows:
            return 0
        # Consumers first (their writes roll back with ours), then Redis, then the mark: a
        # failed publish leaves every row due, to be retried.
        for consumer in app[OUTBOX_CONSUMERS]:
            await consumer(conn, list(rows))
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            async with db.redis(app).pipeline(transaction=False) as pipe:
                for row in rows:
                    pipe.publish(EVENTS_CHANNEL, event_payload(row))
                await pipe.execute()
        await conn.execute(MARK_PUBLISHED, [row["id"] for row in rows])
    metrics = app[METRICS]
    metrics.outbox_published.inc(len(rows))
    for row in rows:
        metrics.outbox_lag.observe(max(float(row["lag"]), 0.0))
    return len(rows)


async def prune(app: web.Application) -> int:
    """Delete rows published long ago, in small batches, so the table stays small."""
    deleted = 0
    for _ in range(PRUNE_MAX_BATCHES):
        status: str = await db.pool(app).execute(PRUNE, PRUNE_BATCH, timeout=10.0)
        count = int(status.rsplit(" ", 1)[-1])
        deleted += count
        if count < PRUNE_BATCH:
            break
    return deleted


class Drainer:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.failures = 0
        self._last_prune = 0.0

    async def run(self) -> None:
        wake = self.app[OUTBOX_WAKE]
        loop = asyncio.get_running_loop()
        delay = BACKOFF_FIRST
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await wake.wait()
            # Cleared before draining: a commit during the drain wakes the next round.
            wake.clear()
            try:
                while await drain_once(self.app) == BATCH:
                    pass
                if loop.time() - self._last_prune > PRUNE_EVERY:
                    self._last_prune = loop.time()
                    pruned = await prune(self.app)
                    if pruned:
                        log.info("pruned %d published outbox rows", pruned)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL or Redis down, or a consumer failed
                self._report(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if self.failures:
                log.info("outbox draining again after %d failed attempts", self.failures)
                self.failures = 0
            delay = BACKOFF_FIRST

    def _report(self, exc: Exception) -> None:
        # The first failure and then about once a minute at warning level, not every attempt.
        level = logging.WARNING if self.failures % 12 == 0 else logging.DEBUG
        self.failures += 1
        log.log(level, "outbox drain failed, retrying: %s", type(exc).__name__)


async def outbox_drainer_context(app: web.Application) -> AsyncIterator[None]:
    drainer = Drainer(app)
    task = asyncio.create_task(drainer.run(), name="chatsdk-outbox-drainer")
    yield
    await stop_task(task)
    # Best effort: whatever is still due is published by another worker's poll or at restart.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(FINAL_DRAIN_TIMEOUT):
            await drain_once(app)


async def listen(
    app: web.Application,
    on_event: Callable[[bytes], None],
    on_subscribed: Callable[[], None],
) -> None:
    """Forever: subscribe, hand events over, and on any failure reconnect with backoff."""
    delay = BACKOFF_FIRST
    failures = 0
    me = asyncio.current_task()
    while True:
        pubsub = db.redis(app).pubsub()
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await pubsub.subscribe(EVENTS_CHANNEL)
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=False, timeout=LISTEN_POLL
                )
                # redis-py's get_message(timeout=...) can swallow a cancellation (GitHub
                # redis/redis-py#3108 and #3225); without this check the shutdown would wait
                # forever.
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError
                if message is None:
                    continue
                if message["type"] == "message":
                    on_event(message["data"])
                elif message["type"] == "subscribe":
                    # Also sent when redis-py re-subscribes by itself after a reconnect.
                    if failures:
                        log.info("pub/sub subscribed again after %d failures", failures)
                    failures, delay = 0, BACKOFF_FIRST
                    on_subscribed()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis down or restarted
            if me is not None and me.cancelling():
                raise asyncio.CancelledError from exc
            level = logging.WARNING if failures % 12 == 0 else logging.DEBUG
            failures += 1
            log.log(level, "pub/sub listener failed, reconnecting: %s", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        finally:
            with contextlib.suppress(Exception):
                # Typed by reference, not by call: redis-py types `aclose` from 8.2 on and
                # leaves it untyped before, and strict mypy must accept both.
                close: Callable[[], Awaitable[None]] = pubsub.aclose
                async with asyncio.timeout(1.0):
                    await close()

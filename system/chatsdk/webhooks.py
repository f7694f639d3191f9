"""Webhooks: an app's backend hears about events by HTTP POST, signed, retried, logged.

- Driven by the outbox: `enqueue` runs inside the drainer's transaction that marks rows
  published, so an event becomes a delivery row exactly when it is published (ON CONFLICT DO
  NOTHING makes a re-drained row harmless).
- A sender loop per worker leases due deliveries (FOR UPDATE SKIP LOCKED, then a lease time in
  next_attempt_at), posts them without holding a transaction, and records the result. A worker
  that dies mid-send leaves the lease to expire and another worker retries: at-least-once, and
  receivers dedupe by the event id. Events of a channel may arrive out of order (they are sent
  concurrently and retried independently); receivers order them by `seq`.
- Body: {id, type, app_id, channel_id, seq, data, created_at}; headers X-ChatSDK-Signature
  (sha256=<hex HMAC-SHA256 of the raw body with the webhook's secret>), X-ChatSDK-Event-Id,
  X-ChatSDK-Event-Type, X-ChatSDK-Timestamp. No redirects are followed; 5 s timeout.
- A non-2xx answer or an error is retried after base * 2^(attempts-1) seconds (with jitter,
  capped); after 10 consecutive failures the webhook is disabled and its pending deliveries fail.

SSRF: destinations are not restricted here, because the test suite needs a receiver on
127.0.0.1. A production deployment must refuse (and re-check at connect time, against DNS
rebinding) loopback, link-local (169.254.0.0/16, cloud metadata), private and internal
addresses, or send webhooks through an egress proxy that does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from aiohttp import web

from chatsdk import db, faults, outbox
from chatsdk.auth import require_app
from chatsdk.background import stop_task
from chatsdk.errors import ApiError, bad_request, not_found
from chatsdk.ids import new_id
from chatsdk.keys import METRICS, SETTINGS
from chatsdk.validation import Field, list_of, one_of, path_id, query_int, read_body, url

log = logging.getLogger("chatsdk.webhooks")

routes = web.RouteTableDef()

EVENT_TYPES = outbox.PUBLIC_EVENT_TYPES
MAX_WEBHOOKS_PER_APP = 20
DISABLE_AFTER_FAILURES = 10
MAX_ATTEMPTS = 15  # one poisonous event cannot retry forever while others succeed
BACKOFF_CAP = 300.0
SEND_TIMEOUT = 5.0
LEASE_SECONDS = 30  # > SEND_TIMEOUT plus bookkeeping: a lease outlives its attempt
BATCH = 20
IDLE_POLL = 0.25
MAX_ERROR_CHARS = 200
SIGNATURE_HEADER = "X-ChatSDK-Signature"

LEASE_DUE = """
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET next_attempt_at = now() + make_interval(secs => $2)
FROM due, webhooks w
WHERE d.id = due.id AND w.id = d.webhook_id
RETURNING d.id, d.webhook_id, d.outbox_id, d.event_type, d.payload::text AS body, d.attempts,
          w.url, w.secret, w.disabled_at
"""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(base: float, attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: exponential, capped, with
    +-20 % jitter so that retries of many deliveries do not arrive in lockstep."""
    delay: float = min(BACKOFF_CAP, base * 2.0 ** max(0, attempts - 1))
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret


def _webhook_url(name: str, value: Any) -> str:
    text: str = url(2000, ("https", "http"))(name, value)
    parts = urlsplit(text)
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise bad_request(f"Field {name} must be an http(s) URL with a host and no credentials.")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise bad_request(f"Field {name} has an invalid port.") from None
    return text


def _matches(events: list[str], event_type: str) -> bool:
    return event_type in events or ("*" in events and event_type in EVENT_TYPES)


@routes.post("/v1/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    app_id = await require_app(request)
    body = await read_body(
        request,
        {
            "url": Field(_webhook_url),
            "events": Field(list_of(one_of(*EVENT_TYPES, "*"), 1, len(EVENT_TYPES) + 1)),
        },
    )
    webhook_id = new_id("wh")
    secret = "whsec_" + secrets.token_urlsafe(32)
    async with db.transaction(request) as conn:
        # Serialise creations per app so the cap holds under concurrency.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('webhooks:' || $1))", app_id)
        count = await conn.fetchval("SELECT count(*) FROM webhooks WHERE app_id = $1", app_id)
        if count >= MAX_WEBHOOKS_PER_APP:
            raise ApiError(
                409, "too_many_webhooks", f"An app can have at most {MAX_WEBHOOKS_PER_APP}."
            )
        # The secret is stored as is: signing needs it (a hash would not do). It is shown once.
        row = await conn.fetchrow(
            "INSERT INTO webhooks (id, app_id, url, events, secret) VALUES ($1, $2, $3, $4, $5) "
            "RETURNING created_at",
            webhook_id,
            app_id,
            body["url"],
            body["events"],
            secret,
        )
    return web.json_response(
        {
            "webhook_id": webhook_id,
            "secret": secret,
            "url": body["url"],
            "events": body["events"],
            "created_at": row["created_at"].isoformat(),
        },
        status=201,
    )


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


@routes.get("/v1/webhooks/{webhook_id}/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    app_id = await require_app(request)
    webhook_id = path_id(request, "webhook_id")
    limit = query_int(request, "limit", 50, 1, 200)
    pool = db.pool(request)
    hook = await pool.fetchrow(
        "SELECT id, url, events, created_at, consecutive_failures, disabled_at "
        "FROM webhooks WHERE id = $1 AND app_id = $2",
        webhook_id,
        app_id,
    )
    if hook is None:
        raise not_found("webhook")
    rows = await pool.fetch(
        "SELECT id, outbox_id, event_type, status, attempts, next_attempt_at, last_status, "
        "last_error, created_at, delivered_at FROM webhook_deliveries "
        "WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2",
        webhook_id,
        limit,
    )
    return web.json_response(
        {
            "webhook": {
                "webhook_id": hook["id"],
                "url": hook["url"],
                "events": list(hook["events"]),
                "created_at": _iso(hook["created_at"]),
                "consecutive_failures": hook["consecutive_failures"],
                "disabled_at": _iso(hook["disabled_at"]),
            },
            "deliveries": [
                {
                    "delivery_id": str(r["id"]),
                    "event_id": f"evt_{r['outbox_id']}",
                    "event_type": r["event_type"],
                    "status": r["status"],
                    "attempts": r["attempts"],
                    "last_status": r["last_status"],
                    "last_error": r["last_error"],
                    "created_at": _iso(r["created_at"]),
                    "next_attempt_at": _iso(r["next_attempt_at"])
                    if r["status"] == "pending"
                    else None,
                    "delivered_at": _iso(r["delivered_at"]),
                }
                for r in rows
            ],
        }
    )


def event_body(row: Any) -> dict[str, Any]:
    data = row["data"]
    if isinstance(data, str):
        data = json.loads(data)
    created = row["created_at"]
    return {
        "id": f"evt_{row['id']}",
        "type": row["type"],
        "app_id": row["app_id"],
        "channel_id": row["channel_id"],
        "seq": row["seq"],
        "data": data,
        "created_at": created.isoformat() if hasattr(created, "isoformat") else created,
    }


async def enqueue(conn: Any, rows: list[Any]) -> None:
    """Outbox consumer: one delivery per (event, enabled webhook of its app that wants it)."""
    wanted = [r for r in rows if r["type"] in EVENT_TYPES]
    if not wanted:
        return
    hooks = await conn.fetch(
        "SELECT id, app_id, events FROM webhooks "
        "WHERE app_id = any($1::text[]) AND disabled_at IS NULL",
        sorted({r["app_id"] for r in wanted}),
    )
    if not hooks:
        return
    hook_ids: list[str] = []
    outbox_ids: list[int] = []
    types: list[str] = []
    payloads: list[str] = []
    for row in wanted:
        body: str | None = None
        for hook in hooks:
            if hook["app_id"] != row["app_id"] or not _matches(list(hook["events"]), row["type"]):
                continue
            if body is None:
                body = json.dumps(event_body(row), separators=(",", ":"), default=str)
            hook_ids.append(hook["id"])
            outbox_ids.append(row["id"])
            types.append(row["type"])
            payloads.append(body)
    if hook_ids:
        await conn.execute(
            "INSERT INTO webhook_deliveries (webhook_id, outbox_id, event_type, payload) "
            "SELECT w, o, t, p::jsonb "
            "FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS x(w, o, t, p) "
            "ON CONFLICT (webhook_id, outbox_id) DO NOTHING",
            hook_ids,
            outbox_ids,
            types,
            payloads,
        )


async def _post(session: aiohttp.ClientSession, delivery: Any) -> tuple[int | None, str | None]:
    """(HTTP status, error) of one attempt."""
    body = delivery["body"].encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "chatsdk-webhooks/1",
        SIGNATURE_HEADER: sign(delivery["secret"], body),
        "X-ChatSDK-Event-Id": f"evt_{delivery['outbox_id']}",
        "X-ChatSDK-Event-Type": delivery["event_type"],
        "X-ChatSDK-Timestamp": str(int(time.time())),
        "X-ChatSDK-Delivery-Attempt": str(delivery["attempts"] + 1),
    }
    if faults.injected(faults.UNSIGNED_WEBHOOKS):  # test-only (chatsdk/faults.py)
        del headers[SIGNATURE_HEADER]
    try:
        async with session.post(
            delivery["url"],
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT),
        ) as resp:
            status = resp.status
    except TimeoutError:
        return None, f"timed out after {SEND_TIMEOUT:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return None, f"request failed: {type(exc).__name__}"
    if 200 <= status < 300:
        return status, None
    return status, f"HTTP {status}"


async def _record(
    app: web.Application, delivery: Any, status: int | None, error: str | None
) -> str:
    """Store the attempt's result; returns the outcome for the metric."""
    metrics = app[METRICS]
    async with db.transaction(app) as conn:
        if error is None:
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), "
                "attempts = attempts + 1, last_status = $2, last_error = NULL WHERE id = $1",
                delivery["id"],
                status,
            )
            await conn.execute(
                "UPDATE webhooks SET consecutive_failures = 0 WHERE id = $1",
                delivery["webhook_id"],
            )
            outcome = "delivered"
        else:
            attempts = delivery["attempts"] + 1
            delay = backoff(app[SETTINGS].webhook_backoff_base, attempts)
            gave_up = attempts >= MAX_ATTEMPTS
            await conn.execute(
                "UPDATE webhook_deliveries SET attempts = $2, last_status = $3, last_error = $4, "
                "next_attempt_at = now() + make_interval(secs => $5), "
                "status = CASE WHEN $6 THEN 'failed' ELSE status END WHERE id = $1",
                delivery["id"],
                attempts,
                status,
                error[:MAX_ERROR_CHARS],
                delay,
                gave_up,
            )
            failures = await conn.fetchval(
                "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1 "
                "WHERE id = $1 RETURNING consecutive_failures",
                delivery["webhook_id"],
            )
            outcome = "failed" if gave_up else "retry"
            if failures is not None and failures >= DISABLE_AFTER_FAILURES:
                disabled = await conn.fetchval(
                    "UPDATE webhooks SET disabled_at = now() "
                    "WHERE id = $1 AND disabled_at IS NULL RETURNING id",
                    delivery["webhook_id"],
                )
                await _fail_pending(conn, delivery["webhook_id"])
                if disabled is not None:
                    log.warning(
                        "webhook disabled after %d consecutive failures",
                        failures,
                        extra={"fields": {"webhook_id": delivery["webhook_id"]}},
                    )
                outcome = "failed"
    metrics.webhook_deliveries.labels(outcome).inc()
    return outcome


async def _fail_pending(conn: Any, webhook_id: str) -> None:
    await conn.execute(
        "UPDATE webhook_deliveries SET status = 'failed', "
        "last_error = coalesce(last_error, 'webhook disabled') "
        "WHERE webhook_id = $1 AND status = 'pending'",
        webhook_id,
    )


async def deliver_due(app: web.Application, session: aiohttp.ClientSession) -> int:
    """Lease and send one batch of due deliveries; returns how many were leased."""
    async with db.transaction(app) as conn:
        leased = await conn.fetch(LEASE_DUE, BATCH, float(LEASE_SECONDS))
        disabled = {d["webhook_id"] for d in leased if d["disabled_at"] is not None}
        for webhook_id in disabled:
            # Enqueued in the instant the webhook was being disabled: never sent.
            await _fail_pending(conn, webhook_id)
    sendable = [d for d in leased if d["disabled_at"] is None]
    if sendable:
        results = await asyncio.gather(*(_post(session, d) for d in sendable))
        for delivery, (status, error) in zip(sendable, results, strict=True):
            await _record(app, delivery, status, error)
    return len(leased)


async def _sender_loop(app: web.Application, session: aiohttp.ClientSession) -> None:
    while True:
        try:
            leased = await deliver_due(app, session)
        except (
            ApiError,
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as exc:
            log.debug("webhook sender waiting for the database: %s", type(exc).__name__)
            leased = 0
            await asyncio.sleep(1.0)
        except Exception:
            log.exception("webhook sender failed; continuing")
            leased = 0
            await asyncio.sleep(1.0)
        if leased < BATCH:
            await asyncio.sleep(IDLE_POLL * random.uniform(0.5, 1.5))  # noqa: S311


async def sender_context(app: web.Application) -> AsyncIterator[None]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=50, limit_per_host=10, ttl_dns_cache=60),
        timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT),
        trust_env=False,
    )
    task = asyncio.create_task(_sender_loop(app, session), name="chatsdk-webhooks")
    yield
    await stop_task(task)
    await session.close()


cleanup_contexts = [sender_context]
outbox_consumers = [enqueue]

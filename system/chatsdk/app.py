"""The application factory: wires routes, middlewares and cleanup contexts; does no I/O."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from chatsdk import (
    apps,
    channels,
    demo,
    errortracking,
    gdpr,
    messages,
    polls,
    realtime,
    retention,
    runtime,
    service,
    status,
    tokens,
    uploads,
    users,
    webhooks,
)
from chatsdk.auth import no_credentials_in_query
from chatsdk.auththrottle import AUTH_THROTTLE, AuthThrottle, Limits
from chatsdk.dependencies import Dependencies
from chatsdk.keys import (
    DEPENDENCIES,
    LIFECYCLE,
    METRICS,
    OUTBOX_CONSUMERS,
    OUTBOX_WAKE,
    SETTINGS,
    WEBSOCKETS,
    Lifecycle,
)
from chatsdk.metrics import Metrics
from chatsdk.middlewares import (
    add_request_id_header,
    drain_middleware,
    error_middleware,
    metrics_middleware,
    request_id_middleware,
)
from chatsdk.ratelimit import DEFAULT_LIMITS, RATE_LIMITER, RateLimiter
from chatsdk.settings import Settings

log = logging.getLogger("chatsdk.app")

# Both come out of the settings' POOL_CLOSE_RESERVE_SECONDS, so the drain ends within 15 s.
SOCKETS_CLOSE_TIMEOUT = 1.0
POOL_CLOSE_TIMEOUT = 0.75  # each of the PostgreSQL pool and the Redis client


async def dependencies_context(app: web.Application) -> AsyncIterator[None]:
    deps = Dependencies(app[SETTINGS], app[METRICS])
    app[DEPENDENCIES] = deps
    deps.start()
    yield
    await deps.close(POOL_CLOSE_TIMEOUT)


async def close_websockets(app: web.Application) -> None:
    # Concurrently and bounded: one unresponsive client must not hold the whole drain.
    sockets = app[WEBSOCKETS]
    closing = [
        ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
        for ws in list(sockets)
    ]
    if not closing:
        return
    try:
        async with asyncio.timeout(SOCKETS_CLOSE_TIMEOUT):
            await asyncio.gather(*closing, return_exceptions=True)
    except TimeoutError:
        log.warning(
            "some WebSockets did not acknowledge the close within %.1f s", SOCKETS_CLOSE_TIMEOUT
        )


MODULES = (
    apps,
    tokens,
    users,
    channels,
    messages,
    polls,
    uploads,
    gdpr,
    webhooks,
    realtime,
    runtime,
    errortracking,
    retention,
    status,
)


def create_app(settings: Settings) -> web.Application:
    # Outermost first: the request id exists before anything logs or fails.
    app = web.Application(
        middlewares=[
            drain_middleware,
            errortracking.scope_middleware,
            request_id_middleware,
            metrics_middleware,
            error_middleware,
            no_credentials_in_query,
        ]
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[LIFECYCLE] = Lifecycle()
    app[OUTBOX_WAKE] = asyncio.Event()
    app[RATE_LIMITER] = RateLimiter(dict(DEFAULT_LIMITS))
    app[AUTH_THROTTLE] = AuthThrottle(Limits.of(settings))
    sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
    app[WEBSOCKETS] = sockets
    app.cleanup_ctx.append(dependencies_context)
    app.on_response_prepare.append(add_request_id_header)
    app.on_shutdown.append(close_websockets)

    app.router.add_get("/v1/health/live", service.live, name="health_live")
    app.router.add_get("/v1/health/ready", service.ready, name="health_ready")
    app.router.add_get("/v1/openapi.json", service.openapi, name="openapi")
    app.router.add_get("/metrics", service.metrics_endpoint, name="metrics")
    # Each area module has `routes`, and may have `cleanup_contexts` (its background tasks)
    # and `outbox_consumers` (called by the outbox drainer inside its transaction).
    app[OUTBOX_CONSUMERS] = []
    for module in MODULES:
        app.add_routes(module.routes)
        app.cleanup_ctx.extend(getattr(module, "cleanup_contexts", []))
        app[OUTBOX_CONSUMERS].extend(getattr(module, "outbox_consumers", []))
    if settings.demo:  # the demo sign-in exists only where it is asked for (chatsdk/demo.py)
        app.add_routes(demo.routes)
    return app

"""Service endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web

from chatsdk import faults, replication
from chatsdk.dependencies import MigrationState
from chatsdk.keys import DEPENDENCIES, LIFECYCLE, METRICS
from chatsdk.metrics import CONTENT_TYPE
from chatsdk.middlewares import error_body
from chatsdk.openapi import openapi_document

CHECK_TIMEOUT = 1.0
RETRY_AFTER_SECONDS = "5"
NO_STORE = {"Cache-Control": "no-store"}


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "live"}, headers=NO_STORE)


async def readiness(app: web.Application) -> tuple[bool, dict[str, str]]:
    """(ready, the state of each check), and the chatsdk_ready gauge set to match: readiness
    is checked on every /health/ready and every /metrics scrape, so the gauge is never stale."""
    deps = app[DEPENDENCIES]
    database_up, redis_up = await asyncio.gather(
        deps.check_database(CHECK_TIMEOUT), deps.check_redis(CHECK_TIMEOUT)
    )
    if faults.injected(faults.READY_WITHOUT_DATABASE):  # test-only (chatsdk/faults.py)
        database_up = True
    checks = {
        "database": "ok" if database_up else "unavailable",
        "redis": "ok" if redis_up else "unavailable",
        "migrations": str(deps.migrations),
    }
    is_ready = all(state == "ok" for state in checks.values()) and not app[LIFECYCLE].draining
    app[METRICS].ready.set(1 if is_ready else 0)
    return is_ready, checks


async def ready(request: web.Request) -> web.Response:
    deps = request.app[DEPENDENCIES]
    draining = request.app[LIFECYCLE].draining
    is_ready, checks = await readiness(request.app)
    failing = [name for name, state in checks.items() if state != "ok"]
    if is_ready:
        return web.json_response({"status": "ready", "checks": checks}, headers=NO_STORE)
    if draining:
        status, code, message = "draining", "draining", "This worker is shutting down."
    else:
        status = "not_ready"
        code = "migrations_failed" if deps.migrations is MigrationState.FAILED else "not_ready"
        message = f"Not ready: {', '.join(failing)} failing."
    # The readiness shape ({status, checks}) and the error contract ({error}) in one body.
    body = {"status": status, "checks": checks, **error_body(request, code, message)}
    return web.json_response(
        body, status=503, headers={**NO_STORE, "Retry-After": RETRY_AFTER_SECONDS}
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    await readiness(request.app)
    deps = request.app[DEPENDENCIES]
    replication.record(request.app[METRICS], await replication.report(deps.pool, CHECK_TIMEOUT))
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, **NO_STORE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())

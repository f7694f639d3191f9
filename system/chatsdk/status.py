"""GET /v1/status: each component's public state, for the status page (system/web/status.html).

Unauthenticated and cached briefly: the page polls it during an incident, when everyone does.
It exposes nothing beyond `up`, `degraded` or `down` per component and when that was checked;
no hostnames, versions, error texts or counts.

- api: up while this worker answers and both stores do; degraded when either store is down (the
  API answers, but what needs that store fails); draining counts as degraded.
- database, redis: whether PostgreSQL and Redis answer this worker now.
- realtime: the WebSocket needs Redis (pub/sub: no live events without it) and PostgreSQL
  (backfill, gap fill): down without Redis, degraded without PostgreSQL.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from chatsdk import faults
from chatsdk.keys import DEPENDENCIES, LIFECYCLE

routes = web.RouteTableDef()

CHECK_TIMEOUT = 1.0
CACHE_S = 5  # every caller within these seconds gets the same answer; the stores see one check
COMPONENTS = ("api", "database", "redis", "realtime")
STATES = ("up", "degraded", "down")


def states(database_up: bool, redis_up: bool, draining: bool) -> dict[str, str]:
    """Each component's state from what this worker sees of its stores."""
    stores_up = database_up and redis_up
    realtime = "down" if not redis_up else "up" if database_up else "degraded"
    return {
        "api": "up" if stores_up and not draining else "degraded",
        "database": "up" if database_up else "down",
        "redis": "up" if redis_up else "down",
        "realtime": realtime,
    }


def overall(components: dict[str, str]) -> str:
    """up when every component is; down without the database (nothing works without it);
    degraded otherwise (without Redis, what needs it fails or waits: live updates stop)."""
    if all(state == "up" for state in components.values()):
        return "up"
    return "down" if components["database"] == "down" else "degraded"


async def _report(app: web.Application) -> dict[str, Any]:
    deps = app[DEPENDENCIES]
    database_up, redis_up = await asyncio.gather(
        deps.check_database(CHECK_TIMEOUT), deps.check_redis(CHECK_TIMEOUT)
    )
    components = states(database_up, redis_up, app[LIFECYCLE].draining)
    if faults.injected(faults.STATUS_ALWAYS_UP):
        components = dict.fromkeys(COMPONENTS, "up")
    return {
        "status": overall(components),
        "components": components,
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


@dataclass
class _Cached:
    at: float = -math.inf
    body: dict[str, Any] = field(default_factory=dict)


_CACHE = web.AppKey("status_cache", _Cached)


async def cache_context(app: web.Application) -> AsyncIterator[None]:
    app[_CACHE] = _Cached()
    yield


cleanup_contexts = [cache_context]


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    cached = request.app[_CACHE]
    now = time.monotonic()
    if now - cached.at >= CACHE_S:
        cached.body, cached.at = await _report(request.app), now
    return web.json_response(cached.body, headers={"Cache-Control": f"public, max-age={CACHE_S}"})


_STATE: dict[str, Any] = {"enum": list(STATES)}

# Its entry in the OpenAPI document (chatsdk/openapi.py adds it to PATHS).
OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/v1/status": {
        "get": {
            "operationId": "getStatus",
            "summary": "Each component's state for the public status page (cached 5 s).",
            "security": [],
            "responses": {
                "200": {
                    "description": "The state of the API, PostgreSQL, Redis and the WebSocket.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["status", "components", "checked_at"],
                                "properties": {
                                    "status": _STATE,
                                    "components": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": list(COMPONENTS),
                                        "properties": dict.fromkeys(COMPONENTS, _STATE),
                                    },
                                    "checked_at": {"type": "string", "format": "date-time"},
                                },
                            }
                        }
                    },
                },
                # The edge's per-client-address request limit.
                "429": {"$ref": "#/components/responses/RateLimited"},
            },
        }
    }
}

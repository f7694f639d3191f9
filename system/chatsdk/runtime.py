"""`GET /v1/admin/runtime`: what this worker runs with, for operators and readiness probes.

Admin-only. It reports the release, the worker, the configuration that matters for a production
judgement (log level, debug flags, storage kind, allowed origins), where each dependency points
(host, port, database; never a password) and whether it answers now, the schema version, and
the hygiene of each secret (its length and whether it looks like a placeholder; never the value).
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from chatsdk import replication
from chatsdk.auth import require_admin
from chatsdk.dsn import hosts
from chatsdk.keys import DEPENDENCIES, METRICS, SETTINGS
from chatsdk.migrate import load_migrations
from chatsdk.settings import Settings
from chatsdk.storage import STORAGE, StorageError, new_key
from chatsdk.version import __version__

routes = web.RouteTableDef()
STARTED = time.time()
CHECK_TIMEOUT = 2.0
# Values that ship in examples and templates; a secret containing one of these is a placeholder.
PLACEHOLDERS = (
    "change_this",
    "changeme",
    "change-me",
    "changethis",
    "example",
    "placeholder",
    "your-secret",
    "your_secret",
    "secret",
    "password",
    "todo",
    "xxx",
)


def secret_hygiene(value: str) -> dict[str, Any]:
    lowered = value.lower()
    found = [p for p in PLACEHOLDERS if p in lowered]
    return {"length": len(value), "placeholder": bool(found) or not value.strip()}


def where(url: str) -> dict[str, Any]:
    """Scheme, host, port and path of a dependency URL; the credentials are dropped. A URL
    naming several hosts (a primary and its standby) gives the first as host and port, and
    all of them as `hosts` ("host:port")."""
    parts = urlsplit(url)
    named = hosts(url)
    found: dict[str, Any] = {
        "scheme": parts.scheme,
        "host": named[0][0],
        "port": named[0][1],
        "path": parts.path.lstrip("/"),
    }
    if len(named) > 1:
        found["hosts"] = [f"{host}:{port or ''}".rstrip(":") for host, port in named]
    return found


async def _storage_ok(app: web.Application) -> bool:
    storage = app.get(STORAGE)
    if storage is None:
        return False
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await storage.exists(new_key())  # a key nobody wrote: a round trip, no side effect
    except (StorageError, OSError, TimeoutError):
        return False
    return True


def _config(settings: Settings) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    return {
        "log_level": settings.log_level,
        "asyncio_debug": loop.get_debug(),
        "python_dev_mode": bool(sys.flags.dev_mode),
        "python_optimize": sys.flags.optimize,
        "storage": settings.storage,
        "allowed_origins": list(settings.allowed_origins),
        "shutdown_timeout_s": settings.shutdown_timeout,
    }


@routes.get("/v1/admin/runtime")
async def runtime(request: web.Request) -> web.Response:
    await require_admin(request)
    settings = request.app[SETTINGS]
    deps = request.app[DEPENDENCIES]
    database_up, redis_up, storage_up = await asyncio.gather(
        deps.check_database(CHECK_TIMEOUT),
        deps.check_redis(CHECK_TIMEOUT),
        _storage_ok(request.app),
    )
    shipped = load_migrations()
    standbys = await replication.report(deps.pool if database_up else None, CHECK_TIMEOUT)
    replication.record(request.app[METRICS], standbys)
    applied: list[int] = []
    if deps.pool is not None and database_up:
        async with deps.pool.acquire(timeout=CHECK_TIMEOUT) as conn:
            rows = await conn.fetch(
                "SELECT version FROM schema_migrations ORDER BY version", timeout=CHECK_TIMEOUT
            )
            applied = [int(r["version"]) for r in rows]
    body = {
        "service": "chatsdk",
        "version": __version__,
        "worker_id": settings.worker_id,
        "pid": os.getpid(),
        "started_at": round(STARTED, 3),
        "uptime_s": round(time.time() - STARTED, 3),
        "python": platform.python_version(),
        "config": _config(settings),
        "dependencies": {
            "database": {
                **where(settings.database_url),
                "up": database_up,
                "replication": standbys,
            },
            "redis": {**where(settings.redis_url), "up": redis_up},
            "storage": {"kind": settings.storage, "up": storage_up},
        },
        "migrations": {
            "state": str(deps.migrations),
            "applied": applied,
            "shipped": [m.version for m in shipped],
            # What this worker's release expects the database's schema_migrations to hold.
            "release": [
                {"version": m.version, "name": m.name, "checksum": m.checksum} for m in shipped
            ],
        },
        "secrets": {
            "admin_key": secret_hygiene(settings.admin_key),
            "jwt_secret": secret_hygiene(settings.jwt_secret),
        },
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})

"""Database access for handlers: the pool when PostgreSQL is up, else the contract's 503."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from chatsdk.errors import unavailable
from chatsdk.keys import DEPENDENCIES


def pool(request: web.Request | web.Application) -> Any:
    app = request.app if isinstance(request, web.Request) else request
    deps = app[DEPENDENCIES]
    if deps.pool is None:
        raise unavailable("The database")
    return deps.pool


def redis(request: web.Request | web.Application) -> Redis:
    app = request.app if isinstance(request, web.Request) else request
    return app[DEPENDENCIES].redis


@contextlib.asynccontextmanager
async def transaction(request: web.Request | web.Application) -> AsyncIterator[Any]:
    async with pool(request).acquire() as conn, conn.transaction():
        yield conn

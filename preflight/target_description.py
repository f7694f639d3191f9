"""What ran, for the record: the target's name, kind and edge, the versions of its servers as
the servers report them (and of Python and this harness), and digests of the config files the
native target wrote (an external target's files are not ours to read)."""

from __future__ import annotations

import asyncio
import hashlib
import platform
import re
import subprocess
from collections.abc import Callable
from typing import Any

import asyncpg
import redis

from preflight.record import preflight_version
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTarget


def describe_target(info: TargetInfo, target: object) -> dict[str, Any]:
    """What ran: server versions as the servers report them, and digests of the config files
    the native target wrote (an external target's files are not ours to read)."""
    versions: dict[str, str] = {
        "python": platform.python_version(),
        "preflight": preflight_version(),
    }
    if info.stores.postgres_dsn:
        versions["postgresql"] = _guard(lambda: _pg_version(info.stores.postgres_dsn or ""))
    if info.stores.redis_url:
        versions["redis"] = _guard(lambda: _redis_version(info.stores.redis_url or ""))
    digests: dict[str, str] = {}
    if isinstance(target, NativeTarget) and target.dir is not None:
        versions["nginx"] = _guard(_nginx_version)
        for path in sorted(target.dir.rglob("*.conf")):
            digests[str(path.relative_to(target.dir))] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return {
        "name": info.name,
        "kind": info.kind,
        "edge_url": info.edge.url,
        "versions": versions,
        "config_digests": digests,
    }


def _guard(read: Callable[[], str]) -> str:
    try:
        return read()
    except Exception as exc:  # a version we cannot read is reported, never fatal
        return f"unknown ({type(exc).__name__}: {exc})"[:200]


def _pg_version(dsn: str) -> str:
    async def read() -> str:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return str(await conn.fetchval("SHOW server_version", timeout=10))
        finally:
            await conn.close(timeout=5)

    return asyncio.run(read())


def _redis_version(url: str) -> str:
    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
    try:
        info: dict[str, Any] = client.info("server")
        return str(info["redis_version"])
    finally:
        client.close()


def _nginx_version() -> str:
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"nginx/(\S+)", out.stderr + out.stdout)
    return match.group(1) if match else "unknown"

"""A running target described (TargetDescription): the versions its servers report, and the
digests of the configuration files it wrote where it wrote them on this machine."""

from __future__ import annotations

import asyncio
import hashlib
import platform
import re
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import redis

from preflight.errors import TargetUnavailable
from preflight.targets.base import TargetDescription, TargetInfo


def describe_running(
    info: TargetInfo | None, config_dir: Path | None = None, *, local_nginx: bool = False
) -> TargetDescription:
    """Versions of Python, preflight and (where the info reaches them) PostgreSQL and Redis; with
    `local_nginx`, the version of this machine's NGINX; the sha256 of every *.conf under
    `config_dir`. A version that cannot be read is reported as unknown, never raised."""
    if info is None:
        raise TargetUnavailable("the target is not running: enter it before describing it")
    versions: dict[str, str] = {"python": platform.python_version(), "preflight": _version()}
    if info.stores.postgres_dsn:
        versions["postgresql"] = _guard(lambda: _pg_version(info.stores.postgres_dsn or ""))
    if info.stores.redis_url:
        versions["redis"] = _guard(lambda: _redis_version(info.stores.redis_url or ""))
    if local_nginx:
        versions["nginx"] = _guard(_nginx_version)
    digests: dict[str, str] = {}
    if config_dir is not None:
        for path in sorted(config_dir.rglob("*.conf")):
            digests[str(path.relative_to(config_dir))] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return TargetDescription(info.name, info.kind, info.edge.url, versions, digests)


def _version() -> str:
    try:
        return metadata.version("preflight")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


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

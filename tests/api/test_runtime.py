"""GET /v1/admin/runtime: admin only, reports what the worker runs with and never a secret."""

from __future__ import annotations

import asyncio

import asyncpg

from preflight.client import ChatClient, expect
from preflight.targets.base import TargetInfo


def test_runtime_needs_the_admin_key(chat: ChatClient) -> None:
    assert chat.get("/v1/admin/runtime").status == 401
    assert chat.as_admin("not-the-key").get("/v1/admin/runtime").status == 401


def test_runtime_reports_release_dependencies_and_no_secret(
    admin: ChatClient, info: TargetInfo
) -> None:
    response = admin.get("/v1/admin/runtime")
    report = expect(response, 200)
    assert report["service"] == "chatsdk"
    assert report["migrations"]["state"] == "ok"
    assert report["migrations"]["applied"] == report["migrations"]["shipped"]
    assert {d["up"] for d in report["dependencies"].values()} == {True}
    assert report["secrets"]["jwt_secret"]["placeholder"] is False
    assert response.headers["cache-control"] == "no-store"
    text = response.body.decode()
    for secret in (info.admin_key, info.stores.postgres_dsn, info.stores.redis_url):
        assert secret
        password = secret.rsplit("@", 1)[0].rsplit(":", 1)[-1] if "@" in secret else secret
        assert password not in text, "the runtime report must not contain a secret"


def test_runtime_names_the_migrations_its_release_expects_as_the_database_records_them(
    admin: ChatClient, info: TargetInfo
) -> None:
    """Each migration of the worker's release, by version, name and checksum: what probes compare
    the database's schema_migrations with, without the release's files at hand."""
    release = expect(admin.get("/v1/admin/runtime"), 200)["migrations"]["release"]
    assert info.stores.postgres_dsn is not None
    rows = asyncio.run(_ledger(info.stores.postgres_dsn))
    assert [m["version"] for m in release] == expect(admin.get("/v1/admin/runtime"), 200)[
        "migrations"
    ]["shipped"]
    assert [(m["version"], m["name"], m["checksum"]) for m in release] == rows


async def _ledger(dsn: str) -> list[tuple[int, str, str]]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
    finally:
        await conn.close(timeout=10)
    return [(int(r["version"]), str(r["name"]), str(r["checksum"])) for r in rows]

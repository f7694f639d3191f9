from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from chatsdk.errors import MigrationChecksumMismatch, MigrationError
from chatsdk.migrate import apply_migrations, load_migrations
from chatsdk.server import RunningServer
from chatsdk.settings import Settings

Wait = Callable[..., Any]


def write_migrations(folder: Path) -> None:
    (folder / "0002_second.sql").write_text("CREATE TABLE second (id int PRIMARY KEY);\n")
    (folder / "0001_first.sql").write_text("CREATE TABLE first (id int PRIMARY KEY);\n")
    (folder / "README.md").write_text("not a migration\n")


async def _apply(database_url: str, folder: Path | None = None) -> list[int]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        migrations = load_migrations(folder)
        applied: list[int] = await apply_migrations(conn, migrations)
        return applied
    finally:
        await conn.close(timeout=5)


async def _fetch(database_url: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        rows: list[Any] = await conn.fetch(sql, timeout=5)
        return rows
    finally:
        await conn.close(timeout=5)


def test_migrations_are_loaded_in_version_order(tmp_path: Path) -> None:
    write_migrations(tmp_path)
    migrations = load_migrations(tmp_path)
    assert [(m.version, m.name) for m in migrations] == [(1, "first"), (2, "second")]
    assert all(len(m.checksum) == 64 for m in migrations)


def test_the_shipped_migrations_start_with_0001_init() -> None:
    first = load_migrations()[0]
    assert (first.version, first.name) == (1, "init")


@pytest.mark.parametrize("name", ["1_short.sql", "0003_Upper.sql", "0003-dash.sql"])
def test_a_badly_named_migration_file_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=r"must be named NNNN_lowercase_name\.sql"):
        load_migrations(tmp_path)


def test_the_database_role_is_not_a_superuser(database_url: str) -> None:
    rows = asyncio.run(
        _fetch(database_url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    )
    assert rows[0]["rolsuper"] is False


def test_three_concurrent_appliers_apply_each_migration_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    write_migrations(tmp_path)

    async def three_at_once() -> list[list[int]]:
        return list(await asyncio.gather(*(_apply(database_url, tmp_path) for _ in range(3))))

    results = asyncio.run(three_at_once())
    assert sorted(v for applied in results for v in applied) == [1, 2]
    rows = asyncio.run(_fetch(database_url, "SELECT version, name FROM schema_migrations"))
    assert sorted((r["version"], r["name"]) for r in rows) == [(1, "first"), (2, "second")]
    assert asyncio.run(_apply(database_url, tmp_path)) == [], "a second run must apply nothing"


def test_a_changed_checksum_of_an_applied_migration_is_detected(
    database_url: str, tmp_path: Path
) -> None:
    write_migrations(tmp_path)
    assert asyncio.run(_apply(database_url, tmp_path)) == [1, 2]
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first (id bigint PRIMARY KEY);\n")
    with pytest.raises(MigrationChecksumMismatch, match="0001_first was changed"):
        asyncio.run(_apply(database_url, tmp_path))


def test_the_app_applies_the_shipped_migrations_on_start(
    settings: Settings, run_app: Callable[..., Any]
) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        async with client.get("/v1/health/ready") as response:
            body = await response.json()
        assert response.status == 200, body
        assert body["checks"]["migrations"] == "ok"

    run_app(settings, scenario)
    rows = asyncio.run(_fetch(settings.database_url, "SELECT version FROM schema_migrations"))
    assert [r["version"] for r in rows] == [m.version for m in load_migrations()]


def test_readiness_stays_503_when_an_applied_migration_was_changed(
    settings: Settings, run_app: Callable[..., Any], wait_status: Wait
) -> None:
    asyncio.run(_apply(settings.database_url))
    asyncio.run(_fetch(settings.database_url, "UPDATE schema_migrations SET checksum = 'tampered'"))

    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        for _ in range(100):
            body = await wait_status(client, "/v1/health/ready", 503)
            # A readiness probe's own database check can time out on a busy machine (it says
            # "unavailable" then); the state judged is the one with the database answering.
            if body["checks"]["migrations"] != "pending" and body["checks"]["database"] == "ok":
                break
            await asyncio.sleep(0.1)
        assert body["checks"] == {"database": "ok", "redis": "ok", "migrations": "failed"}
        assert body["error"]["code"] == "migrations_failed"

    run_app(settings, scenario, ready=False)

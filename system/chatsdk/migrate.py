"""Versioned SQL migrations, applied in order, once, serialized across concurrent workers."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from chatsdk.errors import MigrationChecksumMismatch, MigrationError

log = logging.getLogger("chatsdk.migrations")

# Arbitrary constant shared by every worker: the key of the advisory lock that serializes them.
ADVISORY_LOCK_KEY = 0x43_68_61_74_53_44_4B  # "ChatSDK"
FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    # Next to this file rather than importlib.resources: chatsdk may be a namespace package.
    folder = directory if directory is not None else Path(__file__).with_name("migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(
                f"migration file {entry.name!r} must be named NNNN_lowercase_name.sql"
            )
        data = entry.read_bytes()
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"migration version {version:04d} is used by two files")
        found[version] = Migration(
            version=version,
            name=match["name"],
            sql=data.decode("utf-8"),
            checksum=hashlib.sha256(data).hexdigest(),
        )
    return [found[version] for version in sorted(found)]


async def apply_migrations(conn: Any, migrations: list[Migration]) -> list[int]:
    """Apply what is missing on an asyncpg connection; return the versions applied now.

    Each migration runs in its own transaction holding a transaction-scoped advisory lock, so
    workers starting together apply each file exactly once and wait for each other.
    """
    applied_now: list[int] = []
    for migration in migrations:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
            await conn.execute(CREATE_LEDGER)
            recorded = await conn.fetchval(
                "SELECT checksum FROM schema_migrations WHERE version = $1", migration.version
            )
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationChecksumMismatch(
                        f"migration {migration.version:04d}_{migration.name} was changed after "
                        f"it was applied (recorded checksum {recorded[:12]}, "
                        f"file checksum {migration.checksum[:12]})"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
            log.info(
                "applied migration %04d_%s",
                migration.version,
                migration.name,
                extra={"fields": {"version": migration.version}},
            )
    return applied_now

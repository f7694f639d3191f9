"""Restore one backup into an empty database and an empty upload store, then check the result
against what the backup recorded: the rows of every table, the ordered digest of the messages,
and the sha256 of every upload.

The database must exist, be empty, and belong to the application role (the dump keeps owners,
so the role must exist too): a fresh server prepared like any new one. The restore refuses a
database that has tables, and a backup whose files do not match their catalogue checksums.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from chatsdk.backup import catalogue
from chatsdk.backup.catalogue import Entry
from chatsdk.backup.figures import read_all
from chatsdk.backup.job import (
    CONNECT_TIMEOUT_S,
    DEFAULT_PG_BIN,
    NO_SESSION_LIMITS,
    BackupFailed,
    copy_hashed,
    libpq_target,
    tool,
)


class RestoreRefused(BackupFailed):
    """The backup or the target is not fit for a restore; nothing was changed."""


@dataclass(frozen=True)
class RestoreRequest:
    repository: Path
    database_url: str
    upload_dir: Path | None
    backup_id: str | None = None  # None: the newest successful backup
    pg_bin: Path = DEFAULT_PG_BIN


def choose(repository: Path, backup_id: str | None) -> Entry:
    current = catalogue.read(repository)
    if backup_id is None:
        entry = catalogue.newest(current)
        if entry is None:
            raise RestoreRefused(f"{repository}: the catalogue lists no successful backup")
        return entry
    backups: list[Entry] = current.get("backups", [])
    for found in backups:
        if found.get("id") == backup_id:
            if found.get("status") != "ok":
                raise RestoreRefused(f"backup {backup_id} did not succeed: {found.get('error')}")
            return found
    raise RestoreRefused(f"{repository}: no backup {backup_id} in the catalogue")


def check_files(directory: Path, entry: Entry) -> None:
    """Every file the catalogue lists, with its size and sha256."""
    for relative, expected in sorted(entry.get("files", {}).items()):
        path = directory / relative
        if not path.is_file():
            raise RestoreRefused(f"backup {entry['id']}: {relative} is missing")
        digest = catalogue.sha256_file(path)
        if digest != expected["sha256"]:
            raise RestoreRefused(
                f"backup {entry['id']}: {relative} has sha256 {digest}, the catalogue says "
                f"{expected['sha256']} (the backup is damaged)"
            )


async def _tables(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return [str(r["tablename"]) for r in rows]


async def _figures(database_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(NO_SESSION_LIMITS)
            return await read_all(conn)
    finally:
        await conn.close()


def restore_uploads(directory: Path, entry: Entry, store: Path) -> list[str]:
    """Copy the backup's uploads into the store (its <key[:2]>/<key> layout); returns
    problems."""
    manifest = directory / str(entry["uploads"]["manifest"])
    source = directory / str(entry["uploads"]["dir"])
    problems: list[str] = []
    for upload in json.loads(manifest.read_text()):
        key = str(upload["key"])
        try:
            _, digest = copy_hashed(source / key[:2] / key, store / key[:2] / key)
        except FileNotFoundError:
            problems.append(f"upload {upload['upload_id']}: not in the backup")
            continue
        if digest != upload["sha256"]:
            problems.append(
                f"upload {upload['upload_id']}: restored sha256 {digest}, recorded "
                f"{upload['sha256']}"
            )
    return problems


def compare(entry: Entry, restored: dict[str, Any]) -> list[str]:
    """What differs between the restored database and the backup's record of its snapshot."""
    recorded = entry["database"]
    mismatches: list[str] = []
    for table in sorted(set(recorded["rows"]) | set(restored["rows"])):
        want, got = recorded["rows"].get(table), restored["rows"].get(table)
        if want != got:
            mismatches.append(f"table {table}: {got} rows restored, {want} at the backup")
    if restored["messages_digest"] != recorded["messages_digest"]:
        mismatches.append(
            f"messages digest {restored['messages_digest'][:16]}... restored, "
            f"{recorded['messages_digest'][:16]}... at the backup"
        )
    return mismatches


async def restore(request: RestoreRequest) -> dict[str, Any]:
    """Restore and verify; the report says what was restored and what differs. Raises
    RestoreRefused (nothing changed) or BackupFailed (a tool failed)."""
    t0 = time.monotonic()
    steps: dict[str, float] = {}
    entry = choose(request.repository, request.backup_id)
    directory = request.repository / str(entry["id"])
    check_files(directory, entry)
    steps["check_files_s"] = round(time.monotonic() - t0, 3)
    existing = await _tables(request.database_url)
    if existing:
        raise RestoreRefused(
            f"the target database already has {len(existing)} tables ({', '.join(existing[:5])}"
            "...); restore into an empty database"
        )
    t = time.monotonic()
    target, pg_env = libpq_target(request.database_url)
    await tool(
        [
            str(request.pg_bin / "pg_restore"),
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            f"--dbname={target}",
            str(directory / str(entry["database"]["dump"]["file"])),
        ],
        pg_env,
    )
    steps["pg_restore_s"] = round(time.monotonic() - t, 3)
    problems: list[str] = []
    t = time.monotonic()
    if request.upload_dir is not None and "manifest" in entry.get("uploads", {}):
        problems += await asyncio.to_thread(restore_uploads, directory, entry, request.upload_dir)
    steps["uploads_s"] = round(time.monotonic() - t, 3)
    t = time.monotonic()
    restored = await _figures(request.database_url)
    mismatches = compare(entry, restored) + problems
    steps["verify_s"] = round(time.monotonic() - t, 3)
    return {
        "backup_id": entry["id"],
        "snapshot_at": entry.get("snapshot_at"),
        "restored_at": catalogue.iso(catalogue.now()),
        "duration_s": round(time.monotonic() - t0, 3),
        "steps": steps,
        "rows": restored["rows"],
        "messages": restored["messages"],
        "messages_digest": restored["messages_digest"],
        "uploads": len(restored["uploads"]),
        "mismatches": mismatches,
        "verified": not mismatches,
    }

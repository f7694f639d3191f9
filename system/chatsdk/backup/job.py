"""One backup run, and the schedule that repeats it (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from chatsdk.backup import catalogue
from chatsdk.backup.catalogue import Entry
from chatsdk.backup.figures import read_all
from chatsdk.errors import ChatSDKError
from chatsdk.settings import _absolute, _Env, _storage, _url

DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Twice a day: a daily backup meets "daily", but a failure just before the next one would lose
# a day plus that backup's duration, more than the 24-hour RPO.
DEFAULT_EVERY_S = 12 * 3600.0
TOOL_TIMEOUT_S = 3600.0
CONNECT_TIMEOUT_S = 10.0
# After a failed scheduled run, try again this soon (or at the next regular time if sooner).
RETRY_AFTER_FAILURE_S = 900.0
DUMP_FILE = "database.dump"
BASE_DIR = "base"
UPLOADS_DIR = "uploads"
UPLOADS_MANIFEST = "uploads.json"
REDIS_FILE = "redis.rdb"
MONITORING_SCHEMA = "monitoring"  # made by provisioning (system/deploy/postgres/20-monitoring.sql)
COPY_CHUNK = 1024 * 1024
# For the job's own long transactions (the snapshot held through pg_dump, the figures of every
# message): the deployments set idle_in_transaction_session_timeout 60 s and statement_timeout
# 30 s for every session, which a database of a gigabyte outlasts.
NO_SESSION_LIMITS = (
    "SET LOCAL idle_in_transaction_session_timeout = 0; SET LOCAL statement_timeout = 0"
)


class BackupFailed(ChatSDKError):
    """A step of the backup failed; the message says which and why."""


def _days(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number of days (got {raw!r})") from None


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"must be a number of seconds (got {raw!r})") from None
    if value <= 0:
        raise ValueError(f"must be more than 0 seconds (got {raw!r})")
    return value


def _absolute_or_unset(value: Path) -> str | None:
    return None if value == Path() else _absolute(value)


def _retention(value: int) -> str | None:
    return None if 1 <= value <= 3650 else f"must be between 1 and 3650 days (got {value})"


@dataclass(frozen=True)
class BackupSettings:
    """CHATSDK_BACKUP_* settings, plus the API's own CHATSDK_UPLOAD_DIR, CHATSDK_STORAGE and
    CHATSDK_REDIS_URL (the job reads what the API writes)."""

    repository: Path
    # A role that may dump every table and open a replication connection (pg_basebackup).
    database_url: str = field(repr=False)
    redis_url: str | None = field(default=None, repr=False)
    storage: str = "local"
    upload_dir: Path | None = None
    pg_bin: Path = DEFAULT_PG_BIN
    textfile_dir: Path | None = None
    retention_days: int = 30
    every_s: float = DEFAULT_EVERY_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BackupSettings:
        env = _Env(environ)
        storage = env.get("STORAGE", _storage, default="local")
        textfile = env.get("BACKUP_TEXTFILE_DIR", Path, default=Path(), check=_absolute_or_unset)
        return cls(
            repository=env.get("BACKUP_DIR", Path, check=_absolute),
            database_url=env.get(
                "BACKUP_DATABASE_URL", str, check=_url({"postgresql", "postgres"})
            ),
            redis_url=env.get("REDIS_URL", str, default="", check=_url({"redis", "rediss"}))
            or None,
            storage=storage,
            upload_dir=env.get("UPLOAD_DIR", Path, check=_absolute) if storage == "local" else None,
            pg_bin=env.get("BACKUP_PG_BIN", Path, default=DEFAULT_PG_BIN, check=_absolute),
            textfile_dir=textfile if textfile != Path() else None,
            retention_days=env.get("BACKUP_RETENTION_DAYS", _days, default=30, check=_retention),
            every_s=env.get("BACKUP_EVERY", _positive_seconds, default=DEFAULT_EVERY_S),
        )


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN without its password, and PGPASSWORD carrying it: no password in `ps`."""
    parts = urlsplit(dsn)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    bare = parts._replace(netloc=f"{user}@{hostport}" if user else hostport).geturl()
    return bare, ({"PGPASSWORD": unquote(parts.password)} if parts.password else {})


async def tool(
    argv: Sequence[str], env: Mapping[str, str] | None = None, limit_s: float = TOOL_TIMEOUT_S
) -> str:
    """Run a tool; its output, or BackupFailed naming the tool with the end of its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        async with asyncio.timeout(limit_s):
            out, err = await proc.communicate()
    except BaseException:  # timeout or cancellation (SIGTERM): leave nothing running
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        tail = (err or out).decode(errors="replace").strip().splitlines()[-5:]
        raise BackupFailed(
            f"{Path(argv[0]).name} exited {proc.returncode}: {' / '.join(tail) or '(no output)'}"
        )
    return (out + err).decode(errors="replace").strip()


async def dump_compression(pg_bin: Path) -> str:
    """The fastest compression this pg_dump has: lz4 from PostgreSQL 16, gzip level 1 before
    (pg_dump 15 knows only gzip levels)."""
    version = await tool([str(pg_bin / "pg_dump"), "--version"])
    match = re.search(r"\) (\d+)", version)
    major = int(match.group(1)) if match else 0
    return "lz4" if major >= 16 else "1"


def copy_hashed(src: Path, dst: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with src.open("rb") as fin, dst.open("wb") as fout:
        while chunk := fin.read(COPY_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    dst.chmod(0o600)
    return size, digest.hexdigest()


def copy_uploads(store: Path, uploads: list[dict[str, Any]], dest: Path) -> dict[str, Any]:
    """Copy every live upload of the snapshot; a missing file or another sha256 than the
    database's is a problem of the store, recorded (the database part stays usable)."""
    problems: list[str] = []
    total = 0
    for upload in uploads:
        key = str(upload["key"])
        src = store / key[:2] / key
        try:
            size, digest = copy_hashed(src, dest / key[:2] / key)
        except FileNotFoundError:
            problems.append(f"upload {upload['upload_id']}: no file {src}")
            continue
        total += size
        if digest != upload["sha256"]:
            problems.append(
                f"upload {upload['upload_id']}: {src} has sha256 {digest}, the database says "
                f"{upload['sha256']}"
            )
    return {"count": len(uploads) - len(problems), "size": total, "problems": problems}


async def snapshot_and_dump(settings: BackupSettings, dump: Path) -> dict[str, Any]:
    """pg_dump from a snapshot exported by a transaction that reads the figures of the same
    snapshot, so the figures describe exactly what the dump holds."""
    target, pg_env = libpq_target(settings.database_url)
    compression = await dump_compression(settings.pg_bin)
    conn = await asyncpg.connect(settings.database_url, timeout=CONNECT_TIMEOUT_S)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # This transaction waits idle while pg_dump runs, and the figures read every
            # message: the deployments' session limits would end it under a dump of any size.
            await conn.execute(NO_SESSION_LIMITS)
            snapshot, snapshot_at, server = await conn.fetchrow(
                "SELECT pg_export_snapshot(), now(), current_setting('server_version')"
            )
            figures = await read_all(conn)
            await tool(
                [
                    str(settings.pg_bin / "pg_dump"),
                    "--format=custom",
                    f"--compress={compression}",
                    f"--snapshot={snapshot}",
                    # The deployment's provisioning makes this schema (the replication report),
                    # as it makes the roles: a restore target has it already.
                    f"--exclude-schema={MONITORING_SCHEMA}",
                    "--no-password",
                    f"--file={dump}",
                    f"--dbname={target}",
                ],
                pg_env,
            )
    finally:
        await conn.close()
    return {
        **figures,
        "snapshot_at": catalogue.iso(snapshot_at),
        "server_version": str(server),
        "compression": "lz4" if compression == "lz4" else f"gzip:{compression}",
    }


async def base_backup(settings: BackupSettings, base: Path, label: str) -> str:
    target, pg_env = libpq_target(settings.database_url)
    await tool(
        [
            str(settings.pg_bin / "pg_basebackup"),
            f"--dbname={target}",
            f"--pgdata={base}",
            "--format=plain",  # pg_verifybackup 15 verifies the plain format only
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-password",
            f"--label={label}",
        ],
        pg_env,
    )
    return await tool([str(settings.pg_bin / "pg_verifybackup"), str(base)])


async def redis_snapshot(redis_url: str, out: Path) -> None:
    parts = urlsplit(redis_url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    env = {"REDISCLI_AUTH": unquote(parts.password)} if parts.password else {}
    argv = ["redis-cli", "-u", parts._replace(netloc=hostport).geturl()]
    if user:
        argv += ["--user", unquote(user)]
    if parts.scheme == "rediss":
        argv.append("--tls")
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        raise BackupFailed("redis-cli not found; install redis-tools")
    argv[0] = redis_cli
    await tool([*argv, "--rdb", str(out)], env, limit_s=600.0)
    checker = shutil.which("redis-check-rdb")
    if checker is not None:
        await tool([checker, str(out)], limit_s=600.0)


async def take_backup(settings: BackupSettings, trigger: str = "manual") -> Entry:
    """One backup into the repository; returns its catalogue entry (status ok or failed)."""
    repo = settings.repository
    started = catalogue.now()
    t0 = time.monotonic()
    backup_id = f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    entry: Entry = {
        "id": backup_id,
        "trigger": trigger,
        "status": "failed",
        "host": socket.gethostname(),
        "started_at": catalogue.iso(started),
        "retention_days": settings.retention_days,
        "steps": {},
        "error": None,
    }
    steps: dict[str, float] = entry["steps"]
    with catalogue.locked(repo):
        work = repo / f"{backup_id}{catalogue.PARTIAL}"
        work.mkdir(mode=0o700)
        try:
            await _take(settings, work, entry, steps)
            os.replace(work, repo / backup_id)
            entry["status"] = "ok"
        except (BackupFailed, OSError, asyncpg.PostgresError, ValueError) as exc:
            entry["error"] = (
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, BackupFailed) else str(exc)
            )
            shutil.rmtree(work, ignore_errors=True)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        finished = catalogue.now()
        entry["finished_at"] = catalogue.iso(finished)
        entry["duration_s"] = round(time.monotonic() - t0, 3)
        current = catalogue.read(repo)
        current["backups"].append(entry)
        if trigger == "schedule":
            current["schedule"] = {"every_s": settings.every_s, "host": socket.gethostname()}
        if entry["status"] == "ok":
            entry["pruned"] = catalogue.prune(repo, current, finished, settings.retention_days)
        catalogue.write(repo, current)
        if settings.textfile_dir is not None:
            catalogue.write_metric(settings.textfile_dir, current, entry)
    return entry


async def _take(
    settings: BackupSettings, work: Path, entry: Entry, steps: dict[str, float]
) -> None:
    files: dict[str, dict[str, Any]] = {}

    def record(relative: str) -> dict[str, Any]:
        path = work / relative
        files[relative] = {"size": path.stat().st_size, "sha256": catalogue.sha256_file(path)}
        return files[relative]

    t = time.monotonic()
    figures = await snapshot_and_dump(settings, work / DUMP_FILE)
    steps["dump_s"] = round(time.monotonic() - t, 3)
    uploads = figures.pop("uploads")
    entry["snapshot_at"] = figures.pop("snapshot_at")
    entry["database"] = {
        **figures,
        "dump": {"file": DUMP_FILE, "format": "custom", "compression": figures.pop("compression")},
    }
    entry["database"]["dump"].update(record(DUMP_FILE))

    t = time.monotonic()
    verified = await base_backup(settings, work / BASE_DIR, f"chatsdk {entry['id']}")
    steps["base_backup_and_verify_s"] = round(time.monotonic() - t, 3)
    entry["database"]["base"] = {
        "dir": BASE_DIR,
        "format": "plain",
        "size": catalogue.size_of(work / BASE_DIR),
        "verified_by": "pg_verifybackup",
        "verify_output": verified[-500:],
    }
    record(f"{BASE_DIR}/backup_manifest")

    t = time.monotonic()
    if settings.upload_dir is None:
        entry["uploads"] = {
            "store": settings.storage,
            "skipped": f"{settings.storage} storage: back up the bucket with its versioning or "
            "replication; this job copies a local upload store",
        }
    else:
        manifest = work / UPLOADS_MANIFEST
        manifest.write_text(json.dumps(uploads, indent=1) + "\n")
        copied = await asyncio.to_thread(
            copy_uploads, settings.upload_dir, uploads, work / UPLOADS_DIR
        )
        entry["uploads"] = {
            "store": "local",
            "dir": UPLOADS_DIR,
            "manifest": UPLOADS_MANIFEST,
            **copied,
        }
        record(UPLOADS_MANIFEST)
    steps["uploads_s"] = round(time.monotonic() - t, 3)

    t = time.monotonic()
    if settings.redis_url is None:
        entry["redis"] = {"skipped": "no CHATSDK_REDIS_URL"}
    else:
        try:
            await redis_snapshot(settings.redis_url, work / REDIS_FILE)
            entry["redis"] = {"file": REDIS_FILE, "checked_by": "redis-check-rdb"}
            entry["redis"].update(record(REDIS_FILE))
        except BackupFailed as exc:
            # Redis holds rebuildable state only: the backup stands without it, saying so.
            entry["redis"] = {"error": str(exc)}
    steps["redis_s"] = round(time.monotonic() - t, 3)
    entry["files"] = files
    entry["size_bytes"] = catalogue.size_of(work)


async def schedule(settings: BackupSettings, log: Any = print) -> None:
    """A backup now, then one every `every_s` (start to start), until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    while not stop.is_set():
        run = asyncio.create_task(take_backup(settings, "schedule"))
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if run not in done:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            return
        stopping.cancel()
        entry = run.result()
        log(json.dumps(summary(entry)))
        every = settings.every_s if entry["status"] == "ok" else RETRY_AFTER_FAILURE_S
        wait = max(0.0, min(every, settings.every_s) - float(entry["duration_s"]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)


def summary(entry: Entry) -> dict[str, Any]:
    keys = ("id", "trigger", "status", "error", "started_at", "finished_at", "duration_s")
    return {
        **{k: entry.get(k) for k in keys},
        "size_bytes": entry.get("size_bytes"),
        "steps": entry.get("steps"),
        "pruned": entry.get("pruned", []),
    }

"""The backup repository: one directory per backup, and catalogue.json listing them all.

Writers hold an exclusive lock on `<repository>/.lock` (flock) while they change anything; the
catalogue is replaced atomically (write, fsync, rename), so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FORMAT = "chatsdk-backups/1"
CATALOGUE = "catalogue.json"
LOCK = ".lock"
PARTIAL = ".partial"
METRIC_FILE = "chatsdk_backup.prom"
HASH_CHUNK = 1024 * 1024

Entry = dict[str, Any]


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


@contextlib.contextmanager
def locked(repository: Path) -> Iterator[None]:
    repository.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (repository / LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read(repository: Path) -> dict[str, Any]:
    path = repository / CATALOGUE
    if not path.exists():
        return {"format": FORMAT, "backups": []}
    catalogue: dict[str, Any] = json.loads(path.read_text())
    if catalogue.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} catalogue (format {catalogue.get('format')!r})")
    return catalogue


def write(repository: Path, catalogue: dict[str, Any]) -> None:
    path = repository / CATALOGUE
    tmp = path.with_name(f"{CATALOGUE}.tmp")
    with tmp.open("w") as f:
        json.dump(catalogue, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def successful(catalogue: dict[str, Any], trigger: str | None = None) -> list[Entry]:
    """Successful backups, oldest first (optionally only those `trigger` started)."""
    found = [
        b
        for b in catalogue.get("backups", [])
        if b.get("status") == "ok" and (trigger is None or b.get("trigger") == trigger)
    ]
    return sorted(found, key=lambda b: str(b["finished_at"]))


def newest(catalogue: dict[str, Any], trigger: str | None = None) -> Entry | None:
    found = successful(catalogue, trigger)
    return found[-1] if found else None


def prune(
    repository: Path, catalogue: dict[str, Any], at: datetime, retention_days: int
) -> list[str]:
    """Remove backups that finished more than `retention_days` before `at` (their directories
    and catalogue entries); the newest successful backup is kept whatever its age. Returns the
    ids removed. Call with the lock held."""
    cutoff = at - timedelta(days=retention_days)
    keep = newest(catalogue)
    kept: list[Entry] = []
    removed: list[str] = []
    for entry in catalogue.get("backups", []):
        finished = parse_time(str(entry.get("finished_at") or entry["started_at"]))
        if finished < cutoff and entry is not keep:
            shutil.rmtree(repository / str(entry["id"]), ignore_errors=True)
            removed.append(str(entry["id"]))
        else:
            kept.append(entry)
    catalogue["backups"] = kept
    # Directories of runs that died half-way (a crash leaves `<id>.partial`).
    for partial in repository.glob(f"*{PARTIAL}"):
        if datetime.fromtimestamp(partial.stat().st_mtime, UTC) < at - timedelta(days=1):
            shutil.rmtree(partial, ignore_errors=True)
    return removed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_metric(textfile_dir: Path, catalogue: dict[str, Any], last: Entry) -> None:
    """The backup gauges for node_exporter's textfile collector, replaced atomically (the
    collector reads *.prom files only, so the temp name is never scraped)."""
    good = newest(catalogue)
    lines = [
        "# HELP chatsdk_backup_last_success_timestamp_seconds Unix time the newest successful "
        "backup finished.",
        "# TYPE chatsdk_backup_last_success_timestamp_seconds gauge",
    ]
    if good is not None:
        finished = parse_time(str(good["finished_at"])).timestamp()
        lines.append(f"chatsdk_backup_last_success_timestamp_seconds {finished:.3f}")
        lines += [
            "# HELP chatsdk_backup_last_success_size_bytes Size of the newest successful backup.",
            "# TYPE chatsdk_backup_last_success_size_bytes gauge",
            f"chatsdk_backup_last_success_size_bytes {int(good.get('size_bytes', 0))}",
            "# HELP chatsdk_backup_last_success_duration_seconds How long the newest successful "
            "backup took.",
            "# TYPE chatsdk_backup_last_success_duration_seconds gauge",
            f"chatsdk_backup_last_success_duration_seconds {float(good['duration_s']):.3f}",
        ]
    lines += [
        "# HELP chatsdk_backup_last_run_success 1 if the last backup run succeeded, else 0.",
        "# TYPE chatsdk_backup_last_run_success gauge",
        f"chatsdk_backup_last_run_success {1 if last.get('status') == 'ok' else 0}",
    ]
    textfile_dir.mkdir(parents=True, exist_ok=True)
    tmp = textfile_dir / f".{METRIC_FILE}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, textfile_dir / METRIC_FILE)

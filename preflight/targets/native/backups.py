"""Backups of the native target: the environment of the system's backup job (chatsdk.backup),
its schedule (a `backup` child that takes a backup at once and then one every 12 hours), and
restoring a backup into a new native target before its API workers start (the restore drill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from preflight.errors import TargetUnavailable
from preflight.targets.procs import Child, wait_until

BACKUP_MODULE = "chatsdk.backup"
RETENTION_MODULE = "chatsdk.retention"
CATALOGUE = "catalogue.json"
RESTORE_TIMEOUT_S = 600.0
# The first scheduled backup of a small database takes seconds; a slow machine gets more.
FIRST_BACKUP_TIMEOUT_S = 120.0


def backup_env(
    *,
    repository: Path,
    superuser_dsn: str,
    redis_url: str,
    upload_dir: Path,
    pg_bin: Path,
    textfile_dir: Path | None,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """CHATSDK_BACKUP_* for the job, plus the API's settings it reads (uploads, Redis)."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "CHATSDK_BACKUP_DIR": str(repository),
        "CHATSDK_BACKUP_DATABASE_URL": superuser_dsn,
        "CHATSDK_BACKUP_PG_BIN": str(pg_bin),
        "CHATSDK_REDIS_URL": redis_url,
        "CHATSDK_STORAGE": "local",
        "CHATSDK_UPLOAD_DIR": str(upload_dir),
    }
    if textfile_dir is not None:
        env["CHATSDK_BACKUP_TEXTFILE_DIR"] = str(textfile_dir)
    return {**env, **extra}


def job_argv(module: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module, *args)


def scheduler(logs: Path) -> Child:
    return Child(
        "backup", list(job_argv(BACKUP_MODULE, "schedule")), logs / "backup.log", signal.SIGTERM
    )


def catalogue_of(repository: Path) -> dict[str, Any]:
    path = repository / CATALOGUE
    if not path.exists():
        return {"backups": []}
    found: dict[str, Any] = json.loads(path.read_text())
    return found


def wait_first_backup(child: Child, repository: Path) -> None:
    """Until the schedule's first run is in the catalogue (whether it succeeded or not: a
    failing backup job is for the probes to find, not a reason not to start)."""

    def done() -> bool:
        try:
            backups = catalogue_of(repository).get("backups", [])
        except (OSError, ValueError):
            return False
        return any(b.get("trigger") == "schedule" for b in backups)

    wait_until(child, done, FIRST_BACKUP_TIMEOUT_S, "done with its first backup", interval=0.1)


def restore_backup(
    backup: Path, *, superuser_dsn: str, upload_dir: Path, pg_bin: Path, log: Path
) -> dict[str, Any]:
    """`python -m chatsdk.backup restore` of one backup directory (its parent is the repository)
    into the target's empty database and upload store. Returns the restore's report, also when
    the restored data differs from the backup (the drill judges that); raises when nothing
    could be restored."""
    upload_dir.mkdir(mode=0o700, exist_ok=True)
    argv = job_argv(
        BACKUP_MODULE,
        "restore",
        f"--repository={backup.parent}",
        f"--id={backup.name}",
        f"--upload-dir={upload_dir}",
        f"--pg-bin={pg_bin}",
    )
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "CHATSDK_BACKUP_DATABASE_URL": superuser_dsn,  # not in argv: no password in `ps`
    }
    result = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=RESTORE_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    log.write_text(result.stdout + result.stderr)
    try:
        report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        report = {}
    if result.returncode not in (0, 1) or "backup_id" not in report:
        raise TargetUnavailable(
            f"restoring backup {backup.name} failed (exit {result.returncode}): "
            f"{report.get('error') or result.stderr.strip()[-500:]}"
        )
    return report

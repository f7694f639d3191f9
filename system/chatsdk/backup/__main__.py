"""`python -m chatsdk.backup run | schedule | check | verify | restore` (see the package
docstring)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from chatsdk.backup import catalogue
from chatsdk.backup.job import (
    DEFAULT_PG_BIN,
    BackupFailed,
    BackupSettings,
    schedule,
    summary,
    take_backup,
)
from chatsdk.backup.restore import RestoreRequest, restore
from chatsdk.errors import SettingsError

EXIT_OK = 0
EXIT_FAILED = 1  # run: the backup failed; restore: restored, but it differs from the backup
EXIT_ERROR = 2  # bad settings; restore: refused or a tool failed


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chatsdk.backup", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="take one backup now (settings: CHATSDK_BACKUP_*)")
    run.add_argument("--trigger", default="manual", choices=("manual", "schedule"))
    sub.add_parser("schedule", help="a backup now, then every CHATSDK_BACKUP_EVERY seconds")
    check = sub.add_parser(
        "check",
        help="exit 0 when the newest successful backup in CHATSDK_BACKUP_DIR is younger than "
        "--max-age seconds (a container health check), 1 otherwise",
    )
    check.add_argument("--max-age", type=float, required=True, help="seconds")
    verify = sub.add_parser(
        "verify",
        help="check a backup's base backup against its manifest with this host's "
        "pg_verifybackup (CHATSDK_BACKUP_DIR, CHATSDK_BACKUP_PG_BIN); exit 0 when it holds",
    )
    verify.add_argument("--id", default=None, help="the backup (default: the newest successful)")
    rest = sub.add_parser("restore", help="restore a backup into an empty database and store")
    rest.add_argument("--repository", type=Path, required=True, help="the backup repository")
    rest.add_argument("--id", default=None, help="the backup (default: the newest successful)")
    rest.add_argument(
        "--database-url",
        default=os.environ.get("CHATSDK_BACKUP_DATABASE_URL"),
        help="the empty database, as a role that may create its objects (e.g. the superuser); "
        "default: CHATSDK_BACKUP_DATABASE_URL (keeps the password out of `ps`)",
    )
    rest.add_argument("--upload-dir", type=Path, default=None, help="the empty upload store")
    rest.add_argument("--pg-bin", type=Path, default=None, help="PostgreSQL's client binaries")
    return p


def restore_command(args: argparse.Namespace) -> int:
    if not args.database_url:
        print("chatsdk.backup: restore needs --database-url", file=sys.stderr)
        return EXIT_ERROR
    request = RestoreRequest(
        repository=args.repository,
        database_url=args.database_url,
        upload_dir=args.upload_dir,
        backup_id=args.id,
        **({"pg_bin": args.pg_bin} if args.pg_bin else {}),
    )
    try:
        report = asyncio.run(restore(request))
    except (BackupFailed, OSError, ValueError) as exc:
        print(json.dumps({"verified": False, "error": str(exc)}))
        print(f"chatsdk.backup: restore failed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(report))
    return EXIT_OK if report["verified"] else EXIT_FAILED


def check_command(args: argparse.Namespace) -> int:
    """Whether the schedule is keeping up: reads the catalogue only (no database, no tools)."""
    directory = os.environ.get("CHATSDK_BACKUP_DIR", "")
    if not directory:
        print("chatsdk.backup: check needs CHATSDK_BACKUP_DIR", file=sys.stderr)
        return EXIT_ERROR
    good = catalogue.newest(catalogue.read(Path(directory)))
    if good is None:
        print("chatsdk.backup: no successful backup yet", file=sys.stderr)
        return EXIT_FAILED
    age = (catalogue.now() - catalogue.parse_time(str(good["finished_at"]))).total_seconds()
    print(json.dumps({"id": good.get("id"), "age_s": round(age, 1), "max_age_s": args.max_age}))
    return EXIT_OK if age <= args.max_age else EXIT_FAILED


def verify_command(args: argparse.Namespace) -> int:
    """pg_verifybackup of one backup's base backup, by the tools that made it: an operator's
    (or a drill's) check that needs no PostgreSQL client of the same version elsewhere."""
    directory = Path(os.environ.get("CHATSDK_BACKUP_DIR", ""))
    pg_bin = Path(os.environ.get("CHATSDK_BACKUP_PG_BIN") or DEFAULT_PG_BIN)
    entries = catalogue.read(directory).get("backups", []) if directory != Path() else []
    if args.id is None:
        entry = catalogue.newest(catalogue.read(directory)) if directory != Path() else None
    else:
        entry = next((e for e in entries if e.get("id") == args.id), None)
    if entry is None:
        print(f"chatsdk.backup: no backup {args.id or '(newest)'} in {directory}", file=sys.stderr)
        return EXIT_ERROR
    base = directory / str(entry["id"]) / str(entry["database"]["base"]["dir"])
    done = subprocess.run(
        [str(pg_bin / "pg_verifybackup"), str(base)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    print(
        json.dumps(
            {
                "id": entry["id"],
                "base": str(base),
                "verified": done.returncode == 0,
                "output": (done.stdout + done.stderr).strip()[-1000:],
            }
        )
    )
    return EXIT_OK if done.returncode == 0 else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    standalone = {"restore": restore_command, "check": check_command, "verify": verify_command}
    if args.command in standalone:
        return standalone[args.command](args)
    try:
        settings = BackupSettings.from_env()
    except SettingsError as exc:
        print(f"chatsdk.backup: invalid settings: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.command == "schedule":
        asyncio.run(schedule(settings, log=lambda line: print(line, flush=True)))
        return EXIT_OK
    entry = asyncio.run(take_backup(settings, args.trigger))
    print(json.dumps(summary(entry)))
    if entry["status"] != "ok":
        print(f"chatsdk.backup: backup failed: {entry['error']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""The reports folder as the history of runs: each run's own folder, named by its run id (which
starts with the UTC start time, so the names sort by age), `latest` pointing at the newest, the
previous run's record and the earlier records, newest first."""

from __future__ import annotations

import os
import secrets
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from preflight.errors import PreflightError
from preflight.record import RECORD_FILE, load_record, write_record
from preflight.report import write_reports

LATEST = "latest"


def new_run_id(started: datetime) -> str:
    """A run id: the UTC start time, then a random suffix."""
    return f"{started.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def previous_record(out: Path) -> dict[str, Any] | None:
    """The record `latest` points at, to diff against; None when there is none or it is not
    readable (with a warning on stderr)."""
    latest = out / LATEST / RECORD_FILE
    if not latest.exists():
        return None
    try:
        return load_record(latest)
    except PreflightError as exc:
        print(f"preflight: warning: no diff against the previous run: {exc}", file=sys.stderr)
        return None


def earlier_records(out: Path) -> list[Path]:
    """The record files of the runs under `out`, newest first."""
    if not out.is_dir():
        return []
    runs = [
        p for p in out.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    ]
    runs = [p for p in runs if (p / RECORD_FILE).is_file()]
    return [p / RECORD_FILE for p in sorted(runs, key=lambda p: p.name, reverse=True)]


def write_run(record: dict[str, Any], out: Path, run_id: str) -> Path:
    """The run's folder with its record and reports, then `latest` moved to it (atomically)."""
    run_dir = out / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    write_record(record, run_dir / RECORD_FILE)
    write_reports(record, run_dir)
    link = out / LATEST
    tmp = out / f".{LATEST}-{run_id}"
    tmp.symlink_to(run_id, target_is_directory=True)
    os.replace(tmp, link)
    return run_dir

"""The reports folder as the history of runs: each run's own folder, named by its run id (which
starts with the UTC start time, so the names sort by age), and the earlier records, newest
first."""

from __future__ import annotations

from pathlib import Path

from preflight.record import RECORD_FILE


def earlier_records(out: Path) -> list[Path]:
    """The record files of the runs under `out`, newest first."""
    if not out.is_dir():
        return []
    runs = [
        p for p in out.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    ]
    runs = [p for p in runs if (p / RECORD_FILE).is_file()]
    return [p / RECORD_FILE for p in sorted(runs, key=lambda p: p.name, reverse=True)]

"""Reports rendered once from a run record: report.html (self-contained) and junit.xml."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from preflight.record import validate_record
from preflight.report.html import render_html
from preflight.report.junit import render_junit

HTML_FILE = "report.html"
JUNIT_FILE = "junit.xml"


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(record: dict[str, Any], out_dir: Path) -> list[Path]:
    """Validate the record, then write report.html and junit.xml into out_dir."""
    validate_record(record, f"record of run {record.get('run_id', '?')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    html, junit = out_dir / HTML_FILE, out_dir / JUNIT_FILE
    _write_atomically(html, render_html(record).encode())
    _write_atomically(junit, render_junit(record))
    return [html, junit]

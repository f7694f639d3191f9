"""Reading JSON-lines log files the way the system writes them: one JSON object a line, among
lines of plain text (a component's own start-up messages) that are passed over."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def json_object(line: str) -> dict[str, Any] | None:
    """The JSON object a log line holds, or None for any other line (plain text, a line cut
    short, a JSON value that is not an object)."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def json_records(paths: Iterable[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every JSON object logged on a line of its own in these files, with the file it is in; a
    file not written yet holds none."""
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            record = json_object(line)
            if record is not None:
                yield path, record

"""What part of the checklist a run covered, and its verdict in words that say so.

A run limited by --area, --severity or --drills decides only some items. Wherever its verdict
appears (the closing line, the report, `preflight verify`, junit.xml, the CI job summary) it
reads e.g. "READY (security only, 29 of 196 items)"; a full run's reads "READY".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def coverage(record: Mapping[str, Any]) -> tuple[int, int]:
    """How many items the run selected, of how many the checklist has."""
    items = record["items"]
    return sum(1 for item in items if item["selected"]), len(items)


def partial(record: Mapping[str, Any]) -> bool:
    selected, total = coverage(record)
    return selected < total


def scope(record: Mapping[str, Any]) -> str:
    """'' for a full run, else e.g. 'security only, 29 of 196 items'."""
    selected, total = coverage(record)
    if selected == total:
        return ""
    selection = record.get("selection") or {}
    areas, severities = selection.get("areas"), selection.get("severities")
    parts = []
    if areas:
        parts.append(", ".join(areas))
    if severities:
        parts.append(f"{', '.join(severities)} severity")
    what = f"{'; '.join(parts)} only" if parts else "partial"
    return f"{what}, {selected} of {total} items"


def verdict_label(record: Mapping[str, Any]) -> str:
    """The run's verdict with its scope: 'READY', 'NOT READY (security only, 29 of 196 items)'."""
    label = str(record["verdict"]["label"])
    covered = scope(record)
    return f"{label} ({covered})" if covered else label


def verdict_line(record: Mapping[str, Any]) -> str:
    """The verdict's summary line with its scope, e.g. 'READY (security only, 29 of 196 items)
    - 29 pass, ... in 212 s'."""
    label, summary = str(record["verdict"]["label"]), str(record["verdict"]["summary"])
    rest = summary[len(label) :] if summary.startswith(label) else f" - {summary}"
    return verdict_label(record) + rest

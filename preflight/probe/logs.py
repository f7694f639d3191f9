"""`target.logs`: the target's log files as probes read them: their lines, the JSON records
among them (preflight/jsonlines.py), and a wait for a record to be written."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from preflight.jsonlines import json_records
from preflight.polling import until

WAIT_S = 5.0
POLL_S = 0.2

Record = dict[str, Any]


class Logs:
    """The log files a target names; `files()` is asked at each read (skipping the probe when
    the target names none)."""

    def __init__(self, files: Callable[[], tuple[Path, ...]]) -> None:
        self._files = files

    @property
    def files(self) -> tuple[Path, ...]:
        return self._files()

    def lines(self) -> Iterator[tuple[Path, str]]:
        """Every line of every file, with its file; a file not written yet has none."""
        for path in self.files:
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                yield path, line

    def records(self) -> Iterator[tuple[Path, Record]]:
        """Every JSON object logged on a line of its own, with its file."""
        return json_records(self.files)

    def find(
        self, wanted: Callable[[Record], bool], timeout: float = WAIT_S
    ) -> list[tuple[Path, Record]]:
        """The records `wanted` accepts, waiting up to `timeout` for writers to flush."""
        found: list[tuple[Path, Record]] = []

        def look() -> bool:
            found[:] = [(p, r) for p, r in self.records() if wanted(r)]
            return bool(found)

        until(look, timeout, interval=POLL_S)
        return found

"""A run's progress on the terminal: the stage, then one line per probe with its area, item,
outcome and the elapsed time; a live line instead when the stream is a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from preflight.outcomes import ProbeResult


@dataclass
class Progress:
    """Progress on the terminal: the stage, then one line per probe with its area, item,
    outcome and the elapsed time; a live line instead when the stream is a terminal."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    start: float = field(default_factory=time.monotonic)
    _area: str = ""

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def log(self, message: str) -> None:
        self._write(f"[{self.elapsed:6.1f}s] {message}")

    def probe_started(self, nodeid: str, items: Sequence[str], index: int, total: int) -> None:
        if self.stream.isatty():
            line = f"[{self.elapsed:6.1f}s] ({index}/{total}) {' '.join(items)} {nodeid}"
            self.stream.write("\r\x1b[2K" + line[:160])
            self.stream.flush()

    def probe_done(self, result: ProbeResult, area: str) -> None:
        if area != self._area:
            self._area = area
            self.log(f"area {area}")
        items = " ".join(result.items)
        self._write(
            f"[{self.elapsed:6.1f}s]   {result.outcome.value:<5} {items}  {result.nodeid}"
            + (f"  - {result.message}" if result.outcome.value != "pass" else "")
        )

    def _write(self, line: str) -> None:
        prefix = "\r\x1b[2K" if self.stream.isatty() else ""
        self.stream.write(prefix + line + "\n")
        self.stream.flush()

"""A run's progress on the terminal: the stage, then one line per checklist item once its
probes are done (its outcome, how many probes decided it, and the elapsed time), or one line per
probe with `--verbose`; a live line shows the probe running when the stream is a terminal."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from preflight.outcomes import Outcome, ProbeResult, combine


@dataclass
class Progress:
    """Progress on the terminal: one line per item when its probes are done (per probe when
    `verbose`), a header per area, and a live line while a probe runs on a terminal."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    verbose: bool = False
    start: float = field(default_factory=time.monotonic)
    stages: list[tuple[str, float]] = field(default_factory=list)  # (stage, seconds), in order
    _area: str = ""
    _pending: dict[str, int] = field(default_factory=dict)
    _results: dict[str, list[ProbeResult]] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def log(self, message: str) -> None:
        self._write(f"[{self.elapsed:6.1f}s] {message}")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage of the run (also one that raised): where a run's time went."""
        started = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            self.stages.append((name, seconds))
            self.log(f"{name}: {seconds:.1f} s")

    def probes_collected(self, probes: Mapping[str, Sequence[str]]) -> None:
        """The probes a stage will run (node id -> item ids): an item's line waits for all of
        its probes in the stage."""
        self._pending, self._results = {}, {}
        for ids in probes.values():
            for item_id in ids:
                self._pending[item_id] = self._pending.get(item_id, 0) + 1

    def probe_started(self, nodeid: str, items: Sequence[str], index: int, total: int) -> None:
        if self.stream.isatty():
            line = f"[{self.elapsed:6.1f}s] ({index}/{total}) {' '.join(items)} {nodeid}"
            self.stream.write("\r\x1b[2K" + line[:160])
            self.stream.flush()

    def probe_done(self, result: ProbeResult, area: str) -> None:
        if area != self._area:
            self._area = area
            self.log(f"area {area}")
        if self.verbose:
            items = " ".join(result.items)
            self._write(
                f"[{self.elapsed:6.1f}s]   {result.outcome.value:<5} {items}  {result.nodeid}"
                + (f"  - {result.message}" if result.outcome.value != "pass" else "")
            )
            return
        for item_id in result.items:
            self._results.setdefault(item_id, []).append(result)
            left = self._pending.get(item_id, 1) - 1
            self._pending[item_id] = left
            if left <= 0:
                self._item_done(item_id, self._results.pop(item_id))

    def _item_done(self, item_id: str, results: list[ProbeResult]) -> None:
        outcome, reason = combine(results)
        probes = f"{len(results)} probe{'s' if len(results) != 1 else ''}"
        why = f"  - {reason}" if outcome is not Outcome.PASS else ""
        self._write(f"[{self.elapsed:6.1f}s]   {outcome.value:<5} {item_id}  ({probes}){why}")

    def _write(self, line: str) -> None:
        prefix = "\r\x1b[2K" if self.stream.isatty() else ""
        self.stream.write(prefix + line + "\n")
        self.stream.flush()

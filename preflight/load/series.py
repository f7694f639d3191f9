"""Locust's time series, read: per request type the requests, failures and response-time
histogram over some intervals, Locust's percentile rule, and the full-scale window (every
interval spent at the run's peak user count).

The Locust master writes one JSON line per interval (loadtests/recorder.py): users, WebSockets
held, and per request type that interval's count, failures and histogram.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (0.5, 0.95, 0.99)


def percentile(hist: Mapping[int, int], fraction: float) -> float:
    """Locust's rule: the smallest bucket with at most (1 - fraction) of the requests above it."""
    total = sum(hist.values())
    if total == 0:
        return 0.0
    wanted = int(total * fraction)
    seen = 0
    for bucket in sorted(hist, reverse=True):
        seen += hist[bucket]
        if total - seen <= wanted:
            return float(bucket)
    return 0.0


@dataclass
class Stat:
    """Requests, failures and the histogram of one request type over some window."""

    requests: int = 0
    failures: int = 0
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, entry: Mapping[str, Any]) -> None:
        self.requests += int(entry["requests"])
        self.failures += int(entry["failures"])
        for bucket, count in entry["hist"].items():
            self.hist[int(bucket)] = self.hist.get(int(bucket), 0) + int(count)

    def merge(self, other: Stat) -> None:
        self.add({"requests": other.requests, "failures": other.failures, "hist": dict(other.hist)})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": self.requests, "failures": self.failures}
        for p in PERCENTILES:
            out[f"p{round(p * 100)}_ms"] = percentile(self.hist, p)
        return out


def is_http(key: str) -> bool:
    return not key.startswith("WS ")


def aggregate(lines: Iterable[Mapping[str, Any]], keep: Callable[[str], bool]) -> Stat:
    total = Stat()
    for line in lines:
        for key, entry in line["entries"].items():
            if keep(key):
                total.add(entry)
    return total


def by_type(lines: Iterable[Mapping[str, Any]]) -> dict[str, Stat]:
    stats: dict[str, Stat] = {}
    for line in lines:
        for key, entry in line["entries"].items():
            stats.setdefault(key, Stat()).add(entry)
    return dict(sorted(stats.items()))


@dataclass(frozen=True)
class Window:
    """The intervals spent at full scale: both ends of the interval at the peak user count."""

    lines: tuple[Mapping[str, Any], ...]
    users: int
    sockets: int
    duration_s: float
    start_t: float = 0.0  # wall-clock bounds: each line's t is the end of its interval
    end_t: float = 0.0

    @classmethod
    def of(cls, lines: Sequence[Mapping[str, Any]]) -> Window:
        peak = max((int(line["users"]) for line in lines), default=0)
        picked: list[Mapping[str, Any]] = []
        duration = 0.0
        start_t = 0.0
        for before, line in itertools.pairwise(lines):
            if peak and int(before["users"]) >= peak and int(line["users"]) >= peak:
                if not picked:
                    start_t = float(before["t"])
                picked.append(line)
                duration += float(line["t"]) - float(before["t"])
        # Workers report their sockets to the master every 3 s: the first seconds at full scale
        # may still show a count from the ramp.
        settled = [line for line in picked if float(line["t"]) - float(picked[0]["t"]) >= 3.0]
        sockets = min((int(line["sockets"]) for line in settled or picked), default=0)
        end_t = float(picked[-1]["t"]) if picked else 0.0
        return cls(tuple(picked), peak if picked else 0, sockets, duration, start_t, end_t)

    def scale(self) -> dict[str, int]:
        return {
            "users": self.users,
            "ws_connections": self.sockets,
            "duration_s": math.floor(self.duration_s),
        }

"""The target's own Prometheus read over a window of production history (the post-launch items,
the availability SLO): the declared objectives (system/monitoring/slo.yml), Prometheus
durations, whether Prometheus holds the whole window, and range queries over it.

Where Prometheus holds less of the API's history than the window (a target launched for this
run, a fresh deployment), nothing can decide the item: the probe skips and says how much it
found.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

from checks.monitoring._monitoring import API_JOB, Monitoring, prom
from preflight.probe import undecided
from preflight.probe.target import ProbeTarget

HOUR_S = 3600.0
DAY_S = 86400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": HOUR_S, "d": DAY_S, "w": 7 * DAY_S}
_UNITS["y"] = 365 * DAY_S
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|[smhdwy])")


def duration_s(text: str) -> float:
    """Seconds of a Prometheus duration such as `30d`, `1h30m` or `0s`."""
    parts = _DURATION.findall(str(text).strip())
    if not parts or "".join(n + u for n, u in parts) != str(text).strip():
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def human(seconds: float) -> str:
    """`7.0 days`, `5.5 hours`, `12 minutes`."""
    if seconds >= DAY_S:
        return f"{seconds / DAY_S:.1f} days"
    if seconds >= HOUR_S:
        return f"{seconds / HOUR_S:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def slo(monitoring: Monitoring, *keys: str) -> Any:
    """A declared objective of slo.yml (`slo(m, "availability", "objective")`); a missing one
    fails the probe."""
    __tracebackhide__ = True
    node: Any = monitoring.load_yaml("slo.yml") or {}
    for key in keys:
        held = node if isinstance(node, dict) else {}
        assert key in held, f"slo.yml in {monitoring.dir} must declare {'.'.join(keys)} (got none)"
        node = node[key]
    return node


@dataclass(frozen=True)
class Window:
    """The last `length_s` seconds up to `end` (Unix time), which Prometheus holds."""

    start: float
    end: float

    @property
    def length_s(self) -> float:
        return self.end - self.start


def held_window(target: ProbeTarget, length_s: float) -> Window:
    """The window of `length_s` ending now, once Prometheus is seen to hold the API's samples
    from its beginning (one hour's slack); skips the probe where it holds less."""
    end = time.time()
    start = end - length_s
    data = prom(
        target,
        "/api/v1/query_range",
        query=f'count(up{{job="{API_JOB}"}})',
        start=f"{start:.3f}",
        end=f"{end:.3f}",
        step=f"{HOUR_S:g}",
    )
    stamps = [float(t) for series in data.get("result") or [] for t, _ in series["values"]]
    first = min(stamps, default=None)
    if first is None or first > start + HOUR_S:
        if first is None:
            held = "none"
        elif end - first < HOUR_S:
            held = "less than an hour"  # the resolution of the query
        else:
            held = f"the last {human(end - first)}"
        undecided(
            f"Prometheus at {target.prometheus_url} holds {held} of the API's samples "
            f'(up{{job="{API_JOB}"}}), less than the {human(length_s)} window: the target has '
            "no production history over the window to decide from"
        )
    return Window(start, end)


def by_day(
    target: ProbeTarget, window: Window, expr: str
) -> dict[tuple[tuple[str, str], ...], list[tuple[float, float]]]:
    """A range query of `expr` (written over `[1d]`) at the end of each day of the window:
    labels -> [(end of the day, value)], days without a number (no requests) left out."""
    data = prom(
        target,
        "/api/v1/query_range",
        query=expr,
        start=f"{window.start + DAY_S:.3f}",
        end=f"{window.end:.3f}",
        step=f"{DAY_S:g}",
    )
    found: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for series in data.get("result") or []:
        labels = tuple(sorted(series["metric"].items()))
        values = [(float(t), float(v)) for t, v in series["values"]]
        found[labels] = [(t, v) for t, v in values if math.isfinite(v)]
    return found


def day(stamp: float, window: Window) -> str:
    """`day 3` of the window for the day that ends at `stamp`."""
    return f"day {round((stamp - window.start) / DAY_S)}"

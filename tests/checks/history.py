"""A real Prometheus holding a made-up production history of the API (written with `promtool
tsdb create-blocks-from openmetrics`, then served by a Prometheus started here), for the probes
that read the target's Prometheus over a window (checks/monitoring/test_history.py).

A `Week` says what the history shows: each operation's share of the traffic and 5xx ratio, how
slow requests were, and how long the API was down.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from preflight.targets.base import Deployment, Edge, Observability, TargetInfo
from preflight.targets.procs import Child, free_port, wait_until

STEP_S = 300
AHEAD_S = 1800  # the history runs on past now, so that its newest samples are fresh while the
# probes read it
REQUESTS_PER_STEP = 3000
BASE = 'job="chatsdk-api",instance="api-0:8080"'
# Cumulative share of requests at or below each bucket bound.
FAST = {"0.25": 0.90, "0.5": 0.99, "1": 1.0, "+Inf": 1.0}  # p95 about 0.39 s
SLOW = {"0.25": 0.50, "0.5": 0.80, "1": 0.97, "+Inf": 1.0}  # p95 about 0.92 s


@dataclass(frozen=True)
class Operation:
    method: str
    route: str
    share: float
    error_ratio: float = 0.001


@dataclass(frozen=True)
class Week:
    """`days` of history up to a little after now (Prometheus still scraping): the operations'
    mix and errors, latency from `slow_days` days before the end on, and `down_minutes` of
    downtime at the end."""

    days: float = 7.2
    operations: tuple[Operation, ...] = field(
        default_factory=lambda: (
            Operation("GET", "/v1/channels", 0.8),
            Operation("POST", "/v1/channels/{channel_id}/messages", 0.2),
        )
    )
    slow_days: float = 0.0
    down_minutes: float = 0.0


def _labelled(week: Week) -> list[tuple[Operation, str]]:
    return [(op, f'{BASE},method="{op.method}",route="{op.route}"') for op in week.operations]


def openmetrics(week: Week, now: float) -> str:
    """The history as OpenMetrics text: one sample per series every STEP_S, from `week.days`
    before `now` to AHEAD_S after it."""
    ahead = AHEAD_S // STEP_S
    steps = int(week.days * 86400 / STEP_S) + ahead
    start = int(now) - (steps - ahead) * STEP_S
    at = [start + i * STEP_S for i in range(steps)]
    down = set(range(steps - ahead - int(week.down_minutes * 60 / STEP_S), steps - ahead))
    slow_from = steps - ahead - int(week.slow_days * 86400 / STEP_S)
    lines = ["# TYPE up gauge"]
    lines += [f"up{{{BASE}}} {0 if i in down else 1} {at[i]}" for i in range(steps)]
    lines.append("# TYPE http_requests counter")
    for op, labels in _labelled(week):
        for status, part in (("200", 1 - op.error_ratio), ("500", op.error_ratio)):
            series = f'http_requests_total{{{labels},status="{status}"}}'
            rate = REQUESTS_PER_STEP * op.share * part
            lines += _counter(series, at, down, [rate] * len(at))
    lines.append("# TYPE http_request_duration_seconds histogram")
    for op, labels in _labelled(week):
        for le in FAST:
            series = f'http_request_duration_seconds_bucket{{{labels},le="{le}"}}'
            rates = [
                REQUESTS_PER_STEP * op.share * (SLOW if i >= slow_from else FAST)[le]
                for i in range(steps)
            ]
            lines += _counter(series, at, down, rates)
    return "\n".join(lines) + "\n# EOF\n"


def _counter(series: str, at: list[int], down: set[int], per_step: list[float]) -> list[str]:
    """A counter growing by per_step[i] at each step, except while the API is down."""
    lines, total = [], 0.0
    for i, stamp in enumerate(at):
        total += 0.0 if i == 0 or i in down else per_step[i]
        lines.append(f"{series} {total:.1f} {stamp}")
    return lines


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except OSError:
        return False


@contextmanager
def prometheus_with_history(
    tmp: Path, week: Week | None, retention: str = "30d"
) -> Iterator[TargetInfo]:
    """A target whose only part is a Prometheus holding `week` (None: no history at all),
    started with `retention`."""
    data = tmp / "prometheus-data"
    data.mkdir(parents=True)
    if week is not None:
        source = tmp / "history.om"
        source.write_text(openmetrics(week, time.time()))
        subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
            check=True,
            capture_output=True,
            timeout=600,
        )
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    child = Child(
        "prometheus",
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--storage.tsdb.retention.time={retention}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    child.start()
    try:
        wait_until(child, lambda: _ready(f"{url}/-/ready"), 120, "ready")
        yield TargetInfo(
            name="history",
            kind="external",
            edge=Edge("https://127.0.0.1:9"),
            admin_key="unused",
            observability=Observability(prometheus_url=url),
            deployment=Deployment(),
        )
    finally:
        child.stop()

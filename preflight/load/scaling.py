"""The PERF-HSCALE step: the sustained throughput with every API worker over that with half of
them.

Two closed-loop runs (the profile's `scaling` users with no think time, so they take all the
throughput the system gives) of the same request mix: one against the target as it is, one
with half of its API workers stopped through `control`, which are started again (and waited
for) afterwards. It needs the profile's `scaling` settings and control of at least two API
workers; otherwise the figure is absent, with the reason in the record. The runs themselves are
the Locust runner's (preflight/load/locust.py); this module plans them and reads their result.
"""

from __future__ import annotations

import functools
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from preflight.errors import PreflightError
from preflight.load.figures import RunData
from preflight.load.guards import Thresholds, saturation
from preflight.load.results import LoadFigure, LoadResults
from preflight.load.series import Window, aggregate, is_http, percentile
from preflight.polling import until
from preflight.targets.base import TargetInfo

SCALING_METRIC = "throughput_scaling_ratio_2x_workers"
EDGE_FAIL_TIMEOUT_S = 2.0  # system/nginx/nginx.conf.j2: max_fails=3 fail_timeout=2s


@dataclass(frozen=True)
class ScalingPlan:
    """The step's two runs: the profile settings both use, every API worker the target controls,
    and those stopped for the second run."""

    overrides: Mapping[str, Any]
    workers: list[str]
    stopped: list[str]


def plan_scaling(
    info: TargetInfo, profile: str, settings: Mapping[str, Any], overrides: Mapping[str, Any]
) -> ScalingPlan | str:
    """The plan, from the profile's `settings` and the runner's own `overrides`; or why the step
    cannot run."""
    scaling = settings.get("scaling")
    names = sorted(n for n in info.drills.control if n.startswith("api-"))
    if not isinstance(scaling, Mapping):
        return f"profile {profile} defines no `scaling` step"
    if len(names) < 2:
        return f"the target controls {len(names)} API worker(s); halving needs two or more"
    closed_loop = {
        **overrides,
        "users": int(scaling["users"]),
        "spawn_rate": float(scaling["spawn_rate"]),
        "hold_s": float(scaling["hold_s"]),
        "sockets_per_user": 0,
        "wait_s": {persona: [0, 0] for persona in settings["personas"]},
        # Closed-loop users queue by design: only errors stop these runs early.
        "early_stop": {**settings.get("early_stop", {}), "api_latency_p95_ms": 1e9},
    }
    return ScalingPlan(closed_loop, names, names[len(names) // 2 :])


@contextmanager
def halved(info: TargetInfo, stopped: Sequence[str]) -> Iterator[None]:
    """The API workers `stopped` are stopped inside, started again and waited for after."""
    try:
        for name in stopped:
            info.drills.control[name].stop()
        yield
    finally:
        for name in stopped:
            info.drills.control[name].start()
        wait_serving(info, stopped)


def scaling_result(
    results: LoadResults, plan: ScalingPlan, full: RunData, half: RunData, limits: Thresholds
) -> LoadResults:
    """`results` with the scaling figure from the two runs, or with it absent, saying why."""
    all_n, half_n = len(plan.workers), len(plan.workers) - len(plan.stopped)
    steps = {all_n: throughput(full, limits), half_n: throughput(half, limits)}
    detail: dict[str, Any] = {
        "workers": {str(n): step for n, step in steps.items()},
        "stopped": plan.stopped,
        "users": plan.overrides["users"],
        "hold_s": plan.overrides["hold_s"],
    }
    invalid = [step["invalid"] for step in steps.values() if step["invalid"]]
    low = steps[half_n]["ok_requests_per_s"]
    if invalid or not low:
        detail["skipped"] = invalid[0] if invalid else f"the run with {half_n} served nothing"
        return skipped_scaling(results, detail)
    ratio = round(steps[all_n]["ok_requests_per_s"] / low, 2)
    detail["ratio"] = ratio
    scale = steps[all_n]["scale"]
    figure = LoadFigure(SCALING_METRIC, ratio, scale, "x")
    return replace(
        results,
        figures={**results.figures, SCALING_METRIC: figure},
        details={**results.details, "scaling": detail},
    )


def skipped_scaling(results: LoadResults, detail: Mapping[str, Any]) -> LoadResults:
    return replace(
        results,
        details={**results.details, "scaling": dict(detail)},
        absent={**results.absent, SCALING_METRIC: f"no scaling figure: {detail['skipped']}"},
    )


def throughput(data: RunData, limits: Thresholds) -> dict[str, Any]:
    """One scaling step: successful HTTP requests/s over its full-scale window, and whether the
    generator saturated (then the step is no evidence)."""
    lines = [line for line in data.lines if line.get("entries") is not None]
    window = Window.of(lines)
    http = aggregate(window.lines, is_http)
    ok = http.requests - http.failures
    rate = round(ok / window.duration_s, 2) if window.duration_s > 0 else 0.0
    invalid = saturation(data.cpu, window, os.cpu_count() or 1, limits) or ""
    if not window.lines:
        invalid = "Locust recorded no interval at full scale" + (
            f": {data.log_tail}" if data.log_tail else ""
        )
    return {
        "ok_requests_per_s": rate,
        "failures": http.failures,
        "p95_ms": percentile(http.hist, 0.95),
        "scale": window.scale(),
        "invalid": invalid,
    }


def wait_serving(info: TargetInfo, names: Sequence[str], timeout_s: float = 60.0) -> None:
    """Until each restarted worker is ready (its own readiness where the target gives its address:
    the native target's i-th metrics URL is api-i's) and the edge routes to it again: the edge
    learnt of the stop from refused connections and tries the worker again after its
    fail_timeout of 2 s."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        index = int(name.removeprefix("api-"))
        if info.kind != "native" or index >= len(info.observability.metrics_urls):
            continue
        url = info.observability.metrics_urls[index].removesuffix("/metrics") + "/v1/health/ready"
        left = max(0.0, deadline - time.monotonic())
        if not until(functools.partial(_answers_200, url), left, interval=0.2):
            raise PreflightError(f"{name} was not ready within {timeout_s:g} s of its restart")
    time.sleep(EDGE_FAIL_TIMEOUT_S + 0.5)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - the target's own
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False

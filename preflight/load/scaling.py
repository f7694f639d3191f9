"""The PERF-HSCALE step: the sustained throughput with every API worker over that with half of
them.

Two closed-loop runs (the profile's `scaling` users with no think time, so they take all the
throughput the system gives) of the same request mix: one against the target's API workers, one
with half of them stopped through `control`, which are started again (and waited for)
afterwards. The workers are those the edge sends /v1 to (the target's `cpu_limits` names them;
else its `api-*` components); an even number of them take part, an odd one out stays stopped
for both runs, so the second run has exactly half.

Where the target gives each worker a CPU limit of its own (`cpu_limits`: containers), both runs
limit every worker to the profile's `cpus_per_worker`, put back afterwards, so the step measures
horizontal scaling rather than the host's cores; each run reads the workers' throttling and is
no evidence where a worker that served it was not bounded by its limit (cpu_bound.py), as it is
where the load generator saturated. Elsewhere (native) the host's cores bound both runs, and the
record says so. It needs the profile's `scaling` settings and two or more API workers; otherwise
the figure is absent, with the reason in the record. The runs themselves are the Locust
runner's (preflight/load/locust.py); this module plans them and reads their result.
"""

from __future__ import annotations

import functools
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from preflight.errors import PreflightError
from preflight.load.cpu_bound import throttling, unbounded
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
    """The step's two runs: the profile settings both use, the API workers of the first run,
    those stopped for the second, those stopped for both (an odd one out), and each worker's
    CPU limit for both runs (None: the target gives none, the host's cores bound them)."""

    overrides: Mapping[str, Any]
    workers: list[str]
    stopped: list[str]
    idle: list[str] = field(default_factory=list)
    cpus: float | None = None


@dataclass(frozen=True)
class StepRun:
    """What one run recorded, and its workers' throttling over it (None: no limits)."""

    data: RunData
    throttling: Mapping[str, Mapping[str, Any]] | None = None


DEFAULT_CPUS_PER_WORKER = 0.25
HOST_BOUND = "no per-worker CPU limits on this target: the host's cores bound both runs"


def plan_scaling(
    info: TargetInfo, profile: str, settings: Mapping[str, Any], overrides: Mapping[str, Any]
) -> ScalingPlan | str:
    """The plan, from the profile's `settings` and the runner's own `overrides`; or why the step
    cannot run."""
    scaling = settings.get("scaling")
    limits = info.drills.cpu_limits
    names = sorted(
        limits.workers if limits else (n for n in info.drills.control if n.startswith("api-"))
    )
    if not isinstance(scaling, Mapping):
        return f"profile {profile} defines no `scaling` step"
    if len(names) < 2:
        return f"the target controls {len(names)} API worker(s); halving needs two or more"
    even = len(names) // 2 * 2
    workers = names[:even]
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
    cpus = float(scaling.get("cpus_per_worker", DEFAULT_CPUS_PER_WORKER)) if limits else None
    return ScalingPlan(closed_loop, workers, workers[even // 2 :], names[even:], cpus)


@contextmanager
def limited(info: TargetInfo, plan: ScalingPlan, log: Callable[[str], None]) -> Iterator[None]:
    """Inside: every worker limited to the plan's CPUs (where it has a limit) and the odd one
    out stopped; after: that one started again and the deployment's own limits back."""
    limits = info.drills.cpu_limits if plan.cpus is not None else None
    try:
        if limits is not None and plan.cpus is not None:
            log(f"load: scaling step limits each API worker: {limits.limit(plan.cpus)}")
        with halved(info, plan.idle):
            yield
    finally:
        if limits is not None:
            limits.restore()


def measured(info: TargetInfo, plan: ScalingPlan, run: Callable[[], RunData]) -> StepRun:
    """One run, with its workers' throttling read before and after where they are limited."""
    limits = info.drills.cpu_limits if plan.cpus is not None else None
    if limits is None:
        return StepRun(run())
    before = limits.cpu_stat()
    data = run()
    return StepRun(data, throttling(before, limits.cpu_stat()))


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
    results: LoadResults, plan: ScalingPlan, full: StepRun, half: StepRun, limits: Thresholds
) -> LoadResults:
    """`results` with the scaling figure from the two runs, or with it absent, saying why."""
    all_n, half_n = len(plan.workers), len(plan.workers) - len(plan.stopped)
    serving = {all_n: plan.workers, half_n: [w for w in plan.workers if w not in plan.stopped]}
    steps = {}
    for n, run in ((all_n, full), (half_n, half)):
        step = throughput(run.data, limits)
        if plan.cpus is not None:
            step["throttling"] = dict(run.throttling or {})
            bound = unbounded(step["throttling"], serving[n], plan.cpus)
            if bound and not step["invalid"]:
                step["invalid"] = f"the run with {n} worker(s) is no evidence: {bound}"
        steps[n] = step
    detail: dict[str, Any] = {
        "workers": {str(n): step for n, step in steps.items()},
        "stopped": plan.stopped,
        "idle": plan.idle,
        "users": plan.overrides["users"],
        "hold_s": plan.overrides["hold_s"],
        "cpus_per_worker": plan.cpus,
    }
    if plan.cpus is None:
        detail["bound"] = HOST_BOUND
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
    """Until each restarted worker is ready (its own readiness where the target gives its
    address, `worker_urls`) and the edge routes to it again: the edge learnt of the stop from
    refused connections and tries the worker again after its fail_timeout of 2 s."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        address = info.drills.worker_urls.get(name)
        if address is None:
            continue
        left = max(0.0, deadline - time.monotonic())
        url = f"{address}/v1/health/ready"
        if not until(functools.partial(_answers_200, url), left, interval=0.2):
            raise PreflightError(f"{name} was not ready within {timeout_s:g} s of its restart")
    time.sleep(EDGE_FAIL_TIMEOUT_S + 0.5)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - the target's own
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False

"""The load runner: Locust headless in its own processes against a target, then figures for the
checklist's load items.

Locust runs loadtests/locustfile.py (one process, or a master and N workers), reads the
credentials from the environment (never the command line), and its master writes a JSON line
per interval (loadtests/recorder.py): users, WebSockets held, and per request type the count,
failures and response-time histogram of that interval. While it runs, this side reads the
lines, samples every Locust process's CPU, and stops the run early when an SLO is clearly
broken. Afterwards the full-scale window (every interval spent at the run's peak user count)
gives the figures and the scale reached; a run whose generator saturated is kept for the record
but is not evidence.

Alongside Locust, the target is sampled: its components' CPU and memory against the limits
the deployment declares and its database and Redis connections (preflight/resources.py), and its
API workers' own metrics for the database pool wait and the per-worker share of requests
(preflight/apistats.py). For PERF-HSCALE a profile's `scaling` step runs two closed-loop runs,
with every API worker and with half of them stopped. The baseline comparison (PERF-BASELINE,
against an earlier record) and the capacity over the production peak (POST-CAPACITY, from the
target file) are derived after the run by preflight.run.derive_load_figures. A figure that
cannot be had is absent with its reason (LoadResults.absent), and its item stays unverified.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import yaml

from preflight.apistats import ApiSample, ApiSampler, api_details, api_figures
from preflight.checklist import Item
from preflight.decide import LoadFigure, LoadResults
from preflight.errors import PreflightError
from preflight.resources import (
    ResourceSample,
    ResourceSampler,
    declared_limits,
    resource_details,
    resource_figures,
)
from preflight.targets.base import TargetInfo
from preflight.targets.procs import Child, free_port

LOADTESTS = Path(__file__).resolve().parent.parent / "loadtests"
PERCENTILES = (0.5, 0.95, 0.99)
SEND_NAMES = ("/v1/channels/{id}/messages [send]", "/v1/channels/{id}/polls")
TEMP_PREFIX = "preflight-load-"
SOURCE_NET_ENV = "PREFLIGHT_SOURCE_NET"  # loadtests/sources.py
LOOPBACK_SOURCE_NET = "127.64.0.0/10"
SCALING_METRIC = "throughput_scaling_ratio_2x_workers"
EDGE_FAIL_TIMEOUT_S = 2.0  # system/nginx/nginx.conf.j2: max_fails=3 fail_timeout=2s


def source_net_for(edge_url: str, configured: str | None) -> str:
    """The network the load users connect from, one address each (loadtests/sources.py): what
    PREFLIGHT_SOURCE_NET says when it is set (empty: the generator's own address), else
    127.64.0.0/10 when the edge is on IPv4 loopback, where every address of 127/8 is this
    machine's, else none: across a real network a generator has only the addresses it has."""
    if configured is not None:
        return configured.strip()
    try:
        address = ipaddress.ip_address(urlsplit(edge_url).hostname or "")
    except ValueError:
        return ""
    return LOOPBACK_SOURCE_NET if address.version == 4 and address.is_loopback else ""


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


@dataclass(frozen=True)
class Thresholds:
    """When a run is stopped early, and when its generator counts as saturated."""

    window_s: float = 10.0
    error_ratio_pct: float = 50.0
    api_latency_p95_ms: float = 10_000.0
    min_requests: int = 20
    saturation_pct: float = 90.0  # of one core per Locust process, and of all cores together

    @classmethod
    def of(cls, profile: Mapping[str, Any], saturation_pct: float) -> Thresholds:
        stop = profile.get("early_stop", {})
        return cls(
            window_s=float(stop.get("window_s", cls.window_s)),
            error_ratio_pct=float(stop.get("error_ratio_pct", cls.error_ratio_pct)),
            api_latency_p95_ms=float(stop.get("api_latency_p95_ms", cls.api_latency_p95_ms)),
            min_requests=int(stop.get("min_requests", cls.min_requests)),
            saturation_pct=saturation_pct,
        )


PROGRESS_EVERY_S = 30.0


def progress_line(lines: Sequence[Mapping[str, Any]], started: float, window_s: float) -> str:
    """What the run is doing now, for the console: users, sockets, throughput, p95 and
    failures over the last `window_s`."""
    last = lines[-1]
    recent = [line for line in lines if float(line["t"]) > float(last["t"]) - window_s]
    every = aggregate(recent, lambda _key: True)
    http = aggregate(recent, is_http)
    span = max(float(last["t"]) - float(recent[0]["t"]), 1e-9) if len(recent) > 1 else 0.0
    rate = f"{every.requests / span:.0f} req/s" if span else "- req/s"
    return (
        f"load: {float(last['t']) - started:.0f} s, {last['users']} users, "
        f"{last['sockets']} sockets, {rate}, p95 {percentile(http.hist, 0.95):g} ms, "
        f"{every.failures} failures in the last {window_s:g} s"
    )


def broken_slo(
    lines: Sequence[Mapping[str, Any]], ramp_s: float, started: float, limits: Thresholds
) -> str | None:
    """After the ramp, over the last window: a clearly broken SLO, as a sentence, or None."""
    if not lines or float(lines[-1]["t"]) - started < ramp_s:
        return None
    since = float(lines[-1]["t"]) - limits.window_s
    recent = [line for line in lines if float(line["t"]) > since]
    every = aggregate(recent, lambda _key: True)
    if every.requests < limits.min_requests:
        return None
    ratio = 100.0 * every.failures / every.requests
    if ratio > limits.error_ratio_pct:
        return (
            f"error ratio {ratio:.1f} % over the last {limits.window_s:g} s after the ramp "
            f"(early-stop threshold {limits.error_ratio_pct:g} %)"
        )
    p95 = percentile(aggregate(recent, is_http).hist, 0.95)
    if p95 > limits.api_latency_p95_ms:
        return (
            f"API p95 {p95:g} ms over the last {limits.window_s:g} s after the ramp "
            f"(early-stop threshold {limits.api_latency_p95_ms:g} ms)"
        )
    return None


@dataclass
class CpuSample:
    t: float
    per_process: dict[str, float]  # percent of one core


def saturation(
    samples: Sequence[CpuSample], window: Window, cores: int, limits: Thresholds
) -> str | None:
    """Why the generator counts as saturated during full scale, or None."""
    if window.lines:
        first, last = float(window.lines[0]["t"]), float(window.lines[-1]["t"])
        samples = [s for s in samples if first - 2.5 <= s.t <= last + 0.5] or list(samples)
    if not samples:
        return None
    names = sorted({name for s in samples for name in s.per_process})
    for name in names:
        values = [s.per_process[name] for s in samples if name in s.per_process]
        mean = sum(values) / len(values)
        if mean > limits.saturation_pct:
            return (
                f"the load generator saturated: Locust process {name} used {mean:.0f} % of a "
                f"core on average at full scale (limit {limits.saturation_pct:g} %)"
            )
    total = sum(sum(s.per_process.values()) for s in samples) / len(samples)
    if total > limits.saturation_pct * cores:
        return (
            f"the load generator saturated: Locust used {total:.0f} % CPU in total at full "
            f"scale, more than {limits.saturation_pct:g} % of the machine's {cores} cores"
        )
    warned = [line for line in window.lines if line.get("cpu_warning")]
    if warned and window.lines and not window.lines[0].get("cpu_warning"):
        return "the load generator saturated: Locust warned of CPU above 90 % at full scale"
    return None


@dataclass(frozen=True)
class RunData:
    """What one Locust run left: its time series, CPU samples, how it ended."""

    profile: str
    settings: Mapping[str, Any]
    lines: Sequence[Mapping[str, Any]]
    cpu: Sequence[CpuSample]
    workers: int
    mode: str
    exit_codes: Mapping[str, int | None]
    stopped_early: str = ""
    log_tail: str = ""
    source_net: str = ""
    # The target seen from outside Locust during the run (preflight/resources.py, apistats.py).
    resources: Sequence[ResourceSample] = ()
    api: Sequence[ApiSample] = ()


def summarise(data: RunData, limits: Thresholds, cores: int | None = None) -> LoadResults:
    """Figures, scale reached, validity and the record's details from one run's data."""
    cores = cores or os.cpu_count() or 1
    lines = [line for line in data.lines if line.get("entries") is not None]
    if not any(line["entries"] for line in lines):
        reason = "Locust recorded no request" + (f": {data.log_tail}" if data.log_tail else "")
        return LoadResults(profile=data.profile, ran=False, reason=reason)
    window = Window.of(lines)
    scale = window.scale()
    everything = aggregate(lines, lambda _key: True)
    full_http = aggregate(window.lines, is_http)
    full_delivery = aggregate(window.lines, lambda key: key == "WS delivery")
    sends = aggregate(window.lines, lambda key: key.startswith("POST ") and key[5:] in SEND_NAMES)
    span = window.duration_s
    figures: dict[str, tuple[float, str]] = {
        "concurrent_users": (float(window.users), "users"),
        "ws_connections_open": (float(window.sockets), "connections"),
        "error_ratio_pct": (
            round(100.0 * everything.failures / max(everything.requests, 1), 3),
            "%",
        ),
    }
    if full_http.requests:
        figures["api_latency_p95_ms"] = (percentile(full_http.hist, 0.95), "ms")
        figures["api_latency_p99_ms"] = (percentile(full_http.hist, 0.99), "ms")
    if full_delivery.requests:
        figures["ws_delivery_p95_ms"] = (percentile(full_delivery.hist, 0.95), "ms")
        figures["ws_delivery_p99_ms"] = (percentile(full_delivery.hist, 0.99), "ms")
    if span > 0:
        ok_sends = sends.requests - sends.failures
        figures["messages_per_s"] = (round(ok_sends / span, 2), "messages/s")
        figures["ws_deliveries_per_s"] = (round(full_delivery.requests / span, 2), "deliveries/s")
        figures["requests_per_s"] = (round(full_http.requests / span, 2), "requests/s")
    invalid = saturation(data.cpu, window, cores, limits)
    reason = f"stopped early: {data.stopped_early}" if data.stopped_early else ""
    extra, absent, seen = target_figures(data, window)
    figures.update(extra)
    return LoadResults(
        profile=data.profile,
        ran=True,
        reason=reason,
        figures={
            name: LoadFigure(name, value, scale, unit) for name, (value, unit) in figures.items()
        },
        valid=invalid is None,
        invalid_reason=invalid or "",
        scale_reached=scale,
        details={**details(data, lines, window, cores), **seen},
        absent=absent,
    )


RESOURCE_METRICS = ("cpu_used_pct_max", "memory_used_pct_max", "max_resource_saturation_pct")
API_METRICS = ("db_pool_wait_p95_ms", "worker_share_max_over_fair")


def target_figures(
    data: RunData, window: Window
) -> tuple[dict[str, tuple[float, str]], dict[str, str], dict[str, Any]]:
    """Figures measured on the target during the full-scale window (its components' resources,
    its API workers' own metrics), why any of them is absent, and the record's view of both."""
    figures: dict[str, tuple[float, str]] = {}
    absent: dict[str, str] = {}
    seen: dict[str, Any] = {}
    if not window.lines:
        return figures, absent, seen
    start, end = window.start_t, window.end_t
    if data.resources:
        limits = declared_limits()
        figures.update(resource_figures(data.resources, start, end, limits))
        seen["resources"] = resource_details(data.resources, start, end, limits)
        missing = seen["resources"]["saturation"]["missing"]
        for metric in RESOURCE_METRICS:
            if metric not in figures:
                absent[metric] = f"not every part was measured on the target: {missing}"
    else:
        for metric in RESOURCE_METRICS:
            absent[metric] = (
                "the target gives no access to its components' processes or databases "
                "(a native target, or postgres_dsn and redis_url in a target file)"
            )
    if data.api:
        figures.update(api_figures(data.api, start, end))
        seen["api_workers"] = api_details(data.api, start, end)
        for metric in API_METRICS:
            if metric not in figures:
                why = seen["api_workers"].get("absent", {}).get(metric)
                absent[metric] = why or "the API workers' metrics did not give it"
    else:
        for metric in API_METRICS:
            absent[metric] = "the target gives no API worker metrics_urls to read it from"
    return figures, absent, seen


def details(
    data: RunData, lines: Sequence[Mapping[str, Any]], window: Window, cores: int
) -> dict[str, Any]:
    start = float(lines[0]["t"]) - float(lines[0].get("elapsed_s", 0)) if lines else 0.0
    series = []
    for before, line in zip([None, *lines], lines, strict=False):
        dt = float(line["t"]) - float(before["t"]) if before else 0.0
        http = aggregate([line], is_http)
        delivery = aggregate([line], lambda key: key == "WS delivery")
        every = aggregate([line], lambda _key: True)
        cpu = [s.per_process for s in data.cpu if abs(s.t - float(line["t"])) <= 1.5]
        series.append(
            {
                "t_s": round(float(line["t"]) - start, 2),
                "users": line["users"],
                "ws_connections": line["sockets"],
                "requests_per_s": round(every.requests / dt, 2) if dt > 0 else None,
                "failures_per_s": round(every.failures / dt, 2) if dt > 0 else None,
                "http_p50_ms": percentile(http.hist, 0.5),
                "http_p95_ms": percentile(http.hist, 0.95),
                "http_p99_ms": percentile(http.hist, 0.99),
                "ws_delivery_p95_ms": percentile(delivery.hist, 0.95),
                "locust_cpu_pct": cpu[-1] if cpu else {},
            }
        )
    cpu_by_process: dict[str, dict[str, float]] = {}
    for name in sorted({n for s in data.cpu for n in s.per_process}):
        values = [s.per_process[name] for s in data.cpu if name in s.per_process]
        cpu_by_process[name] = {
            "mean_pct": round(sum(values) / len(values), 1),
            "max_pct": round(max(values), 1),
        }
    errors = next((line.get("errors") for line in reversed(lines) if line.get("final")), None)
    return {
        "settings": dict(data.settings),
        "requests": {key: stat.to_json() for key, stat in by_type(lines).items()},
        "requests_full_scale": {key: s.to_json() for key, s in by_type(window.lines).items()},
        "errors": errors or {},
        "timeseries": series,
        "generator": {
            "mode": data.mode,
            "workers": data.workers,
            "cores": cores,
            "cpu_by_process": cpu_by_process,
            "exit_codes": dict(data.exit_codes),
            "source_net": data.source_net,
        },
    }


def read_profile(path: Path, name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    profiles = yaml.safe_load(path.read_text())
    if not isinstance(profiles, dict) or name not in profiles:
        raise PreflightError(f"load profile {name} is not defined in {path}")
    return {**profiles[name], **overrides}


@dataclass(frozen=True)
class LocustRunner:
    """`preflight run`'s load runner (RunOptions.load_runner). `overrides` replaces profile
    settings (tests shorten smoke with it); `workers` > 1 runs a master and that many workers."""

    locustfile: Path = LOADTESTS / "locustfile.py"
    profiles_file: Path = LOADTESTS / "profiles.yaml"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    interval_s: float = 2.0
    saturation_pct: float = 90.0
    grace_s: float = 60.0  # beyond ramp + hold before the run is cut off
    log: Callable[[str], None] = field(default=lambda _msg: None)

    def __call__(
        self, info: TargetInfo, profile: str, workers: int, items: Sequence[Item]
    ) -> LoadResults:
        if not items:
            return LoadResults(profile=profile, ran=False, reason="no load items selected")
        settings = read_profile(self.profiles_file, profile, self.overrides)
        limits = Thresholds.of(settings, self.saturation_pct)
        results = summarise(self.collect(info, profile, workers), limits)
        if results.ran and any(item.metric == SCALING_METRIC for item in items):
            results = self.with_scaling(info, profile, workers, settings, results)
        return results

    def with_scaling(
        self,
        info: TargetInfo,
        profile: str,
        workers: int,
        settings: Mapping[str, Any],
        results: LoadResults,
    ) -> LoadResults:
        """PERF-HSCALE: the sustained throughput with every API worker over that with half of
        them. Two closed-loop runs (the profile's `scaling` users with no think time, so they
        take all the throughput the system gives) of the same request mix: one against the
        target as it is, one with half of its API workers stopped through `control`, which are
        started again (and waited for) afterwards. Needs the profile's `scaling` settings and
        control of at least two API workers; otherwise the figure is absent, with the reason in
        the record."""
        scaling = settings.get("scaling")
        names = sorted(n for n in info.control if n.startswith("api-"))
        why = ""
        if not isinstance(scaling, Mapping):
            why = f"profile {profile} defines no `scaling` step"
        elif len(names) < 2:
            why = f"the target controls {len(names)} API worker(s); halving needs two or more"
        if why:
            return skipped_scaling(results, {"skipped": why})
        assert isinstance(scaling, Mapping)
        overrides = {
            **self.overrides,
            "users": int(scaling["users"]),
            "spawn_rate": float(scaling["spawn_rate"]),
            "hold_s": float(scaling["hold_s"]),
            "sockets_per_user": 0,
            "wait_s": {persona: [0, 0] for persona in settings["personas"]},
            # Closed-loop users queue by design: only errors stop these runs early.
            "early_stop": {**settings.get("early_stop", {}), "api_latency_p95_ms": 1e9},
        }
        runner = replace(self, overrides=overrides)
        stopped = names[len(names) // 2 :]
        self.log(f"load: scaling step, {len(names)} API workers, then {len(names) - len(stopped)}")
        full = runner.collect(info, profile, workers)
        try:
            for name in stopped:
                info.control[name].stop()
            half = runner.collect(info, profile, workers)
        finally:
            for name in stopped:
                info.control[name].start()
            wait_serving(info, stopped)
        limits = Thresholds.of(overrides, self.saturation_pct)
        all_n, half_n = len(names), len(names) - len(stopped)
        steps = {all_n: throughput(full, limits), half_n: throughput(half, limits)}
        detail: dict[str, Any] = {
            "workers": {str(n): step for n, step in steps.items()},
            "stopped": stopped,
            "users": overrides["users"],
            "hold_s": overrides["hold_s"],
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

    def collect(self, info: TargetInfo, profile: str, workers: int) -> RunData:
        """Run Locust and return what it recorded (summarise() turns it into results)."""
        settings = read_profile(self.profiles_file, profile, self.overrides)
        limits = Thresholds.of(settings, self.saturation_pct)
        work = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        try:
            return self._run(
                info, profile, workers=max(1, workers), settings=settings, limits=limits, work=work
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(
        self,
        info: TargetInfo,
        profile: str,
        *,
        workers: int,
        settings: Mapping[str, Any],
        limits: Thresholds,
        work: Path,
    ) -> RunData:
        profiles = work / "profiles.yaml"
        profiles.write_text(json.dumps({profile: settings}))  # JSON is YAML
        series = work / "timeseries.jsonl"
        env, source_net = locust_env(info)
        locust = [sys.executable, "-m", "locust", "-f", str(self.locustfile)]
        master = [
            *locust,
            "--headless",
            "--only-summary",
            "--host",
            info.edge_url,
            "--load-profile",
            profile,
            "--load-profiles",
            str(profiles),
            "--timeseries",
            str(series),
            "--timeseries-interval",
            str(self.interval_s),
            "--stop-timeout",
            "5",
        ]
        children: list[Child] = []
        mode, port = "local", 0
        if workers > 1:
            mode = "master/worker"
            port = free_port()
            master += [
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(port),
                "--expect-workers",
                str(workers),
                "--expect-workers-max-wait",
                "60",
            ]
        children.append(Child("locust-master", master, work / "master.log", signal.SIGTERM, 20.0))
        for i in range(workers if workers > 1 else 0):
            argv = [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
            children.append(
                Child(f"locust-worker-{i + 1}", argv, work / f"worker-{i + 1}.log", signal.SIGTERM)
            )
        users, rate = int(settings["users"]), float(settings["spawn_rate"])
        ramp_s, hold_s = users / rate, float(settings["hold_s"])
        deadline = time.monotonic() + ramp_s + hold_s + self.grace_s + 30.0 * (workers > 1)
        self.log(
            f"load: Locust {mode} with {workers} process(es) for generating load, "
            f"{users} users, ramp {ramp_s:.0f} s, hold {hold_s:.0f} s"
        )
        lines: list[dict[str, Any]] = []
        cpu: list[CpuSample] = []
        stopped = ""
        started = reported = time.time()
        offset = 0
        watch = TargetWatch.of(info)
        try:
            for child in children:
                child.start(env=env, cwd=work)
            handles = {c.name: psutil.Process(c.pid) for c in children}
            for handle in handles.values():
                handle.cpu_percent(None)
            while children[0].running():
                time.sleep(self.interval_s / 2)
                cpu.append(CpuSample(time.time(), _cpu(handles)))
                watch.sample()
                if lines and time.time() - reported >= PROGRESS_EVERY_S:
                    reported = time.time()
                    self.log(progress_line(lines, started, limits.window_s))
                offset = _read_lines(series, offset, lines)
                reason = broken_slo(lines, ramp_s, started, limits) if not stopped else None
                if reason:
                    stopped = f"{reason}, at {time.time() - started:.0f} s"
                    self.log(f"load: stopping early: {stopped}")
                    children[0].signal(signal.SIGTERM)
                if time.monotonic() > deadline and not stopped:
                    stopped = f"the run did not end within {self.grace_s:g} s of its schedule"
                    children[0].signal(signal.SIGTERM)
        finally:
            codes = {c.name: c.stop() for c in children}
            watch.close()
        _read_lines(series, offset, lines)
        return RunData(
            profile=profile,
            settings=settings,
            lines=lines,
            cpu=cpu,
            workers=workers,
            mode=mode,
            exit_codes=codes,
            stopped_early=stopped,
            log_tail=children[0].log_tail(15).strip() if not lines else "",
            source_net=source_net,
            resources=watch.resources,
            api=watch.api,
        )


def locust_env(info: TargetInfo) -> tuple[dict[str, str], str]:
    """Locust's environment: credentials by variable, never on its command line (a process list
    shows arguments to every local user), none of this process's other PREFLIGHT_ settings, and
    the network its users connect from; and that network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLIGHT_")}
    env["PREFLIGHT_ADMIN_KEY"] = info.admin_key
    if info.ca_file is not None:
        env["PREFLIGHT_CA_FILE"] = str(info.ca_file)
    source_net = source_net_for(info.edge_url, os.environ.get(SOURCE_NET_ENV))
    if source_net:
        env[SOURCE_NET_ENV] = source_net
    return env, source_net


@dataclass
class TargetWatch:
    """Samples the target alongside Locust: its components' resources, where the target gives
    their processes or databases, and its API workers' metrics, where it gives their URLs."""

    resource_sampler: ResourceSampler | None
    api_sampler: ApiSampler | None
    resources: list[ResourceSample] = field(default_factory=list)
    api: list[ApiSample] = field(default_factory=list)

    @classmethod
    def of(cls, info: TargetInfo) -> TargetWatch:
        reachable = info.processes is not None or bool(info.postgres_dsn or info.redis_url)
        return cls(
            ResourceSampler(info) if reachable else None,
            ApiSampler(info.metrics_urls) if info.metrics_urls else None,
        )

    def sample(self) -> None:
        if self.resource_sampler is not None:
            self.resources.append(self.resource_sampler.sample())
        if self.api_sampler is not None:
            self.api.append(self.api_sampler.sample())

    def close(self) -> None:
        if self.resource_sampler is not None:
            self.resource_sampler.close()


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
    the native target's i-th metrics URL is api-i's) and the edge routes to it again (the
    native target's rejoin watcher reloads the edge once the worker can serve; an edge that
    only learns from failures has a fail_timeout of 2 s)."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        index = int(name.removeprefix("api-"))
        if info.kind != "native" or index >= len(info.metrics_urls):
            continue
        url = info.metrics_urls[index].removesuffix("/metrics") + "/v1/health/ready"
        while not _answers_200(url):
            if time.monotonic() > deadline:
                raise PreflightError(f"{name} was not ready within {timeout_s:g} s of its restart")
            time.sleep(0.2)
    time.sleep(EDGE_FAIL_TIMEOUT_S + 0.5)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - the target's own
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _cpu(handles: Mapping[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, handle in handles.items():
        try:
            out[name] = handle.cpu_percent(None)
        except psutil.Error:  # exited between samples
            continue
    return out


def _read_lines(path: Path, offset: int, into: list[dict[str, Any]]) -> int:
    """Append the complete JSON lines written since `offset`; return the new offset."""
    if not path.exists():
        return offset
    with path.open("rb") as file:
        file.seek(offset)
        chunk = file.read()
    end = chunk.rfind(b"\n") + 1
    for raw in chunk[:end].splitlines():
        if raw.strip():
            into.append(json.loads(raw))
    return offset + end


locust_runner = LocustRunner()

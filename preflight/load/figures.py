"""From what one Locust run left (RunData) to LoadResults: the figures of the full-scale window,
the scale reached, whether the run is evidence, the target's own figures sampled alongside
(its components' headroom, its API workers' metrics), and the record's view of the run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from preflight.load.apistats import ApiSample, api_details, api_figures
from preflight.load.guards import CpuSample, Thresholds, saturated_before_stop, saturation
from preflight.load.headroom import (
    ResourceSample,
    declared_limits,
    resource_details,
    resource_figures,
)
from preflight.load.results import LoadFigure, LoadResults
from preflight.load.series import Window, aggregate, by_type, is_http, percentile

SEND_NAMES = ("/v1/channels/{id}/messages [send]", "/v1/channels/{id}/polls")


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
    stopped_at: float = 0.0  # time.time() of the early stop, if any
    log_tail: str = ""
    source_net: str = ""
    # The target seen from outside Locust during the run (headroom.py, apistats.py).
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
    if data.stopped_early and data.stopped_at:
        # A generator short of CPU delays its own requests and reads the delay as the target's:
        # an early stop it caused says nothing about the target.
        behind = saturated_before_stop(data.cpu, data.stopped_at, cores, limits)
        if behind is not None:
            invalid = (
                f"{behind}, so the early stop ({data.stopped_early}) measured the generator, "
                "not the target; give the load generator more processes or cores"
            )
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
    requests = aggregate(lines, is_http).requests
    generator_cpu_s = generator_cpu_seconds(data.cpu)
    target_cpu_s = target_cpu_seconds(data.resources)
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
        # What one HTTP request cost the generator and the target, over the whole run: a
        # generator dearer than the target shares the machine's cores at the target's expense.
        "cpu_per_request": cpu_per_request(generator_cpu_s, target_cpu_s, requests),
    }


def cpu_per_request(
    generator_s: float, target_s: float | None, requests: int
) -> dict[str, float | int | None]:
    def per_request(seconds: float | None) -> float | None:
        return round(1000.0 * seconds / requests, 3) if seconds is not None and requests else None

    return {
        "http_requests": requests,
        "generator_cpu_s": round(generator_s, 2),
        "generator_ms_per_request": per_request(generator_s),
        "target_cpu_s": round(target_s, 2) if target_s is not None else None,
        "target_ms_per_request": per_request(target_s),
    }


def generator_cpu_seconds(samples: Sequence[CpuSample]) -> float:
    """CPU seconds the Locust processes used: each sample is their CPU since the one before."""
    total = 0.0
    for before, sample in itertools.pairwise(samples):
        total += sum(sample.per_process.values()) / 100.0 * (sample.t - before.t)
    return total


def target_cpu_seconds(samples: Sequence[ResourceSample]) -> float | None:
    """CPU seconds the target's components used between the first and the last look (a
    component that restarted counts from its new start); None where nothing was measured."""
    if len(samples) < 2:
        return None
    total = 0.0
    for before, sample in itertools.pairwise(samples):
        for name, seconds in sample.cpu_seconds.items():
            previous = before.cpu_seconds.get(name)
            if previous is None:
                continue
            restarted = before.pids.get(name) != sample.pids.get(name)
            total += seconds if restarted else max(seconds - previous, 0.0)
    return total

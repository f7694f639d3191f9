"""When a load run is stopped early and when it is no evidence: the thresholds, a clearly broken
SLO over the last window after the ramp, and the load generator's own saturation (a generator
short of CPU measures itself, not the target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from preflight.load.series import Window, aggregate, is_http, percentile


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
    why = generator_saturated(samples, cores, limits, "at full scale")
    if why is not None:
        return why
    warned = [line for line in window.lines if line.get("cpu_warning")]
    if warned and window.lines and not window.lines[0].get("cpu_warning"):
        return "the load generator saturated: Locust warned of CPU above 90 % at full scale"
    return None


def generator_saturated(
    samples: Sequence[CpuSample], cores: int, limits: Thresholds, when: str
) -> str | None:
    """Why the Locust processes of `samples` count as saturated (`when`: the span they cover,
    for the sentence), or None: one process above the limit of its core on average, or all of
    them together above the limit of the machine's cores."""
    if not samples:
        return None
    names = sorted({name for s in samples for name in s.per_process})
    for name in names:
        values = [s.per_process[name] for s in samples if name in s.per_process]
        mean = sum(values) / len(values)
        if mean > limits.saturation_pct:
            return (
                f"the load generator saturated: Locust process {name} used {mean:.0f} % of a "
                f"core on average {when} (limit {limits.saturation_pct:g} %)"
            )
    total = sum(sum(s.per_process.values()) for s in samples) / len(samples)
    if total > limits.saturation_pct * cores:
        return (
            f"the load generator saturated: Locust used {total:.0f} % CPU in total {when}, "
            f"more than {limits.saturation_pct:g} % of the machine's {cores} cores"
        )
    return None


def saturated_before_stop(
    samples: Sequence[CpuSample], stopped_at: float, cores: int, limits: Thresholds
) -> str | None:
    """Whether the generator was saturated over the early-stop window that ended at
    `stopped_at` (time.time()): then the figures that stopped the run are the generator's own
    delays, not the target's, and the run is no evidence either way."""
    recent = [s for s in samples if stopped_at - limits.window_s <= s.t <= stopped_at + 0.5]
    when = f"over the {limits.window_s:g} s before the stop"
    return generator_saturated(recent, cores, limits, when)

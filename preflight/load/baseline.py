"""PERF-BASELINE: how much slower or faster this run's API p95 is than the baseline's, the newest
earlier record under --out that can be one (signed by the harness, same profile and target, a
valid run that measured its p95 at the item's scale)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preflight.checklist import Item
from preflight.errors import PreflightError
from preflight.history import earlier_records
from preflight.load.results import LoadFigure, LoadResults, with_absent
from preflight.record import load_record
from preflight.signing import HARNESS, Registry, verify_record
from preflight.targets.base import TargetInfo

BASELINE_METRIC = "api_latency_p95_vs_baseline_pct"
P95_METRIC = "api_latency_p95_ms"


def needed_scale(items: Sequence[Item], metric: str) -> dict[str, int]:
    """The largest scale any item on `metric` asks for, per dimension."""
    scale: dict[str, int] = {}
    for item in items:
        if item.metric == metric:
            for key, value in item.scale.items():
                scale[key] = max(scale.get(key, 0), value)
    return scale


@dataclass(frozen=True)
class Baseline:
    run_id: str
    p95_ms: float


def find_baseline(
    out: Path, profile: str, info: TargetInfo, scale: Mapping[str, int], registry: Registry
) -> tuple[Baseline | None, list[str]]:
    """The newest earlier record under `out` that can be a baseline: signed by the harness (a
    hand-edited record is no baseline), same profile and target, a valid run, and its p95
    measured at `scale`. Run directories are named by run id, which starts with the UTC start
    time, so the newest comes first without reading the others. Also returned: the newer
    records skipped as unreadable or unsigned, each as a sentence, for the reader to see."""
    skipped: list[str] = []
    for path in earlier_records(out):
        try:
            record = load_record(path)
            # The run warns once when keys.yaml pins no harness key; an earlier record signed by
            # the harness counts as it does for the run itself (`verify` is where it is refused).
            signatures = verify_record(
                record, registry, required_roles=(), allow_unpinned_harness=True
            )
        except PreflightError as exc:
            skipped.append(str(exc))
            continue
        if HARNESS in signatures.missing:
            why = next((v.problem for v in signatures.signatures if v.role == HARNESS), "")
            skipped.append(f"{path}: {why or 'the harness did not sign it'}")
            continue
        p95 = baseline_p95(record, profile, info, scale)
        if p95 is not None:
            return Baseline(str(record["run_id"]), p95), skipped
    return None, skipped


def baseline_p95(
    record: Mapping[str, Any], profile: str, info: TargetInfo, scale: Mapping[str, int]
) -> float | None:
    """The record's full-scale API p95, when the record can be a baseline for this run."""
    load, target = record.get("load") or {}, record.get("target") or {}
    if (
        (record.get("selection") or {}).get("profile") != profile
        or load.get("profile") != profile
        or (target.get("name"), target.get("kind")) != (info.name, info.kind)
        or load.get("ran") is not True
        or load.get("valid") is not True
    ):
        return None
    figure = (load.get("figures") or {}).get(P95_METRIC)
    if not isinstance(figure, dict):
        return None
    measured, reached = figure.get("measured"), figure.get("scale_reached")
    if isinstance(measured, bool) or not isinstance(measured, int | float) or measured <= 0:
        return None
    if not isinstance(reached, dict) or any(reached.get(k, 0) < v for k, v in scale.items()):
        return None
    return float(measured)


def with_baseline(
    load: LoadResults,
    scale: Mapping[str, int],
    info: TargetInfo,
    out: Path,
    registry: Registry,
) -> LoadResults:
    """BASELINE_METRIC: how much slower (positive) or faster (negative) this run's p95 is than
    the baseline's, in percent of the baseline."""
    current = load.figures.get(P95_METRIC)
    if current is None:
        why = f"no comparison with a baseline: this run measured no {P95_METRIC} at full scale"
        return with_absent(load, BASELINE_METRIC, why)
    found, skipped = find_baseline(out, load.profile, info, scale, registry)
    if found is None:
        why = _no_baseline(load, current, scale, info=info, out=out, skipped=skipped)
        return with_absent(load, BASELINE_METRIC, why)
    change = round((current.measured - found.p95_ms) / found.p95_ms * 100.0, 1) + 0.0  # no -0.0
    figure = LoadFigure(BASELINE_METRIC, change, current.scale_reached, "%")
    baseline: dict[str, Any] = {
        "baseline_run_id": found.run_id,
        "baseline_p95_ms": found.p95_ms,
        "current_p95_ms": current.measured,
    }
    if skipped:
        baseline["skipped"] = skipped
    return dataclasses.replace(
        load,
        figures={**load.figures, BASELINE_METRIC: figure},
        details={**load.details, "baseline": baseline},
    )


def _no_baseline(
    load: LoadResults,
    current: LoadFigure,
    scale: Mapping[str, int],
    *,
    info: TargetInfo,
    out: Path,
    skipped: Sequence[str],
) -> str:
    wanted = ", ".join(f"{v} {k}" for k, v in scale.items()) or "its scale"
    reason = (
        f"no baseline: no earlier valid {load.profile}-profile run against target {info.name} "
        f"in {out}/ reached {wanted}"
    )
    if skipped:
        reason += f" ({len(skipped)} record(s) skipped; the newest: {skipped[0]})"
    reached = current.scale_reached
    short = [f"{k} {reached.get(k, 0)} of {v}" for k, v in scale.items() if reached.get(k, 0) < v]
    if not load.valid:
        return f"{reason}; this run is not one either: {load.invalid_reason}"
    if short:
        return f"{reason}; this run is not one either: it reached {', '.join(short)}"
    return f"{reason}; this run's p95 of {current.measured:g} ms is the baseline for the next"

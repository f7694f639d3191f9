"""Load figures derived from more than the run itself, once it ran: the p95 against the previous
baseline (PERF-BASELINE, from the earlier records under --out; baseline.py) and the throughput
against the production peak (POST-CAPACITY, from the target file; capacity.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from preflight.checklist import Item
from preflight.load.baseline import BASELINE_METRIC, needed_scale, with_baseline
from preflight.load.capacity import CAPACITY_METRIC, with_capacity
from preflight.load.results import LoadResults
from preflight.signing import Registry
from preflight.targets.base import TargetInfo


def derive_load_figures(
    load: LoadResults, items: Sequence[Item], info: TargetInfo, out: Path, registry: Registry
) -> LoadResults:
    """Add the derived figures the selected load items need, or the reason each is absent."""
    if not load.ran:
        return load
    metrics = {item.metric for item in items}
    if BASELINE_METRIC in metrics:
        scale = needed_scale(items, BASELINE_METRIC)
        load = with_baseline(load, scale, info, out, registry)
    if CAPACITY_METRIC in metrics:
        load = with_capacity(load, info)
    return load

"""POST-CAPACITY: the run's full-scale throughput over the production peak the target file
gives. The run offered a load rather than searching for the most the system takes, so the
ratio is a lower bound of capacity."""

from __future__ import annotations

import dataclasses

from preflight.load.results import LoadFigure, LoadResults, with_absent
from preflight.targets.base import TargetInfo

CAPACITY_METRIC = "capacity_over_peak_ratio"
THROUGHPUT_METRIC = "requests_per_s"


def with_capacity(load: LoadResults, info: TargetInfo) -> LoadResults:
    """CAPACITY_METRIC: the run's full-scale throughput over the production peak. The run
    offered a load rather than searching for the most the system takes, so its throughput is
    a lower bound of capacity, and so is the ratio."""
    peak = info.deployment.peak_requests_per_s
    if peak is None:
        hint = "`peak_requests_per_s` (API requests/s at the busiest minute of real traffic)"
        if info.kind == "external":
            why = f"no production peak: add {hint} to the target file of {info.name}"
        else:
            why = (
                f"no production peak: the {info.kind} target serves no real traffic; run "
                f"against a target file that gives {hint}"
            )
        return with_absent(load, CAPACITY_METRIC, why)
    throughput = load.figures.get(THROUGHPUT_METRIC)
    if throughput is None:
        why = (
            f"no capacity figure: this run measured no {THROUGHPUT_METRIC} at full scale to set "
            f"against the production peak of {peak:g} requests/s"
        )
        return with_absent(load, CAPACITY_METRIC, why)
    ratio = round(throughput.measured / peak, 2)
    figure = LoadFigure(CAPACITY_METRIC, ratio, throughput.scale_reached, "x")
    users = throughput.scale_reached.get("users", 0)
    capacity = {
        "requests_per_s": throughput.measured,
        "peak_requests_per_s": peak,
        "ratio": ratio,
        "note": (
            f"a lower bound: the run offered {users} users and served {throughput.measured:g} "
            "requests/s at full scale, with its latency and error SLOs measured alongside (the "
            "other load items); the system may take more. The peak is the target file's "
            "peak_requests_per_s"
        ),
    }
    return dataclasses.replace(
        load,
        figures={**load.figures, CAPACITY_METRIC: figure},
        details={**load.details, "capacity": capacity},
    )

"""Whether the API workers' own CPU limits bounded a scaling run: each worker's throttling over
the run (its cgroup's cpu.stat read before and after, base.CpuLimits), and the reason a run is
no evidence where a worker that served it was not throttled in most of its periods (then it used
less CPU than its limit allows: something it shares bounded it, the host's cores, the edge or a
store).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from preflight.targets.base import CpuStat

# A worker bounded by its limit uses up its quota in nearly every period of a closed-loop run
# (ramp and stop included); one throttled in fewer than half was waiting for something else.
MIN_THROTTLED_SHARE = 0.5


def throttling(
    before: Mapping[str, CpuStat], after: Mapping[str, CpuStat]
) -> dict[str, dict[str, Any]]:
    """Each worker read both times: its periods, throttled periods and throttled time over the
    run, and the throttled share of its periods (a restarted worker's counters start again: its
    figures are then since its start)."""
    found = {}
    for name in sorted(set(before) & set(after)):
        b, a = before[name], after[name]
        restarted = a.periods < b.periods
        base = CpuStat(0, 0, 0) if restarted else b
        periods = a.periods - base.periods
        throttled = a.throttled - base.throttled
        found[name] = {
            "periods": periods,
            "throttled": throttled,
            "throttled_usec": a.throttled_usec - base.throttled_usec,
            "throttled_share": round(throttled / periods, 3) if periods else 0.0,
        }
    return found


def unbounded(
    seen: Mapping[str, Mapping[str, Any]], serving: Sequence[str], cpus: float
) -> str | None:
    """Why the run is no evidence of the workers' limit bounding it (None: every worker that
    served it was throttled in at least MIN_THROTTLED_SHARE of its periods)."""
    missing = [name for name in serving if name not in seen]
    if missing:
        return f"the throttling of {', '.join(missing)} could not be read before and after it"
    loose = [name for name in serving if seen[name]["throttled_share"] < MIN_THROTTLED_SHARE]
    if loose:
        shares = ", ".join(f"{name} {seen[name]['throttled_share']:.0%}" for name in loose)
        return (
            f"the workers' limit of {cpus:g} CPU each did not bound it: throttled in {shares} "
            f"of their periods (at least {MIN_THROTTLED_SHARE:.0%} shows the limit bounded "
            "them), so something they share (the host's cores, the edge, a store) bounded the run"
        )
    return None

"""The nodes the API runs on: cores, memory, data volumes, how many replicas serve it on how many
nodes, and the limits each running component has.

Host resources are observable only where the target runs on this machine (the native target:
its PostgreSQL, Redis, uploads and workers live in this process's temp dir). For a deployment
elsewhere they skip with the reason; node metrics or an attestation decide them there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget
from preflight.targets.base import Placement

MIN_CORES = 4
# A node sold as "8 GB" reports a little less as MemTotal (firmware and kernel reservations).
MIN_MEMORY_BYTES = int(7.5 * 2**30)
MIN_DISK_BYTES = 100 * 10**9
MIN_REPLICAS = 3


def _this_machine(target: ProbeTarget) -> None:
    """Skips unless the target runs on this machine (it offers `processes`: the pid of each
    component here)."""
    if "processes" not in target.capabilities:
        pytest.skip(
            f"target {target.name} does not run on this machine (it offers no `processes`); its "
            "nodes' resources are not observable from here (decide it from node metrics)"
        )


def data_dir() -> Path:
    """Where the native target keeps PostgreSQL, Redis and uploads (a temporary folder)."""
    return Path(tempfile.gettempdir())


def rotational(path: Path) -> tuple[str, bool | None]:
    """The block device holding `path` and whether the kernel reports it rotational (None when
    the file system has no block device, e.g. tmpfs or overlay)."""
    dev = os.stat(path).st_dev
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sys_dev.exists():
        return f"device {os.major(dev)}:{os.minor(dev)}", None
    device = sys_dev.resolve()
    flag = device / "queue" / "rotational"
    if not flag.exists():  # a partition: the flag is on its disk
        flag = device.parent / "queue" / "rotational"
    if not flag.exists():
        return device.name, None
    return device.name, flag.read_text().strip() == "1"


def mem_total_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemTotal line")


@pytest.mark.checklist("INF-RES-CPU")
def test_nodes_have_at_least_4_cores(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Too few cores make the API and database contend and latency climbs under load."""
    _this_machine(target)
    cores = len(os.sched_getaffinity(0))
    evidence.figure("CPU cores available", cores)
    assert cores >= MIN_CORES, (
        f"the node running target {target.name} must offer at least {MIN_CORES} CPU cores "
        f"(got {cores})"
    )


@pytest.mark.checklist("INF-RES-MEM")
def test_nodes_have_at_least_8_gb_of_memory(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Memory pressure pushes PostgreSQL and Redis into swap or the OOM killer."""
    _this_machine(target)
    total = mem_total_bytes()
    evidence.figure("MemTotal", round(total / 2**30, 2), "GiB")
    assert total >= MIN_MEMORY_BYTES, (
        f"the node running target {target.name} must offer 8 GB of memory "
        f"(MemTotal {total / 2**30:.1f} GiB)"
    )


@pytest.mark.checklist("INF-RES-DISK")
def test_data_volume_is_100_gb_of_ssd(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """A full or slow data disk stops writes and makes the database the bottleneck."""
    _this_machine(target)
    path = data_dir()
    usage = shutil.disk_usage(path)
    device, spinning = rotational(path)
    evidence.figure("data volume size", round(usage.total / 10**9, 1), "GB")
    evidence.figure("data volume free", round(usage.free / 10**9, 1), "GB")
    evidence.note(f"{path} is on {device}; kernel rotational flag: {spinning}")
    assert usage.total >= MIN_DISK_BYTES, (
        f"the data volume of {path} must hold at least 100 GB (got {usage.total / 10**9:.0f} GB)"
    )
    assert spinning is False, (
        f"the data volume of {path} must be SSD-class ({device} is reported "
        f"{'rotational' if spinning else 'without a rotational flag'} by the kernel)"
    )


def placement(target: ProbeTarget, evidence: EvidenceLog) -> dict[str, Placement]:
    """Each running component -> where it runs and its limits, as the target reads them now
    (skips where the target does not know)."""
    target.requires("placement")
    read = target.info.deployment.placement
    assert read is not None
    found = dict(read())
    for name, where in sorted(found.items()):
        evidence.note(
            f"{name} ({where.service}): node {where.node}, {where.scope}, cpus {where.cpus}, "
            f"memory {where.memory_bytes} bytes ({where.how})"
        )
    return found


def by(values: Mapping[str, str]) -> dict[str, list[str]]:
    """value -> the sorted keys that have it."""
    grouped: dict[str, list[str]] = {}
    for key, value in sorted(values.items()):
        grouped.setdefault(value, []).append(key)
    return grouped


@pytest.mark.checklist("INF-HA-NODES")
def test_api_runs_as_three_replicas_on_distinct_nodes(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A single instance, or replicas on one host, turn a crash or a node loss into an outage."""
    seen = target.metrics.runtime(evidence)
    evidence.note(f"workers answering through the edge: {sorted(seen)}")
    replicas = {n: p.node for n, p in placement(target, evidence).items() if p.service == "api"}
    nodes = by(replicas)
    evidence.figure("API replicas", len(replicas))
    evidence.figure("distinct nodes under them", len(nodes))
    assert len(nodes) >= MIN_REPLICAS, (
        f"the API of target {target.name} must run as at least {MIN_REPLICAS} replicas on "
        f"distinct nodes (its {len(replicas)} replicas run on {len(nodes)}: "
        + "; ".join(f"{node}: {', '.join(names)}" for node, names in nodes.items())
        + ")"
    )
    assert len(seen) >= MIN_REPLICAS, (
        f"the API of target {target.name} must answer through the edge from at least "
        f"{MIN_REPLICAS} replicas (reached {len(seen)}: {sorted(seen)})"
    )


@pytest.mark.checklist("PERF-RESOURCE-LIMITS")
def test_every_running_component_has_its_own_cpu_and_memory_limits(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """One runaway process can starve everything else on the node."""
    # Each component needs CPU and memory limits the kernel enforces on it alone: a limit on a
    # scope several components share bounds them together, not each.
    found = placement(target, evidence)
    shared = {s: n for s, n in by({n: p.scope for n, p in found.items()}).items() if len(n) > 1}
    unlimited = [
        f"{name} ({where.scope}) has no {' and no '.join(missing)} limit"
        for name, where in sorted(found.items())
        if (
            missing := [
                k for k, v in (("CPU", where.cpus), ("memory", where.memory_bytes)) if v is None
            ]
        )
    ]
    problems = unlimited + [
        f"{', '.join(names)} share the limits of {scope}" for scope, names in shared.items()
    ]
    assert not problems, (
        f"every component of target {target.name} must run with CPU and memory limits of its "
        "own: " + "; ".join(problems)
    )

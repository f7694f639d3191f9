"""Where a process of this host runs and the CPU and memory limits the kernel enforces on it:
its cgroup (/proc/<pid>/cgroup) and that cgroup's cpu.max / memory.max (cgroup v2) or
cpu.cfs_quota_us / memory.limit_in_bytes (v1), as base.Placement."""

from __future__ import annotations

import socket
from pathlib import Path

from preflight.targets.base import Placement

CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 reports "no limit" as the largest page-aligned signed 64-bit value.
V1_UNLIMITED = 1 << 62


def cgroup_of(pid: int | str) -> dict[str, str]:
    """Controller -> the process's cgroup path ("" keys the unified v2 hierarchy)."""
    found: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            found[controller.removeprefix("name=")] = path
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_limit(groups: dict[str, str]) -> float | None:
    """The CPUs the process's cgroup may use (None: no quota)."""
    if "cpu" in groups:
        base = CGROUP_ROOT / "cpu" / groups["cpu"].lstrip("/")
        quota, period = _read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us")
        if quota and period and int(quota) > 0:
            return int(quota) / int(period)
        return None
    text = _read(CGROUP_ROOT / groups.get("", "/").lstrip("/") / "cpu.max")
    if not text or text.startswith("max"):
        return None
    quota, period = text.split()
    return int(quota) / int(period)


def memory_limit(groups: dict[str, str]) -> int | None:
    """The bytes the process's cgroup may hold (None: no limit)."""
    if "memory" in groups:
        text = _read(
            CGROUP_ROOT / "memory" / groups["memory"].lstrip("/") / "memory.limit_in_bytes"
        )
        return int(text) if text and int(text) < V1_UNLIMITED else None
    text = _read(CGROUP_ROOT / groups.get("", "/").lstrip("/") / "memory.max")
    return int(text) if text and text != "max" else None


def process_placement(pid: int, service: str) -> Placement:
    """A process of this host: its node is this machine, its scope its cgroup (the memory
    controller's where v1 mounts one, else the unified hierarchy's)."""
    groups = cgroup_of(pid)
    scope = groups.get("memory") or groups.get("", "/")
    return Placement(
        service=service,
        node=socket.gethostname(),
        scope=f"cgroup {scope}",
        cpus=cpu_limit(groups),
        memory_bytes=memory_limit(groups),
        how=f"/proc/{pid}/cgroup and its cgroup's limit files under {CGROUP_ROOT}",
    )

"""The load run's CPU limits on the containers target (base.CpuLimits): each API container's
CPU limit changed live with `docker update --cpus` and put back to the compose file's, and each
container's CPU throttling read from its cgroup's cpu.stat inside it (`docker exec`), which is
the container's own cgroup on either cgroup version.

Why the engine's CLI: the docker SDK's `update` has no NanoCpus, and the engine refuses a CPU
quota on a container whose limit was set as NanoCpus (the compose file's `cpus`)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from preflight.errors import TargetUnavailable
from preflight.targets.base import CpuStat

# cgroup v2 mounts the container's own cgroup at /sys/fs/cgroup, v1 its cpu controller under it.
CPU_STAT_FILES = ("/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/cpu/cpu.stat")
TIMEOUT_S = 30.0


def parse_cpu_stat(text: str) -> CpuStat:
    """cpu.stat's counters: cgroup v2 gives throttled_usec, v1 throttled_time in nanoseconds."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            fields[key] = int(value)
    if "nr_periods" not in fields or "nr_throttled" not in fields:
        raise ValueError(f"no CPU quota counters in cpu.stat: {text.strip()[:200]!r}")
    usec = fields.get("throttled_usec", fields.get("throttled_time", 0) // 1000)
    return CpuStat(fields["nr_periods"], fields["nr_throttled"], usec)


def cpus_argument(nano_cpus: int) -> str:
    return f"{nano_cpus / 1e9:g}"


@dataclass(frozen=True)
class ContainerCpuLimits:
    """The API containers' limits. `containers`: control name -> container name (a rollout
    replaces a container under the same name); `own`: control name -> the compose file's limit
    in nano-CPUs (None: the file sets none, and the host's `host_cpus` stands for no limit,
    since the engine cannot lift a NanoCpus limit once set)."""

    containers: Mapping[str, str]
    own: Mapping[str, int | None]
    host_cpus: int

    @property
    def workers(self) -> tuple[str, ...]:
        return tuple(self.containers)

    def limit(self, cpus: float) -> str:
        nano = int(cpus * 1e9)
        for name in self.containers.values():
            _docker("update", "--cpus", cpus_argument(nano), name)
        return f"docker update --cpus {cpus_argument(nano)} on {', '.join(self.containers)}"

    def restore(self) -> None:
        for worker, name in self.containers.items():
            nano = self.own.get(worker) or self.host_cpus * 1_000_000_000
            _docker("update", "--cpus", cpus_argument(nano), name)

    def cpu_stat(self) -> dict[str, CpuStat]:
        found = {}
        read = " || ".join(f"cat {path} 2>/dev/null" for path in CPU_STAT_FILES)
        for worker, name in self.containers.items():
            done = _run("exec", name, "sh", "-c", read)
            if done.returncode == 0:  # a stopped container answers no exec
                found[worker] = parse_cpu_stat(done.stdout)
        return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _docker(*argv: str) -> None:
    done = _run(*argv)
    if done.returncode != 0:
        raise TargetUnavailable(
            f"containers target: `docker {' '.join(argv)}` exited {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[-400:]}"
        )

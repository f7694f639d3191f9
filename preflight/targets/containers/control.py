"""The drills' hands on the containers target: stop, start and kill each container, its main
process, and how often the engine restarted it.

`stop()` is a deliberate stop (`docker stop`: SIGTERM, then SIGKILL after the service's
stop_grace_period); the engine's `unless-stopped` policy leaves it down until `start()`, which
returns once the container runs (ready or not, as a native start).
`kill()` is a crash: SIGKILL to the container's process from this host, as the kernel's OOM
killer would, not through the engine (which would count it as a deliberate stop), so the
container's restart policy decides what happens next, as it would in production."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from preflight.errors import TargetUnavailable
from preflight.targets.base import Placement

START_TIMEOUT_S = 60.0


@dataclass
class ContainerControl:
    """One container of the run (base.ComponentControl)."""

    container: Any  # the docker SDK's Container
    stop_grace_s: float = 10.0

    def stop(self) -> int | None:
        self.container.stop(timeout=int(self.stop_grace_s))
        self.container.reload()
        return int(self.container.attrs["State"]["ExitCode"])

    def start(self) -> None:
        """Start the container unless it runs; returns once its process runs, as a native
        start does. Ready is another matter: a worker whose databases are down runs without
        being ready, and the drills wait for readiness where they need it."""
        self.container.reload()
        if self.container.status != "running":
            self.container.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._running():
            if time.monotonic() > deadline:
                raise TargetUnavailable(
                    f"container {self.container.name} does not run {START_TIMEOUT_S:.0f} s "
                    "after its start"
                )
            time.sleep(0.2)

    def kill(self) -> None:
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def pid(self) -> int | None:
        """The container's main process as this host sees it (None while it does not run)."""
        with contextlib.suppress(Exception):
            self.container.reload()
            pid = int(self.container.attrs["State"]["Pid"])
            return pid or None
        return None

    def restarts(self) -> int:
        with contextlib.suppress(Exception):
            self.container.reload()
            return int(self.container.attrs.get("RestartCount", 0))
        return 0

    def placement(self, service: str, node: str) -> Placement:
        """Where the container runs (`node`: its engine) and the limits the engine set on it
        (HostConfig: NanoCpus, or CpuQuota over CpuPeriod; Memory; 0 means none)."""
        self.container.reload()
        host = self.container.attrs.get("HostConfig") or {}
        nano, quota = int(host.get("NanoCpus") or 0), int(host.get("CpuQuota") or 0)
        cpus = nano / 1e9 if nano else quota / int(host.get("CpuPeriod") or 100_000) or None
        return Placement(
            service=service,
            node=node,
            scope=f"container {self.container.name}",
            cpus=cpus,
            memory_bytes=int(host.get("Memory") or 0) or None,
            how=f"docker inspect {self.container.name}: HostConfig NanoCpus/CpuQuota and Memory",
        )

    def _running(self) -> bool:
        self.container.reload()
        return bool((self.container.attrs.get("State") or {}).get("Running"))

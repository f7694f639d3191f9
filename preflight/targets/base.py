"""What every target exposes to probes, drills and load: where the system is, how to trust it,
how to administer it, and (where available) control over each component."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from preflight.errors import TargetUnavailable

TargetKind = Literal["native", "containers", "external"]
ControlAction = Literal["stop", "start", "kill"]
CONTROL_ACTIONS: tuple[ControlAction, ...] = ("stop", "start", "kill")


class ComponentControl(Protocol):
    """Break and restore one component (a drill's hands)."""

    def stop(self) -> None: ...
    def start(self) -> None: ...
    def kill(self) -> None: ...


@dataclass(frozen=True)
class ShellControl:
    """Control by commands from a target file (an external deployment)."""

    component: str
    commands: Mapping[ControlAction, str]
    timeout: float = 120.0

    def _run(self, action: ControlAction) -> None:
        command = self.commands.get(action)
        if command is None:
            raise TargetUnavailable(
                f"{self.component}: the target file gives no `{action}` command under "
                f"control.{self.component}; add one to let drills {action} it"
            )
        result = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=self.timeout, check=False
        )
        if result.returncode != 0:
            raise TargetUnavailable(
                f"{self.component}: `{command}` exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("start")

    def kill(self) -> None:
        self._run("kill")


@dataclass(frozen=True)
class TargetInfo:
    """The addresses and credentials of a running system under test."""

    name: str
    kind: TargetKind
    edge_url: str
    admin_key: str = field(repr=False)
    ca_file: Path | None = None
    http_url: str | None = None
    postgres_dsn: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    control: Mapping[str, ComponentControl] = field(default_factory=dict, repr=False)
    # Internal /metrics URLs of the API workers (never the edge), and log files of the system
    # (JSON lines of the API, the edge's access log, ...): optional, probes skip without them.
    metrics_urls: tuple[str, ...] = ()
    log_files: tuple[Path, ...] = ()
    # The API's JWT signing secret, where the deployment shares it with its verifier: probes sign
    # tokens that are genuine but for the claims (expired, not yet valid, wrong audience or
    # issuer) to show those claims are checked. Optional; those cases skip without it.
    jwt_secret: str | None = field(default=None, repr=False)
    # Prometheus and Alertmanager watching the system (their HTTP APIs), for the live monitoring
    # probes. Optional; those probes skip without them.
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    # Grafana's HTTP API (basic-auth credentials, if any, in the URL), for MON-GRAFANA.
    grafana_url: str | None = field(default=None, repr=False)


class Target(Protocol):
    """A system under test that can be entered and left (`with target as info:`)."""

    def __enter__(self) -> TargetInfo: ...
    def __exit__(self, *exc: object) -> None: ...

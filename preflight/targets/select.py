"""Which target to run: `auto`, `native`, `containers` or a target file chosen (choose_target),
and that target built from neutral options (select_target), so that no caller needs to know the
concrete classes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from preflight.errors import TargetUnavailable
from preflight.targets.base import Target
from preflight.targets.containers import ContainersTarget, docker_available
from preflight.targets.external import ExternalTarget
from preflight.targets.native import NativeOptions, NativeTarget


@dataclass(frozen=True)
class TargetOptions:
    """What a caller may ask of any target; each applies where the target can honour it."""

    workers: int = 2  # API workers
    edge_port: int | None = None  # the edge's HTTPS port (native); None: a free one
    http_port: int | None = None  # the edge's plain-HTTP port (native); None: a free one
    # Prometheus, Alertmanager and the exporters next to the system (native).
    observability: bool = False
    # The backup schedule: a first backup before the target counts as started (native).
    backups: bool = False
    log: Callable[[str], None] = field(default=lambda _msg: None)  # progress, one line each

    def native(self) -> NativeOptions:
        return NativeOptions(
            workers=self.workers,
            edge_port=self.edge_port,
            http_port=self.http_port,
            observability=self.observability,
            backups=self.backups,
            log=self.log,
        )


@dataclass(frozen=True)
class Selection:
    kind: str  # native | containers | external
    reason: str
    path: Path | None = None


def choose_target(
    spec: str, docker_probe: Callable[[], str | None] = docker_available
) -> Selection:
    """`auto` is the containers target where a Docker engine answers (the deployment
    system/deploy ships, built and run on it), else native (the bundled system as processes of
    this machine). Anything that is not a kind is a target file."""
    if spec == "auto":
        why_not = docker_probe()
        if why_not is None:
            return Selection(
                "containers",
                "a Docker engine answers, so the deployment system/deploy ships runs on it; "
                "`--target native` runs the bundled system as processes of this machine",
            )
        return Selection(
            "native",
            f"{why_not}, so the bundled system runs as processes of this machine; start Docker "
            "(scripts/setup.sh does, as root) to verify the deployment system/deploy ships",
        )
    if spec == "native":
        return Selection("native", "asked for")
    if spec == "containers":
        why_not = docker_probe()
        if why_not is not None:
            raise TargetUnavailable(
                f"--target containers: {why_not}; start Docker (or set DOCKER_HOST), "
                "or use --target native"
            )
        return Selection("containers", "asked for")
    path = Path(spec)
    if not path.exists():
        raise TargetUnavailable(
            f"--target {spec!r} is neither auto, native, containers nor an existing target file"
        )
    return Selection("external", "target file", path)


def select_target(spec: str, options: TargetOptions | None = None) -> tuple[Selection, Target]:
    """The target `spec` names, not yet entered; `options` apply where they can."""
    opts = options or TargetOptions()
    selection = choose_target(spec)
    if selection.kind == "containers":
        return selection, ContainersTarget(log=opts.log)
    if selection.kind == "external":
        assert selection.path is not None
        return selection, ExternalTarget(selection.path)
    return selection, NativeTarget(opts.native())

"""How a system under test is reached: native processes, testcontainers, or a target file."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from preflight.errors import TargetUnavailable
from preflight.targets.base import Target, TargetInfo
from preflight.targets.containers import ContainersTarget, docker_available
from preflight.targets.external import load_target_file
from preflight.targets.native import NativeOptions, NativeTarget

__all__ = ["ExternalTarget", "Selection", "Target", "TargetInfo", "choose_target", "select_target"]


@dataclass(frozen=True)
class Selection:
    kind: str  # native | containers | external
    reason: str
    path: Path | None = None


def choose_target(
    spec: str, docker_probe: Callable[[], str | None] = docker_available
) -> Selection:
    """`auto` takes containers where a Docker engine answers, else native; anything that is not
    a kind is a target file."""
    if spec == "auto":
        why_not = docker_probe()
        if why_not is None:
            return Selection("containers", "a Docker engine answers")
        return Selection("native", f"{why_not}; using the native target")
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


class ExternalTarget:
    """A deployment that already runs; entering checks that its edge answers."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> TargetInfo:
        info = load_target_file(self.path)
        context = ssl.create_default_context(cafile=str(info.ca_file) if info.ca_file else None)
        url = f"{info.edge_url}/v1/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=10, context=context) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            raise TargetUnavailable(
                f"target {info.name}: the API behind the edge is not ready ({url} answered "
                f"{exc.code}); check the API workers and their database and Redis"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            hint = (
                "set ca_file in the target file to the CA that signed the edge certificate"
                if isinstance(reason, ssl.SSLCertVerificationError)
                else "check that the edge (NGINX) runs and edge_url is right"
            )
            raise TargetUnavailable(
                f"target {info.name}: the edge does not answer at {url} ({reason}); {hint}"
            ) from None
        return info

    def __exit__(self, *exc: object) -> None:
        return None


def select_target(spec: str, options: NativeOptions | None = None) -> tuple[Selection, Target]:
    """The target `spec` names; `options` (workers, ports, progress log) apply where they can."""
    opts = options or NativeOptions()
    selection = choose_target(spec)
    if selection.kind == "containers":
        return selection, ContainersTarget(workers=opts.workers, log=opts.log)
    if selection.kind == "external":
        assert selection.path is not None
        return selection, ExternalTarget(selection.path)
    return selection, NativeTarget(opts)

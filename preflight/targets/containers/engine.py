"""The Docker engine as the containers target uses it: whether one answers, a client, and the
sweep of what an earlier run left behind.

Testcontainers' reaper (Ryuk) is an image from a registry, which these machines cannot pull, so
it is turned off; the target cleans up itself instead. Everything a run creates (containers,
networks, volumes) carries the labels below, naming the run and the launcher's process; at the
next start, whatever belongs to a launcher that no longer runs on this host is removed (a run
killed with SIGKILL leaves nothing behind for longer than that)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUN_LABEL = "io.preflight.run"
LAUNCHER_LABEL = "io.preflight.launcher"  # "<hostname>:<pid>" of the process that started it
API_VERSION = "1.41"  # Docker 20.10 and later


def configure_testcontainers() -> None:
    """No reaper (its image cannot be pulled here: the target sweeps by label), and the engine
    reached on this host, where published ports are bound to 127.0.0.1."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    os.environ.setdefault("TC_HOST", "127.0.0.1")
    from testcontainers.core.config import testcontainers_config  # noqa: PLC0415

    testcontainers_config.ryuk_disabled = True


def docker_available(timeout: float = 2.0) -> str | None:
    """None when a Docker engine answers, else the reason it does not."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host[len("unix://") :]).is_socket():
        # docker-py leaks the socket of a failed unix connect; with no socket file there is
        # nothing to ask, and this is the answer on machines without an engine.
        return f"no Docker engine answers (no socket at {host[len('unix://') :]})"
    try:
        client = engine(timeout)
    except Exception as exc:  # docker raises DockerException, requests errors, OSError...
        return f"no Docker engine answers ({type(exc).__name__}: {str(exc)[:160]})"
    try:
        client.ping()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__}: {str(exc)[:160]})"
    finally:
        client.close()
    return None


def engine(timeout: float = 60.0) -> Any:
    """A docker SDK client. A fixed API version keeps construction from talking to the engine,
    where a failure would leave the client's socket open."""
    import docker  # noqa: PLC0415 - the docker SDK only where an engine is used

    return docker.from_env(version=API_VERSION, timeout=int(max(timeout, 1)))


def launcher() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host's run: not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(client: Any, log: Callable[[str], None], run: str | None = None) -> int:
    """Remove the containers, networks and volumes of `run`, or (None) of every run whose
    launcher is gone. Returns how many objects were removed."""
    removed = 0

    def ours(labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        if RUN_LABEL not in labels:
            return False
        if run is not None:
            return labels[RUN_LABEL] == run
        return not _alive(labels.get(LAUNCHER_LABEL, ""))

    # Sparse: the listing's own labels. A full listing inspects each container after listing
    # it, and fails with NotFound when another run removes one of its own meanwhile.
    for container in client.containers.list(all=True, filters={"label": RUN_LABEL}, sparse=True):
        if ours(container.attrs.get("Labels")):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
                removed += 1
    for network in client.networks.list(filters={"label": RUN_LABEL}):
        if ours(network.attrs.get("Labels")):
            with contextlib.suppress(Exception):
                network.remove()
                removed += 1
    for volume in client.volumes.list(filters={"label": RUN_LABEL}):
        if ours(volume.attrs.get("Labels")):
            with contextlib.suppress(Exception):
                volume.remove(force=True)
                removed += 1
    if removed and run is None:
        log(f"removed {removed} containers, networks and volumes left by an earlier run")
    return removed

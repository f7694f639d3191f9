"""The compose file's central log store (its `logstore` service) as the containers target
wires it: where the edge ships its logs to, the edge's start once that name resolves, and the
store's events file in its volume, read from this machine (base.LogStore)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from preflight.targets.containers.compose import Compose
from preflight.targets.logstore import EVENTS, STORE, EventFile, read_events

# The edge resolves the store's name when it loads its configuration; the target connects a
# container to its second network only after starting it, so the edge waits for the name.
WAIT_FOR_NAME = 'until getent hosts "$0" >/dev/null; do sleep 0.1; done; exec "$@"'


def log_server(plan: Compose) -> tuple[str, int] | None:
    """The store's name and port on the deployment's networks (None: the file runs none)."""
    service = plan.services.get(STORE)
    if service is None:
        return None
    return STORE, int(service.environment.get("LOGSTORE_PORT", "514"))


def edge_command(server: tuple[str, int] | None, command: Sequence[str]) -> list[str]:
    """The edge's command, started once the store's name resolves (where there is a store)."""
    if server is None:
        return list(command)
    return ["sh", "-c", WAIT_FOR_NAME, server[0], *command]


def store(plan: Compose, volume_path: Callable[[str], Path | None]) -> EventFile | None:
    """The store's events file, in the named volume mounted at its LOGSTORE_DIR."""
    server = log_server(plan)
    if server is None:
        return None
    service = plan.services[STORE]
    folder = service.environment.get("LOGSTORE_DIR")
    mount = next((m for m in service.mounts if m.named and m.target == folder), None)
    path = volume_path(mount.source) if mount is not None else None
    if path is None:
        return None
    return EventFile(f"{server[0]}:{server[1]}", partial(read_events, path / EVENTS))

"""The error tracker of a containers run: the stand-in for Sentry's ingestion endpoint
(preflight/targets/errortracker.py) as a process of this machine, listening only on this
machine's address on the API containers' network that has a way out (the compose file's `edge`:
`backend` and `cache` are internal, so nothing on them reaches this machine), where the API and
realtime containers report to it through CHATSDK_SENTRY_DSN (OVERRIDES).

The process stops with the run: the target's exit stops it (also after Ctrl-C, which reaches the
launcher alone: the stand-in has a process group of its own), and a launcher killed outright
takes it along (its parent-death signal, preflight/targets/procs.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path

from preflight.targets.errortracker import ErrorTracker, start_error_tracker
from preflight.targets.procs import Child


def start(
    folder: Path, host: str, stack: contextlib.ExitStack, log: Callable[[str], None]
) -> ErrorTracker:
    """The stand-in on `host`, writing its events under `folder`; `stack` stops it."""

    def spawn(child: Child, env: Mapping[str, str]) -> Child:
        child.start(env=env)
        stack.callback(child.stop)
        return child

    log(f"starting the error-tracking stand-in on {host}")
    return start_error_tracker(folder, spawn, host=host)

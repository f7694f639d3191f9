"""The API workers of the native target: the environment each runs with, its process, and a
redeploy of one worker on another release (stopped gracefully, started on it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from preflight.errors import PreflightError
from preflight.targets.native.supervisor import Supervisor, is_worker
from preflight.targets.procs import Child

WORKER_STOP_TIMEOUT_S = 20.0  # the worker's drain budget (15 s) and a margin to exit


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of one target shares (CHATSDK_* settings)."""

    dsn: str = field(repr=False)
    redis_url: str = field(repr=False)
    admin_key: str = field(repr=False)
    jwt_secret: str = field(repr=False)
    upload_dir: Path
    # Browsers reach the API through the edge only: that is the one allowed Origin.
    origin: str
    demo: bool
    extra: Mapping[str, str] = field(default_factory=dict)

    def env(self, index: int, port: int) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "CHATSDK_HOST": "127.0.0.1",
            "CHATSDK_PORT": str(port),
            "CHATSDK_WORKER_ID": str(index),
            "CHATSDK_DATABASE_URL": self.dsn,
            "CHATSDK_REDIS_URL": self.redis_url,
            "CHATSDK_ADMIN_KEY": self.admin_key,
            "CHATSDK_JWT_SECRET": self.jwt_secret,
            "CHATSDK_UPLOAD_DIR": str(self.upload_dir),
            "CHATSDK_ALLOWED_ORIGINS": self.origin,
            "CHATSDK_DEMO": "1" if self.demo else "0",
            **self.extra,
        }


def start_worker(
    supervisor: Supervisor, settings: WorkerSettings, index: int, port: int, logs: Path
) -> Child:
    """Start worker `api-<index>` on `port` (not yet ready)."""
    settings.upload_dir.mkdir(exist_ok=True)
    # The worker bounds its own drain (15 s, then exit 1 with the reason logged); SIGKILL only
    # after that, so a slow drain shows up as the worker's own report, not as a bare -9.
    child = Child(
        f"api-{index}",
        [sys.executable, "-m", "chatsdk"],
        logs / f"api-{index}.log",
        stop_timeout=WORKER_STOP_TIMEOUT_S,
    )
    return supervisor.spawn(child, env=settings.env(index, port))


def redeploy(supervisor: Supervisor, name: str, release: Path | None) -> int | None:
    """Stop API worker `name` gracefully and start it on `release` (a directory holding a
    `chatsdk` package, first on its PYTHONPATH; None: the installed one). The old process's
    exit code."""
    child = supervisor.child(name)
    if child is None or not is_worker(name):
        raise PreflightError(f"no API worker named {name} in this target")
    env = {k: v for k, v in (supervisor.start_args[name][0] or {}).items() if k != "PYTHONPATH"}
    if release is not None:
        env["PYTHONPATH"] = str(release)
    return supervisor.relaunch(child, env)

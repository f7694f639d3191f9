"""Where a native target runs: the servers' binaries found (or how to install them), and its
private temp dir, made for one start and swept once its launcher died without removing it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from preflight.errors import TargetUnavailable

TEMP_PREFIX = "preflight-native-"


def executable(name: str, where: Path | None = None) -> str:
    """The path of binary `name` (in `where`, or on PATH and /usr/sbin)."""
    path = str(where / name) if where else shutil.which(name, path=os.defpath + ":/usr/sbin")
    if not path or not os.access(path, os.X_OK):
        package = {"nginx": "nginx", "redis-server": "redis-server"}.get(name, "postgresql-15")
        raise TargetUnavailable(
            f"{name} not found{f' in {where}' if where else ''}; install it with "
            f"`apt-get install {package}` (or run `make run`, which does)"
        )
    return path


def make_workdir() -> Path:
    """A new temp dir owned by this process, with its logs/ folder."""
    workdir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
    # 0711: the postgres user and nginx's unprivileged workers must traverse it (see
    # environment-notes: a 0700 parent makes request bodies > 16 KB fail with 500).
    workdir.chmod(0o711)
    (workdir / "owner.pid").write_text(str(os.getpid()))
    (workdir / "logs").mkdir()
    return workdir


def sweep_stale_dirs(tmp: Path | None = None) -> list[Path]:
    """Remove temp dirs left by launchers that were killed (SIGKILL leaves no chance to clean)."""
    removed = []
    for d in Path(tmp or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        except PermissionError:
            continue
    return removed

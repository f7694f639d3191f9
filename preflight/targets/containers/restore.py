"""A restore of the containers target: a backup put into a fresh deployment before its API
containers start, the way an operator restores the compose deployment after losing its data.

The restore job is `python -m chatsdk.backup restore`, run once in a container of the backup
service's own image (its PostgreSQL client tools match the server's), on the stores' network,
with the backup repository mounted read-only and the new deployment's upload volume; it connects
as PostgreSQL's superuser (the restored objects need an owner that may create them) through a
secret file, never a visible environment value."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from preflight.errors import TargetUnavailable

RESTORE_TIMEOUT_S = 900
REPOSITORY = "/restore"  # where the repository holding the backup is mounted
URL_FILE_INSIDE = "/run/secrets/restore_database_url"


def run_restore(
    client: Any,
    *,
    backup: Path,
    image: str,
    networks: Sequence[Any],
    environment: Mapping[str, str],
    url_file: Path,
    mounts: Mapping[str, tuple[str, str]],
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """Restore `backup` (a directory of a chatsdk.backup repository) with the backup image;
    returns the restore's own report, also when what it restored differs from the backup
    (exit 1: the drill judges that); raises TargetUnavailable when nothing could be restored.
    `networks` are the backup service's (docker SDK Networks: the stores'); `mounts` maps a
    volume or host path to (where in the container, mode)."""
    env = {
        key: value
        for key, value in environment.items()
        if not key.startswith("CHATSDK_BACKUP_DATABASE_URL")
    }
    env["CHATSDK_BACKUP_DATABASE_URL_FILE"] = URL_FILE_INSIDE
    volumes = {
        str(backup.parent): {"bind": REPOSITORY, "mode": "ro"},
        str(url_file): {"bind": URL_FILE_INSIDE, "mode": "ro"},
        **{source: {"bind": inside, "mode": mode} for source, (inside, mode) in mounts.items()},
    }
    argv = [
        "python3",
        "-m",
        "chatsdk.backup",
        "restore",
        f"--repository={REPOSITORY}",
        f"--id={backup.name}",
        "--upload-dir=/var/lib/chatsdk/uploads",
    ]
    pg_bin = env.get("CHATSDK_BACKUP_PG_BIN")
    if pg_bin:
        argv.append(f"--pg-bin={pg_bin}")
    container = client.containers.create(
        image,
        argv,
        environment=env,
        network=networks[0].name,
        volumes=volumes,
        labels=dict(labels),
        tmpfs={"/tmp": ""},  # noqa: S108 - the container's own /tmp
    )
    try:
        for network in networks[1:]:
            network.connect(container)
        container.start()
        code = int(container.wait(timeout=RESTORE_TIMEOUT_S)["StatusCode"])
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    try:
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        report = {}
    if code not in (0, 1) or "backup_id" not in report:
        raise TargetUnavailable(
            f"restoring backup {backup.name} failed (exit {code}): "
            f"{report.get('error') or err.strip()[-500:]}"
        )
    return report

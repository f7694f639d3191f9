"""The native target's releases (base.ReleaseControl): which release each API worker runs, and
the rehearsal candidate of the rollout drills (checks/drills/test_rollout.py) on a machine that
has one release of the chat API: the release the target runs, copied, reporting
`<version>+rehearsal` and shipping one more migration. By default that migration is the expand
step of expand/contract (system/docs/operations/rollback.md): a nullable column the previous
release neither reads nor writes. Tests seed a breaking one
(NativeTestOptions.rehearsal_migration) to show that the drills catch a migration the previous
release cannot live with.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from preflight.errors import TargetUnavailable

REHEARSAL_SUFFIX = "+rehearsal"
MIGRATION_NAME = "rehearsal"
EXPAND_MIGRATION = """\
-- The rollout rehearsal's expand step (preflight/targets/native/releases.py): a nullable
-- column that the previous release neither reads nor writes, so both releases run on the
-- migrated schema.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS rehearsal_note text;
"""
_VERSION = re.compile(r'^__version__ = "(?P<version>[^"]+)"$', re.MULTILINE)
_MIGRATION = re.compile(r"^(?P<version>\d{4})_[a-z0-9_]+\.sql$")


def installed_release() -> Path:
    """The directory of the `chatsdk` package the native target's workers import."""
    spec = importlib.util.find_spec("chatsdk")
    if spec is None or spec.origin is None:
        raise TargetUnavailable("the chatsdk package is not importable; run scripts/setup.sh")
    return Path(spec.origin).parent


def build_candidate(workdir: Path, migration_sql: str = EXPAND_MIGRATION) -> Path:
    """A release directory (put first on a worker's PYTHONPATH) holding a copy of the installed
    `chatsdk` with version `<version>+rehearsal` and `migration_sql` as its newest migration."""
    package = workdir / "chatsdk"
    if package.exists():
        shutil.rmtree(package)
    shutil.copytree(
        installed_release(), package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    version_file = package / "version.py"
    text = version_file.read_text()
    match = _VERSION.search(text)
    if match is None:
        raise TargetUnavailable(f'{version_file} does not define __version__ = "..."')
    version_file.write_text(
        _VERSION.sub(f'__version__ = "{match["version"]}{REHEARSAL_SUFFIX}"', text, count=1)
    )
    migrations = package / "migrations"
    shipped = [int(m["version"]) for p in migrations.iterdir() if (m := _MIGRATION.match(p.name))]
    (migrations / f"{max(shipped, default=0) + 1:04d}_{MIGRATION_NAME}.sql").write_text(
        migration_sql
    )
    return workdir


@dataclass(frozen=True)
class WorkerReleases:
    """ReleaseControl of the native target: `deploy_worker` puts one worker on a release (see
    workers.redeploy); the candidate is built in `candidate_dir` with `migration`."""

    workers: tuple[str, ...]
    deploy_worker: Callable[[str, Path | None], int | None]
    candidate_dir: Path
    migration: str = EXPAND_MIGRATION

    def deploy(self, worker: str, release: Path | None) -> int | None:
        return self.deploy_worker(worker, release)

    def candidate(self) -> Path | None:
        """The rehearsal candidate, built in the target's dir."""
        return build_candidate(self.candidate_dir, self.migration)

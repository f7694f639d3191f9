"""Which release a run (or an attestation) speaks for: the version and commit of the checkout, and
digests of the checklist and of the system's source.

An attestation names the release it was made for (`binding`); it counts only for a run whose
release matches every field it names (`mismatch`). Version and commit come from git (`git describe
--tags --always --dirty`, so a tree with uncommitted changes is a release of its own); where git
cannot say, the binding is the checklist and system digests instead.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BINDINGS = (("version", "commit"), ("checklist_sha256", "system_sha256"))
SYSTEM_DIR = Path("system")
SKIPPED = ("__pycache__",)


@dataclass(frozen=True)
class Release:
    version: str | None = None
    commit: str | None = None
    checklist_sha256: str | None = None
    system_sha256: str | None = None

    def fields(self) -> dict[str, str]:
        known = {
            "version": self.version,
            "commit": self.commit,
            "checklist_sha256": self.checklist_sha256,
            "system_sha256": self.system_sha256,
        }
        return {name: value for name, value in known.items() if value}

    def binding(self) -> dict[str, str]:
        """What an attestation made now names: version and commit, else the two digests."""
        fields = self.fields()
        for names in BINDINGS:
            if all(name in fields for name in names):
                return {name: fields[name] for name in names}
        raise ValueError("the release is unknown: no git commit, and no checklist/system digest")

    def label(self) -> str:
        return label(self.fields())

    def mismatch(self, binding: object) -> str:
        """Why a statement bound to `binding` does not speak for this release ('' when it does)."""
        if not isinstance(binding, Mapping) or not any(set(n) <= set(binding) for n in BINDINGS):
            return "it names no release (version and commit, or checklist and system digests)"
        mine = self.fields()
        if all(mine.get(name) == value for name, value in binding.items()):
            return ""
        return f"attested for release {label(binding)}, this run is release {self.label()}"


def label(fields: Mapping[str, object]) -> str:
    """A release as people read it: `0.3.1 (commit 1a2b3c4d5e6f)` or digests, shortened."""
    if fields.get("commit"):
        return f"{fields.get('version', '?')} (commit {str(fields['commit'])[:12]})"
    if fields.get("checklist_sha256") or fields.get("system_sha256"):
        checklist = str(fields.get("checklist_sha256", "?"))[:12]
        system = str(fields.get("system_sha256", "?"))[:12]
        return f"checklist {checklist}, system {system}"
    return "unknown"


def _git(args: list[str], where: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def tree_digest(directory: Path) -> str | None:
    """sha256 over every file under `directory` (relative path and content, in path order)."""
    if not directory.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory)
        if any(part in SKIPPED for part in relative.parts):
            continue
        digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def current_release(
    checklist_path: Path, system_dir: Path = SYSTEM_DIR, repo: Path = Path()
) -> Release:
    """The release checked out in `repo`: its git version and commit, and the digests."""
    return Release(
        version=_git(["describe", "--tags", "--always", "--dirty"], repo),
        commit=_git(["rev-parse", "HEAD"], repo),
        checklist_sha256=(
            hashlib.sha256(checklist_path.read_bytes()).hexdigest()
            if checklist_path.is_file()
            else None
        ),
        system_sha256=tree_digest(system_dir),
    )

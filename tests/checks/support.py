"""Running the real probes in checks/ against deliberately broken variants of the bundled system,
to show that each probe can fail and names the defect."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from preflight.outcomes import Outcome, ProbeResults, combine
from preflight.plugin import RunContext, run_probes
from preflight.targets.base import TargetInfo
from preflight.targets.containers import ContainersTarget
from preflight.targets.containers.engine import docker_available
from preflight.targets.edge import TEMPLATE_DIR
from preflight.targets.native import NativeOptions, NativeTarget
from preflight.targets.native.postgres import Postgres
from preflight.targets.native.standby import Failover

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "checks"
CHECKLIST = REPO / "checklist.yaml"


@contextmanager
def native(**options: object) -> Iterator[TargetInfo]:
    """A native target with NativeOptions overrides (edge_template_dir, postgres_settings,
    redis_settings, worker_env, ...)."""
    with NativeTarget(NativeOptions(**options)) as info:  # type: ignore[arg-type]
        yield info


def native_primary(info: TargetInfo) -> Postgres:
    """A native target's PostgreSQL primary (the target runs its standby too)."""
    failover = info.drills.failover
    assert isinstance(failover, Failover), "a native target with its standby"
    return failover.primary


def primary_sql(info: TargetInfo) -> Callable[[str], str]:
    """SQL on a native target's PostgreSQL primary as the superuser (psql's unaligned output)."""
    primary = native_primary(info)
    return lambda sql: primary.psql(sql, primary.superuser_password)


@contextmanager
def containers() -> Iterator[TargetInfo]:
    """The deployment system/deploy ships, on this machine's Docker engine (set-up starts one).
    Modules that use it take the fixture one_heavy_module_at_a_time (tests/conftest.py)."""
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"
    with ContainersTarget(timeout=600) as info:
        yield info


def apply_edits(root: Path, edits: Mapping[str, Callable[[str], str]]) -> Path:
    """Pass each named file (a path relative to `root`) through its edit. An edit that changes
    nothing is a broken test, not a broken artefact: it raises (the artefact moved on)."""
    for relative, edit in edits.items():
        path = root / relative
        before = path.read_text()
        after = edit(before)
        if after == before:
            raise AssertionError(f"the edit of {relative} changed nothing; the artefact moved on")
        path.write_text(after)
    return root


def edge_templates(tmp: Path, edits: Mapping[str, Callable[[str], str]]) -> Path:
    """A copy of system/nginx with the edits applied."""
    copy = tmp / "nginx"
    shutil.copytree(TEMPLATE_DIR, copy)
    return apply_edits(copy, edits)


def probe(
    info: TargetInfo,
    *paths: str,
    items: Iterable[str] | None = None,
    repo_dir: Path | None = None,
) -> ProbeResults:
    """Run checks/<path>... against `info` in this process; the artefact probes judge the
    repository `repo_dir` (default: this one)."""
    context = RunContext(target=info, selected=set(items) if items is not None else None)
    extra = [f"--repo-dir={repo_dir}"] if repo_dir is not None else []
    results = run_probes([CHECKS / p for p in paths], context, CHECKLIST, extra_args=extra)
    if results.errors:
        raise AssertionError("the probes do not collect: " + "; ".join(results.errors))
    return results


def outcomes(results: ProbeResults) -> dict[str, tuple[Outcome, str]]:
    """Item id -> (combined outcome, reason) of every item the probes decided."""
    return {item_id: combine(results.for_item(item_id)) for item_id in _items(results)}


def failing(results: ProbeResults) -> dict[str, str]:
    """Item id -> reason, for the items that ended `fail`."""
    return {i: reason for i, (o, reason) in outcomes(results).items() if o is Outcome.FAIL}


def _items(results: ProbeResults) -> list[str]:
    return list(dict.fromkeys(i for r in results.results for i in r.items))

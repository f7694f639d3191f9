"""What the running release says about itself, held against the repository: a changelog entry for
the version every worker reports, and a release (not development) build."""

from __future__ import annotations

import re

import pytest
from packaging.version import InvalidVersion, Version

from checks.deployment._artefacts import Repo
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

# Development helpers a debug build may serve (aiohttp-debugtoolbar, Django/Werkzeug-style
# debuggers, profilers); a release build answers 404 for all of them.
DEV_PATHS = ("/_debugtoolbar/", "/__debug__/", "/debug/pprof/", "/v1/_debug")


def _entry(version: str) -> re.Pattern[str]:
    return re.compile(rf"^##\s+\[?v?{re.escape(version)}\]?\s+-\s+\d{{4}}-\d{{2}}-\d{{2}}", re.M)


@pytest.mark.checklist("DEP-CHANGELOG")
def test_the_changelog_has_the_running_version(
    target: ProbeTarget, repo: Repo, evidence: EvidenceLog
) -> None:
    """Without a changelog, operators cannot tell what changed when something breaks."""
    versions = sorted({str(r["version"]) for r in target.metrics.runtime(evidence).values()})
    assert repo.changelog.is_file(), f"{repo.relative(repo.changelog)} must exist (it does not)"
    text = repo.changelog.read_text()
    missing = [v for v in versions if not _entry(v).search(text)]
    evidence.note(f"versions reported: {versions}")
    assert not missing, (
        f"{repo.relative(repo.changelog)} must have a dated entry '## [{missing[0]}] - YYYY-MM-DD' "
        f"for the version the target reports (got none)"
    )


@pytest.mark.checklist("APP-BUILD-PROD")
def test_every_worker_reports_a_final_release(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """A development build is slower and may expose debugging aids."""
    for worker, report in target.metrics.runtime(evidence).items():
        raw = str(report.get("version", ""))
        try:
            version = Version(raw)
        except InvalidVersion:
            raise AssertionError(
                f"worker {worker} must report a release version (got {raw!r})"
            ) from None
        development = version.is_prerelease or bool(version.local)
        assert not development, (
            f"worker {worker} must run a final release, not a development build (got {raw})"
        )
        config = report.get("config", {})
        debug = {k: config.get(k) for k in ("python_dev_mode", "asyncio_debug")}
        assert not any(debug.values()), (
            f"worker {worker} must run without debug modes (got {debug})"
        )


@pytest.mark.checklist("APP-BUILD-PROD")
@pytest.mark.parametrize("path", DEV_PATHS)
def test_no_dev_tooling_is_served(target: ProbeTarget, evidence: EvidenceLog, path: str) -> None:
    """Debug toolbars and profilers hand out source, settings and a shell."""
    response = target.http.get(path)
    evidence.request(response)
    assert response.status == 404, (
        f"{path} must not be served by a release build (got {response.status})"
    )

"""The CI templates in ci/: valid against the schemas GitHub and GitLab publish (as vendored by
check-jsonschema), and their report steps run here, under real sudo, on a real run directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from preflight.record import write_record
from preflight.report import write_reports
from tests.records import make_record

REPO = Path(__file__).resolve().parents[1]
GITHUB = REPO / "ci/github-actions.yml"
GITLAB = REPO / "ci/gitlab-ci.yml"


@pytest.mark.parametrize(
    ("template", "schema"),
    [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")],
    ids=["github", "gitlab"],
)
def test_the_template_is_valid_against_the_published_schema(template: Path, schema: str) -> None:
    checked = subprocess.run(
        [str(REPO / ".venv/bin/check-jsonschema"), "--builtin-schema", schema, str(template)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def github_steps() -> dict[str, dict[str, Any]]:
    workflow = yaml.safe_load(GITHUB.read_text())
    return {step.get("name", step.get("uses")): step for step in workflow["jobs"]["gate"]["steps"]}


def test_the_github_gate_reads_only_cancels_stale_runs_and_caches() -> None:
    workflow = yaml.safe_load(GITHUB.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "actions/cache@v4" in github_steps()
    # sudo resets PATH: the gate must hand setup-python's interpreter to set-up explicitly.
    gate = github_steps()["Readiness gate"]["run"]
    assert 'sudo -E env "PATH=$PATH" PYTHON="$(command -v python)"' in gate


def test_the_gitlab_gate_tells_not_ready_from_a_broken_harness_on_merge_requests() -> None:
    jobs = yaml.safe_load(GITLAB.read_text())
    assert "allow_failure" not in jobs["preflight"]
    assert jobs["preflight-preview"]["allow_failure"] == {"exit_codes": [1]}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A checkout after `sudo make run`: a real run directory under reports/ (root-owned, as the
    gate leaves it), reports/latest pointing at it, and the repository's .venv."""
    root = tmp_path / "checkout"
    run = root / "reports/20261207T120000Z-abc123"
    run.mkdir(parents=True)
    record = make_record()
    write_record(record, run / "record.json")
    write_reports(record, run)
    (root / "reports/latest").symlink_to(run.name)
    (root / ".venv").symlink_to(REPO / ".venv")
    for cached in (".uv-cache", "system/deploy/wheels"):
        (root / cached).mkdir(parents=True)
    return root


@pytest.mark.skipif(shutil.which("sudo") is None, reason="set-up installs sudo")
def test_the_github_report_step_runs_and_writes_the_blocking_items_to_the_summary(
    workspace: Path,
) -> None:
    summary = workspace / "summary.md"
    step = github_steps()["Keep the report"]["run"]
    ran = subprocess.run(
        ["bash", "-e", "-c", step],
        cwd=workspace,
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert {p.name for p in (workspace / "gate-report").iterdir()} >= {
        "record.json",
        "report.html",
        "junit.xml",
    }
    text = summary.read_text()
    assert text.startswith("## ❌ preflight: NOT READY\n")
    assert "| item | severity | outcome | why |" in text
    rows = [
        line.split(" | ")[2]
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
    ][1:]
    assert rows == sorted(rows, key=("fail", "error", "unverified", "skip").index)


def test_the_gitlab_after_script_keeps_the_report_and_its_summary(workspace: Path) -> None:
    jobs = yaml.safe_load(GITLAB.read_text())
    for line in jobs[".preflight"]["after_script"]:
        ran = subprocess.run(
            ["bash", "-c", line], cwd=workspace, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
    assert (workspace / "gate-report/junit.xml").is_file()
    assert (workspace / "gate-report/summary.md").read_text().startswith("## ❌ preflight")

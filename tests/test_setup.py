"""scripts/setup.sh: what the README's two commands run first."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Binary -> what its --version prints (the redis exporter logs its version instead).
MONITORING_BINARIES = {
    "promtool": "promtool, version",
    "amtool": "amtool, version",
    "prometheus": "prometheus, version",
    "prometheus-alertmanager": "alertmanager, version",
    "prometheus-node-exporter": "node_exporter, version",
    "prometheus-postgres-exporter": "postgres_exporter, version",
    "prometheus-redis-exporter": "Redis Metrics Exporter",
}


def _listed(how: str) -> dict[str, str]:
    """Package -> tested version, of the packages scripts/debian-packages.txt installs by `how`."""
    rows = [
        line.split()
        for line in (REPO / "scripts" / "debian-packages.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {row[0]: row[1] for row in rows if row[2].rstrip(":") == how}


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_not_root_and_a_package_missing_prints_the_command_and_exits_2() -> None:
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "bash",
            str(REPO / "scripts" / "setup.sh"),
        ],
        env={**os.environ, "PREFLIGHT_APT_PACKAGES": "nginx preflight-no-such-package"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "missing system packages: preflight-no-such-package" in result.stderr
    assert "apt-get install -y --no-install-recommends preflight-no-such-package" in result.stderr
    assert "nginx" not in result.stderr.split("install -y")[1], (
        "installed packages are not asked for"
    )


def _setup(
    env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """scripts/setup.sh run as this user, with `env` added to the environment."""
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh")],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_browser_for_the_report_test_is_on_the_list_and_installed() -> None:
    assert {"chromium", "fonts-dejavu-core"} <= set(_listed("apt"))
    assert Path("/usr/bin/chromium").exists(), "run scripts/setup.sh as root to install it"
    version = subprocess.run(
        ["/usr/bin/chromium", "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert version.stdout.startswith("Chromium "), version.stdout


def test_a_second_run_installs_nothing_and_is_fast() -> None:
    result = _setup()
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stdout + result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="apt-get download and install need root")
def test_the_monitoring_binaries_are_extracted_alone_when_missing(tmp_path: Path) -> None:
    bin_dir, share = tmp_path / "bin", tmp_path / "share"
    dirs = {"PREFLIGHT_BIN_DIR": str(bin_dir), "PREFLIGHT_SHARE_DIR": str(share)}
    run = _setup(dirs, timeout=300)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(MONITORING_BINARIES)
    templates = share / "prometheus" / "alertmanager"
    assert sorted(p.name for p in templates.iterdir()) == ["default.tmpl", "email.tmpl"]
    for name, banner in MONITORING_BINARIES.items():
        version = subprocess.run(
            [str(bin_dir / name), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert version.returncode == 0
        assert banner in version.stdout + version.stderr
    again = _setup(dirs)
    assert again.returncode == 0, again.stderr
    assert "installing" not in again.stdout + again.stderr


def test_the_monitoring_tools_are_installed() -> None:
    for name in (*MONITORING_BINARIES, "logrotate"):
        assert shutil.which(name), f"{name} is missing: run scripts/setup.sh as root"
    assert Path("/usr/share/prometheus/alertmanager/default.tmpl").is_file()


def test_every_package_on_the_list_names_a_tested_version() -> None:
    apt, extracted = _listed("apt"), _listed("extract")
    assert {"redis-server", "nginx", "postgresql-15", "chromium"} <= set(apt)
    assert {"prometheus", "prometheus-alertmanager"} <= set(extracted)
    for package, version in {**apt, **extracted}.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+~:-]*", version), (package, version)


def test_a_package_at_another_version_than_tested_is_a_warning(tmp_path: Path) -> None:
    listed = REPO / "scripts" / "debian-packages.txt"
    here = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "nginx"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    other = tmp_path / "debian-packages.txt"
    other.write_text(
        "\n".join(
            "nginx 0.0-tested apt" if line.startswith("nginx ") else line
            for line in listed.read_text().splitlines()
        )
    )
    result = _setup({"PREFLIGHT_DEBIAN_PACKAGES": str(other)})
    assert result.returncode == 0, result.stderr
    assert f"setup: warning: nginx is {here} here; preflight was tested with 0.0-tested" in (
        result.stderr
    )
    assert "warning: redis-server" not in result.stderr, "a tested version is not warned about"

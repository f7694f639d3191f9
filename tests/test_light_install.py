"""The light install: `pip install preflight` without extras is the engine a stakeholder who only
signs and verifies needs. It installs in a fresh virtual environment without Locust, Playwright,
sslyze, pytest or the chat system, and verifies, signs and renders a record downloaded anywhere."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from preflight.signing import PANEL_ROLES
from tests.test_cli_signoff import run_dir, sign, signoff  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("locust", "playwright", "sslyze", "pytest", "aiohttp", "asyncpg", "docker", "chatsdk")
MAX_PACKAGES = 25


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding `preflight` without extras, installed by uv from this checkout."""
    venv = tmp_path_factory.mktemp("light") / "venv"
    uv = [str(REPO / "scripts/uv.sh")]
    subprocess.run([*uv, "venv", "--quiet", str(venv)], check=True, timeout=120)
    subprocess.run(
        [*uv, "pip", "install", "--quiet", "--python", str(venv / "bin/python"), str(REPO)],
        check=True,
        timeout=600,
    )
    return venv


LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m; "
    "print('\\n'.join(sorted(d.metadata['Name'] for d in m.distributions())))"
)


def packages(venv: Path) -> list[str]:
    listing = subprocess.run(
        [str(venv / "bin/python"), "-c", LIST_DISTRIBUTIONS],
        cwd=venv,  # not this checkout, whose preflight.egg-info would count too
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return listing.stdout.split()


def test_the_light_install_has_fewer_than_25_packages_and_nothing_heavy(light_venv: Path) -> None:
    installed = packages(light_venv)
    assert len(installed) < MAX_PACKAGES, installed
    lowered = {name.lower() for name in installed}
    assert not lowered.intersection(HEAVY), installed


def test_the_light_install_signs_and_verifies_a_record_outside_the_repository(
    light_venv: Path,
    tmp_path: Path,
    signoff: Path,  # noqa: F811 - the fixture
) -> None:
    directory = run_dir(tmp_path, ready=True)
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    env = {**os.environ, "PREFLIGHT_KEYS": str(signoff / "keys.yaml")}
    preflight = str(light_venv / "bin/preflight")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [preflight, *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    for role in PANEL_ROLES:
        key = signoff / f"{role}.pem"
        signed = cli("sign", str(directory), "--role", role, "--key", str(key))
        assert signed.returncode == 0, signed.stderr
    verified = cli("verify", str(directory))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.splitlines()[-1].startswith("VERIFIED - SIGNED - READY")
    rendered = cli("report", str(directory / "record.json"), "--out", str(elsewhere / "r"))
    assert rendered.returncode == 0, rendered.stderr
    assert (elsewhere / "r/report.html").is_file()
    # Without the registry it says where to point it.
    env.pop("PREFLIGHT_KEYS")
    missing = cli("verify", str(directory))
    assert missing.returncode == 2
    assert "set PREFLIGHT_KEYS" in missing.stderr
    # The commands that need the rest say which extra to install.
    run = cli("run", "--no-load")
    assert run.returncode == 2
    assert 'pip install "preflight[all]"' in run.stderr

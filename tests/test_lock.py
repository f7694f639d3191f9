"""uv.lock is what set-up installs: it matches pyproject.toml, and .venv holds exactly its
packages at its versions (nothing outside the lock, nothing missing)."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packaging.markers import Marker
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
UV = REPO / ".tools" / "uv" / "bin" / "uv"
# The install set the README's commands use (scripts/setup.sh: `uv sync --extra dev`).
# Set-up installs the project with every extra (scripts/setup.sh: uv sync --all-extras).
EXTRAS = tuple(
    tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
)


def locked_set(lock: Mapping[str, Any], extras: Iterable[str]) -> dict[str, str]:
    """Every package (name -> version) that the lock installs on this interpreter for the
    project with `extras`: the dependency graph walked from the project, markers evaluated."""
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for package in lock["package"]:
        by_name.setdefault(package["name"], []).append(package)
    root = next(p for p in lock["package"] if p["source"].get("editable") == ".")
    wanted: dict[str, str] = {}
    todo: list[tuple[Mapping[str, Any], tuple[str, ...]]] = [(root, tuple(extras))]
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    while todo:
        package, package_extras = todo.pop()
        key = (package["name"], package["version"], package_extras)
        if key in seen:
            continue
        seen.add(key)
        wanted[package["name"]] = package["version"]
        deps = list(package.get("dependencies", []))
        for extra in package_extras:
            deps += package.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            marker = dep.get("marker")
            if marker and not Marker(marker).evaluate({"extra": ""}):
                continue
            candidates = by_name[dep["name"]]
            if "version" in dep:
                candidates = [c for c in candidates if c["version"] == dep["version"]]
            if len(candidates) != 1:
                raise AssertionError(f"uv.lock: {dep['name']} is ambiguous here: {candidates}")
            todo.append((candidates[0], tuple(dep.get("extra", ()))))
    return wanted


def installed_set(prefix: Path) -> dict[str, str]:
    """Every distribution installed in the environment at `prefix` (name -> version)."""
    site = [
        p for p in map(Path, sys.path) if p.is_relative_to(prefix) and p.name == "site-packages"
    ]
    return {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions(path=[str(p) for p in site])
    }


def differences(locked: Mapping[str, str], installed: Mapping[str, str]) -> list[str]:
    """What separates an environment from the lock, one sentence each."""
    problems = [
        f"{n} {v} is installed but not in uv.lock" for n, v in installed.items() if n not in locked
    ]
    problems += [
        f"{n} {v} is in uv.lock but not installed" for n, v in locked.items() if n not in installed
    ]
    problems += [
        f"{n} is {installed[n]} but uv.lock says {v}"
        for n, v in locked.items()
        if n in installed and installed[n] != v
    ]
    return sorted(problems)


def _lock() -> dict[str, Any]:
    return tomllib.loads((REPO / "uv.lock").read_text())


def _uv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert UV.is_file(), "uv is missing: run scripts/setup.sh"
    return subprocess.run(
        [str(UV), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_venv_holds_exactly_the_locked_packages() -> None:
    prefix = Path(sys.prefix)
    assert prefix == REPO / ".venv", f"the suite runs from set-up's .venv, not {prefix}"
    assert differences(locked_set(_lock(), EXTRAS), installed_set(prefix)) == []


def test_a_package_outside_the_lock_or_at_another_version_is_named() -> None:
    locked = locked_set(_lock(), EXTRAS)
    installed = dict(locked)
    installed["left-pad"] = "1.0"
    installed["redis"] = "7.4.0"
    del installed["pyyaml"]
    assert differences(locked, installed) == [
        "left-pad 1.0 is installed but not in uv.lock",
        f"pyyaml {locked['pyyaml']} is in uv.lock but not installed",
        f"redis is 7.4.0 but uv.lock says {locked['redis']}",
    ]


def test_every_locked_package_has_a_hash() -> None:
    for package in _lock()["package"]:
        if "registry" not in package["source"]:
            continue  # the project itself
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        assert files, package["name"]
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", f["hash"]) for f in files), package["name"]


def test_the_lock_matches_pyproject() -> None:
    result = _uv("lock", "--check", "--offline", cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_a_dependency_added_to_pyproject_without_the_lock_is_caught(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('    "pyyaml>=6",\n', '    "pyyaml>=6",\n    "six>=1",\n', 1))
    assert pyproject.read_text() != text
    result = _uv("lock", "--check", "--offline", cwd=tmp_path)
    assert result.returncode != 0
    assert "needs to be updated" in result.stderr, result.stderr


def test_the_api_images_requirements_are_the_locks_versions() -> None:
    """system/deploy/requirements.txt (what the API image installs) pins every package at the
    version uv.lock pins, and each with hashes: `make lock` regenerates it."""
    text = (REPO / "system" / "deploy" / "requirements.txt").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.MULTILINE))
    assert pinned, "requirements.txt pins nothing"
    locked = {p["name"]: p["version"] for p in _lock()["package"]}
    differ = {
        name: (version, locked.get(_normal(name)))
        for name, version in pinned.items()
        if locked.get(_normal(name)) != version
    }
    assert not differ, f"system/deploy/requirements.txt differs from uv.lock: {differ}"
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n", 3)[-1])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()

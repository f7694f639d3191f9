"""Fixtures shared by the probe families: the actors (apps, users and their objects) the auth,
authorization and input probes act with, built once per session through the public API; and the
order of a session: drills last."""

from __future__ import annotations

from pathlib import Path

import pytest

from checks.deployment._artefacts import Repo, repo_of
from checks.security._actors import Actors
from preflight.probe.target import ProbeTarget


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("preflight").addoption(
        "--repo-dir",
        metavar="DIR",
        default=None,
        help="the repository whose artefacts (system/deploy, system/docs/operations, CHANGELOG.md) "
        "the artefact probes judge (default: the one checks/ is in); tests point it at broken "
        "copies",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Drills (checks/drills/) run after every other probe: they break components, and even
    when each restores what it broke, the probes judge an undisturbed system first."""
    drills = Path(__file__).parent / "drills"
    items.sort(key=lambda item: item.path.is_relative_to(drills))


@pytest.fixture(scope="session")
def repo(request: pytest.FixtureRequest) -> Repo:
    """The repository whose deployment artefacts and docs the artefact probes judge."""
    return repo_of(request.config)


@pytest.fixture(scope="session")
def actors(target: ProbeTarget) -> Actors:
    """Two apps, an owner, a member, a non-member and a user of the other app, and the owner's
    private channel with a message, an upload and a poll (see checks/security/_actors.py)."""
    return Actors.create(target)

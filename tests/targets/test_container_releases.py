"""Releases on the containers target, end to end on this machine's engine: a deploy replaces an
API worker's container with one like it on the release's image, the edge serves through the new
container, the drills' hands follow it; and a release whose worker does not drain turns the
rollback drill red."""

from __future__ import annotations

import dataclasses
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from preflight.client import ChatClient
from preflight.outcomes import Outcome
from preflight.targets.base import ReleaseControl, TargetInfo
from preflight.targets.containers.engine import LAUNCHER_LABEL, RUN_LABEL, engine
from preflight.targets.containers.images import LABEL
from preflight.targets.containers.releases import RELEASE_REPOSITORY, ContainerReleases, _context
from preflight.targets.native.releases import build_candidate
from tests.checks.support import containers, outcomes
from tests.drills.test_fault_variants import drills

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")

TIMEOUT_S = 120.0
UNROUTED_S = 30.0  # how long an edge that does not re-resolve is watched not to route
# What must not change when a container is replaced: (path into the engine's inspect, name).
KEPT = (
    (("Config", "Env"), "environment"),
    (("Config", "Hostname"), "host name"),
    (("Config", "Healthcheck"), "health check"),
    (("HostConfig", "Binds"), "mounts and secrets"),
    (("HostConfig", "Tmpfs"), "tmpfs"),
    (("HostConfig", "PortBindings"), "published ports"),
    (("HostConfig", "RestartPolicy"), "restart policy"),
    (("HostConfig", "ReadonlyRootfs"), "read-only root"),
    (("HostConfig", "CapDrop"), "dropped capabilities"),
    (("HostConfig", "SecurityOpt"), "security options"),
    (("HostConfig", "NanoCpus"), "CPU limit"),
    (("HostConfig", "Memory"), "memory limit"),
)


def test_a_release_image_is_tagged_by_its_package(tmp_path: Path) -> None:
    """The build context (and so the tag's digest) depends on the package's files only: not on
    where or when it was copied, nor on bytecode caches."""
    one = build_candidate(tmp_path / "one") / "chatsdk"
    two = build_candidate(tmp_path / "two") / "chatsdk"
    (two / "__pycache__").mkdir(exist_ok=True)
    (two / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"cache")
    assert _context(one) == _context(two)
    (two / "version.py").write_text((two / "version.py").read_text() + "# changed\n")
    assert _context(one) != _context(two)


@pytest.fixture(scope="module")
def target() -> Iterator[TargetInfo]:
    with containers() as info:
        yield info


def test_a_deploy_replaces_the_worker_with_a_container_on_the_release(target: TargetInfo) -> None:
    releases, drills_ = target.drills.releases, target.drills
    assert isinstance(releases, ContainerReleases)
    assert releases.workers == ("api-1", "api-2")
    candidate = releases.candidate()
    assert candidate is not None
    version = _version_of(candidate)
    control: Any = drills_.control["api-1"]
    old = control.container
    old.reload()
    old_attrs, pid = old.attrs, _processes(target)["api-1"]

    assert _deploy_elsewhere(releases, "api-1", candidate) == 0, "the old worker drained, exit 0"
    new = control.container
    new.reload()
    assert new.id != old.id
    assert new.name == old.name
    assert any(t.startswith(f"{RELEASE_REPOSITORY}:") for t in new.image.tags), new.image.tags
    for path, what in KEPT:
        assert _at(new.attrs, path) == _at(old_attrs, path), f"the new container's {what}"
    assert _own_labels(new.attrs) == _own_labels(old_attrs)
    networks = new.attrs["NetworkSettings"]["Networks"]
    assert set(networks) == set(old_attrs["NetworkSettings"]["Networks"])
    for name, network in networks.items():
        assert {"api-1", "api"} <= set(network["Aliases"] or ()), name

    # A new address behind the same name: the edge re-resolves it by itself (edge-entrypoint.sh).
    moved = {n for n, net in networks.items() if net["IPAddress"] != _ip(old_attrs, n)}
    assert moved == set(networks), "the new container has other addresses"
    # Its own address is the same published port; the edge routes to it once it is ready.
    url = target.drills.worker_urls["api-1"]
    assert _until(lambda: _status(f"{url}/v1/health/ready") == 200), "the new worker gets ready"
    assert _until(lambda: _runs(target, "api-1") == version), "the edge serves through it"
    edge_log = next(p for p in target.observability.log_files if p.name == "nginx-1.log")
    assert "upstream addresses changed" in edge_log.read_text(), "the edge reloaded itself"
    assert _processes(target)["api-1"] not in (None, pid), "processes follows the new container"
    assert drills_.restarts is not None
    assert drills_.restarts()["api-1"] == 0

    assert releases.deploy("api-1", None) == 0
    assert _until(lambda: _runs(target, "api-1") not in (None, version)), "back on the original"
    assert control.container.image.id == old.image.id


@pytest.mark.turns_red(
    "RB-EXECUTE",
    defect="A release candidate whose workers quit at once on SIGTERM, so rolling it back cuts "
    "requests in flight.",
)
def test_a_release_that_does_not_drain_fails_the_rollback_drill(target: TargetInfo) -> None:
    """A candidate whose workers quit at once on SIGTERM (CHATSDK_FAULTS' quit_on_sigterm, built
    into the release): rolling it back stops its workers with requests in flight."""
    releases = target.drills.releases
    assert releases is not None
    broken = dataclasses.replace(
        target, drills=dataclasses.replace(target.drills, releases=_NotDraining(releases))
    )
    decided = outcomes(drills(broken, ["test_rollout.py"], "rollback_restores or halted_rollout"))
    outcome, reason = decided["RB-EXECUTE"]
    assert outcome is Outcome.FAIL, decided
    assert "in flight" in reason or "must fail no request" in reason, reason
    assert decided["RB-STOP-ROLLOUT"][0] is Outcome.PASS, decided["RB-STOP-ROLLOUT"]


def test_an_edge_that_does_not_re_resolve_never_routes_to_the_new_container(
    target: TargetInfo,
) -> None:
    """The edge's own re-resolving is what routes to a replaced worker on a new address: with
    its loop stopped, NGINX keeps the old address, and the new worker, ready at its own address,
    gets no request through the edge. Last in this module: the edge stays without its loop."""
    releases = target.drills.releases
    assert isinstance(releases, ContainerReleases)
    nginx = target.drills.control["nginx"].container  # type: ignore[attr-defined]
    # The entrypoint's loop, by its command line ("[t]": not this shell's own).
    loop = nginx.exec_run(
        ["sh", "-c", "kill $(grep -l 'edge-entrypoin[t]' /proc/[0-9]*/cmdline | cut -d/ -f3)"]
    )
    assert loop.exit_code == 0, loop.output
    candidate = releases.candidate()
    assert candidate is not None
    assert _deploy_elsewhere(releases, "api-2", candidate) == 0
    url = target.drills.worker_urls["api-2"]
    assert _until(lambda: _status(f"{url}/v1/health/ready") == 200), "the new worker gets ready"
    version = _version_of(candidate)
    assert not _until(lambda: _runs(target, "api-2") == version, UNROUTED_S)
    releases.deploy("api-2", None)


def _deploy_elsewhere(releases: ContainerReleases, worker: str, release: Path | None) -> int | None:
    """`releases.deploy`, with another container taking the old one's addresses the moment they
    are free, so that the new one gets others (the engine hands a freed address out again) and
    the edge must resolve the worker's name anew to reach it."""
    old = releases.controls[worker].container
    old.reload()
    client = engine()
    squatting = dataclasses.replace(releases, replace=_squatter(client, old, releases.replace))
    try:
        return squatting.deploy(worker, release)
    finally:
        client.containers.get(f"{old.name}-squatter").remove(force=True)
        client.close()


@dataclasses.dataclass(frozen=True)
class _NotDraining:
    """The target's releases, with a candidate whose workers do not drain."""

    releases: ReleaseControl

    @property
    def workers(self) -> tuple[str, ...]:
        return self.releases.workers

    def deploy(self, worker: str, release: Path | None) -> int | None:
        return self.releases.deploy(worker, release)

    def candidate(self) -> Path | None:
        release = self.releases.candidate()
        assert release is not None
        faults = release / "chatsdk" / "faults.py"
        text = faults.read_text()
        assert "return parse(os.environ)\n" in text
        faults.write_text(
            text.replace(
                "return parse(os.environ)\n", "return parse(os.environ) | {QUIT_ON_SIGTERM}\n"
            )
        )
        return release


def _version_of(release: Path) -> str:
    match = re.search(r'__version__ = "([^"]+)"', (release / "chatsdk" / "version.py").read_text())
    assert match is not None
    return match[1]


def _runs(target: TargetInfo, worker_id: str) -> str | None:
    """The version `worker_id` reports through the edge (None: it did not answer)."""
    admin = ChatClient.for_target(target).as_admin(target.admin_key)
    for _ in range(16):
        response = admin.get("/v1/admin/runtime")
        if response.status == 200 and response.json()["worker_id"] == worker_id:
            return str(response.json()["version"])
    return None


def _processes(target: TargetInfo) -> dict[str, int]:
    assert target.drills.processes is not None
    return dict(target.drills.processes())


def _squatter(
    client: Any, old: Any, replace: Callable[[str, str], Any]
) -> Callable[[str, str], Any]:
    """`replace`, after a container of the run (removed with it) has joined the old container's
    networks."""

    def squat_then_replace(worker: str, image: str) -> Any:
        networks = list(old.attrs["NetworkSettings"]["Networks"])
        squatter = client.containers.run(
            old.image.id,
            ["sleep", "600"],
            entrypoint=[],
            detach=True,
            name=f"{old.name}-squatter",
            network=networks[0],
            labels={k: v for k, v in old.labels.items() if k in (RUN_LABEL, LAUNCHER_LABEL)},
        )
        for network in networks[1:]:
            client.networks.get(network).connect(squatter)
        return replace(worker, image)

    return squat_then_replace


def _ip(attrs: dict[str, Any], network: str) -> str:
    return str(attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


def _own_labels(attrs: dict[str, Any]) -> dict[str, str]:
    """The container's labels but its image's (which names the image built)."""
    return {k: v for k, v in attrs["Config"]["Labels"].items() if k != LABEL}


def _at(attrs: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        attrs = attrs.get(key) or {}
    return attrs


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except OSError:
        return None


def _until(condition: Callable[[], object], timeout: float = TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False

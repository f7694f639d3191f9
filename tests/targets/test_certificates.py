"""The edge certificate as the certificate items judge it: on the containers target, issued by
the run's ACME CA (pebble) to the compose file's certbot service and renewed on request while
the edge keeps serving (SEC-CERT-RENEWAL passes, the drill included; INF-NET-CERT verifies the
chain to pebble's root and the name, then skips: pebble's root is the run's, not one clients
trust); with an edge that does not reload, both items are red (the drill included); on the
native target, whose certificate the harness mints, the certificate probes skip and say why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from preflight.outcomes import Outcome
from preflight.targets.base import offered
from preflight.targets.containers import ContainersTarget
from preflight.targets.containers.engine import docker_available
from preflight.targets.containers.images import REPO_ROOT
from tests.checks.support import failing, native, outcomes, probe

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")

ITEMS = {"INF-NET-CERT", "SEC-CERT-RENEWAL"}
PROBES = (
    "infrastructure/test_network.py",
    "security/test_tls.py",
    "drills/test_certificate_renewal.py",
)
# SEC-CERT-RENEWAL's probes that read the repository, not the target (they pass on any target).
ARTEFACT_PROBES = ("compose_deployment_renews", "kubernetes_certificate")
DEPLOY = REPO_ROOT / "system" / "deploy"


def _require_docker() -> None:
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"


def test_the_containers_edge_serves_and_renews_what_its_acme_client_obtains() -> None:
    _require_docker()
    with ContainersTarget(timeout=600) as info:
        assert info.edge.url.startswith("https://localhost:")
        assert not info.edge.harness_certificate
        assert "cert_renewal" in offered(info)
        results = probe(info, *PROBES, items=ITEMS)
    decided = outcomes(results)
    outcome, reason = decided["INF-NET-CERT"]
    assert outcome is Outcome.SKIP, decided
    assert "verifies only to the root of the ACME CA this run started" in reason, reason
    assert decided["SEC-CERT-RENEWAL"][0] is Outcome.PASS, decided
    skipped = [r.nodeid for r in results.results if r.outcome is Outcome.SKIP]
    undecided = [n for n in skipped if "test_network.py" not in n]
    assert not undecided, f"every SEC-CERT-RENEWAL probe decides on this target: {undecided}"
    drill = next(r for r in results.results if "renewed_certificate" in r.nodeid)
    figures = {e["name"]: e["value"] for e in drill.evidence if e["kind"] == "figure"}
    assert "renewed_certificate_served_s" in figures, drill.evidence


def _compose_without_reload(folder: Path) -> Path:
    """system/deploy/docker-compose.yml whose edge does not reload a renewed certificate, in
    `folder` (its relative build contexts and mounts made absolute)."""
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    del doc["services"]["nginx"]["environment"]["CHATSDK_EDGE_CERT_WATCH"]
    text = yaml.safe_dump(doc, sort_keys=False)
    text = text.replace("context: ../..", f"context: {REPO_ROOT}")
    for mounted in ("./postgres/", "./logstore"):
        text = text.replace(mounted, f"{DEPLOY}/{mounted[2:]}")
    path = folder / "docker-compose.yml"
    path.write_text(text)
    return path


@pytest.mark.turns_red(
    "INF-NET-CERT",
    "SEC-CERT-RENEWAL",
    defect="The compose file's edge never reloads the certificate its ACME client obtains.",
)
def test_a_renewal_that_does_not_reach_nginx_turns_the_certificate_items_red(
    tmp_path: Path,
) -> None:
    """The edge never loads what certbot obtains: it keeps serving the self-signed bootstrap
    certificate (INF-NET-CERT: no chain to pebble's root; one day left), and a forced renewal
    changes nothing it serves (the drill)."""
    _require_docker()
    with ContainersTarget(timeout=600, compose_path=_compose_without_reload(tmp_path)) as info:
        results = probe(info, *PROBES, items=ITEMS)
    red = {
        r.nodeid.rsplit("::", 1)[1]: r.message for r in results.results if r.outcome is Outcome.FAIL
    }
    assert "must chain to" in red.get("test_the_certificate_chains_matches_and_is_current", ""), red
    assert "days left" in red.get("test_the_certificate_has_more_than_14_days_left", ""), red
    drill = red.get("test_a_renewed_certificate_is_served_without_refusing_connections", "")
    assert "the renewal does not reach the edge" in drill, red
    assert set(failing(results)) == ITEMS, outcomes(results)


def test_on_the_native_target_the_certificate_probes_skip_and_say_why() -> None:
    with native() as info:
        assert info.edge.harness_certificate
        results = probe(info, *PROBES, items=ITEMS)
    live = [r for r in results.results if not any(a in r.nodeid for a in ARTEFACT_PROBES)]
    assert live, [r.nodeid for r in results.results]
    for result in live:
        assert result.outcome is Outcome.SKIP, (result.nodeid, result.outcome)
        assert "the harness minted" in result.message, result.message
    assert outcomes(results)["INF-NET-CERT"][0] is Outcome.SKIP

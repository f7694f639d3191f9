"""SEC-CERT-RENEWAL's artefact probes (checks/security/test_tls.py) against deliberately broken
copies of the repository: a compose file without its ACME client, or whose edge does not reload
the renewed certificate, and a cluster Ingress whose certificate nothing issues, each turn the
item red. No live target is touched (the probes that need one are deselected)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from preflight.plugin import RunContext, run_probes
from tests.checks.support import CHECKLIST, CHECKS, failing, outcomes
from tests.checks.test_deploy_variants import NEVER_CONTACTED, broken_copy

ITEM = "SEC-CERT-RENEWAL"
ARTEFACT_PROBES = "compose_deployment_renews or kubernetes_certificate"


def judge(copy: Path) -> dict[str, str]:
    results = run_probes(
        [CHECKS / "security" / "test_tls.py"],
        RunContext(target=NEVER_CONTACTED, selected={ITEM}),
        CHECKLIST,
        extra_args=[f"--repo-dir={copy}", "-k", ARTEFACT_PROBES],
    )
    assert not results.errors, results.errors
    assert len(results.results) == 2, [r.nodeid for r in results.results]
    assert outcomes(results)[ITEM][0].value in ("pass", "fail"), outcomes(results)
    return failing(results)


def _without_certbot(text: str) -> str:
    doc = yaml.safe_load(text)
    del doc["services"]["certbot"]
    del doc["services"]["nginx"]["depends_on"]["certbot"]
    return yaml.safe_dump(doc, sort_keys=False)


def _edge_without_reload(text: str) -> str:
    doc = yaml.safe_load(text)
    del doc["services"]["nginx"]["environment"]["CHATSDK_EDGE_CERT_WATCH"]
    return yaml.safe_dump(doc, sort_keys=False)


def _renewed_weekly(text: str) -> str:
    return text.replace('CHATSDK_RENEW_EVERY: "43200"', 'CHATSDK_RENEW_EVERY: "604800"', 1)


def _ingress_without_issuer(text: str) -> str:
    return re.sub(r"(?m)^    cert-manager\.io/cluster-issuer: .*\n", "", text, count=1)


COMPOSE = "system/deploy/docker-compose.yml"
INGRESS = "system/deploy/k8s/80-ingress.yaml"


def test_the_repository_itself_automates_renewal(tmp_path: Path) -> None:
    assert judge(broken_copy(tmp_path, {})) == {}


@pytest.mark.turns_red(
    "SEC-CERT-RENEWAL", defect="A compose file without its ACME client service (certbot)."
)
def test_a_compose_file_without_the_renewal_service_is_red(tmp_path: Path) -> None:
    reason = judge(broken_copy(tmp_path, {COMPOSE: _without_certbot}))[ITEM]
    assert "must run an ACME client service" in reason


@pytest.mark.turns_red(
    "SEC-CERT-RENEWAL",
    defect="A compose edge that does not reload when the renewed certificate changes.",
)
def test_an_edge_that_does_not_reload_the_renewed_certificate_is_red(tmp_path: Path) -> None:
    reason = judge(broken_copy(tmp_path, {COMPOSE: _edge_without_reload}))[ITEM]
    assert "must reload when the renewed certificate changes" in reason


@pytest.mark.turns_red(
    "SEC-CERT-RENEWAL", defect="A certificate renewal scheduled weekly instead of at least daily."
)
def test_a_weekly_renewal_schedule_is_red(tmp_path: Path) -> None:
    reason = judge(broken_copy(tmp_path, {COMPOSE: _renewed_weekly}))[ITEM]
    assert "at least daily" in reason


@pytest.mark.turns_red(
    "SEC-CERT-RENEWAL",
    defect="A cluster Ingress whose certificate no cert-manager issuer issues or renews.",
)
def test_an_ingress_certificate_nothing_issues_is_red(tmp_path: Path) -> None:
    reason = judge(broken_copy(tmp_path, {INGRESS: _ingress_without_issuer}))[ITEM]
    assert "issued and renewed by cert-manager" in reason

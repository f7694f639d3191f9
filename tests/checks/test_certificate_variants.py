"""The certificate items against broken deployments.

SEC-CERT-RENEWAL's artefact probes (checks/security/test_tls.py) against deliberately broken
copies of the repository: a compose file without its ACME client, or whose edge does not reload
the renewed certificate, and a cluster Ingress whose certificate nothing issues, each turn the
item red. No live target is touched (the probes that need one are deselected).

INF-NET-CERT's probe (checks/infrastructure/test_network.py) against an edge rendered from
system/nginx whose target declares its own CA, as a target file's ca_file does: the edge serves a
certificate for another name, an expired one, or one whose CA the target does not declare (so
the system trust store judges it), and each turns the item red."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from preflight.outcomes import Outcome
from preflight.plugin import RunContext, run_probes
from preflight.targets.base import Edge, TargetInfo
from preflight.targets.procs import free_port
from tests.checks.support import CHECKLIST, CHECKS, failing, outcomes
from tests.checks.test_auth_variants import edge_for
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
    "SEC-CERT-RENEWAL",
    defect="The compose file has no ACME client service to renew the edge's certificate.",
)
def test_a_compose_file_without_the_renewal_service_is_red(tmp_path: Path) -> None:
    reason = judge(broken_copy(tmp_path, {COMPOSE: _without_certbot}))[ITEM]
    assert "must run an ACME client service" in reason


@pytest.mark.turns_red(
    "SEC-CERT-RENEWAL",
    defect="The compose file's edge does not reload when the renewed certificate changes.",
)
def test_an_edge_that_does_not_reload_the_renewed_certificate_is_red(tmp_path: Path) -> None:
    reason = judge(broken_copy(tmp_path, {COMPOSE: _edge_without_reload}))[ITEM]
    assert "must reload when the renewed certificate changes" in reason


@pytest.mark.turns_red(
    "SEC-CERT-RENEWAL", defect="The compose file's ACME client tries to renew only once a week."
)
def test_a_weekly_renewal_schedule_is_red(tmp_path: Path) -> None:
    reason = judge(broken_copy(tmp_path, {COMPOSE: _renewed_weekly}))[ITEM]
    assert "at least daily" in reason


@pytest.mark.turns_red(
    "SEC-CERT-RENEWAL", defect="The cluster Ingress's TLS certificate has no cert-manager issuer."
)
def test_an_ingress_certificate_nothing_issues_is_red(tmp_path: Path) -> None:
    reason = judge(broken_copy(tmp_path, {INGRESS: _ingress_without_issuer}))[ITEM]
    assert "issued and renewed by cert-manager" in reason


# --- INF-NET-CERT against an edge serving a broken certificate ---------------------------------

CHAIN = "INF-NET-CERT"


@contextmanager
def edge_serving(declare_ca: bool = True, **pki_options: Any) -> Iterator[TargetInfo]:
    """An edge whose certificate make_pki makes with `pki_options`, as a target that declares
    the CA that signed it as its own (declare_ca) or declares none (the system trust store)."""
    with edge_for(free_port(), **pki_options) as (url, http_url, ca_file):
        yield TargetInfo(
            name="certificate-variant",
            kind="external",
            edge=Edge(url, http_url=http_url, ca_file=ca_file if declare_ca else None),
            admin_key="unused",
        )


def chain_verdict(info: TargetInfo) -> tuple[Outcome, str]:
    results = run_probes(
        [CHECKS / "infrastructure" / "test_network.py"],
        RunContext(target=info, selected={CHAIN}),
        CHECKLIST,
    )
    assert not results.errors, results.errors
    return outcomes(results)[CHAIN]


@pytest.mark.native
def test_a_certificate_for_the_name_from_the_declared_ca_passes() -> None:
    with edge_serving() as info:
        outcome, reason = chain_verdict(info)
    assert outcome is Outcome.PASS, reason


@pytest.mark.native
@pytest.mark.turns_red(
    "INF-NET-CERT", defect="The edge serves a certificate issued for another host name."
)
def test_a_certificate_for_another_name_is_red() -> None:
    with edge_serving(hostnames=("chat.example.org",), ips=()) as info:
        outcome, reason = chain_verdict(info)
    assert outcome is Outcome.FAIL, reason
    assert "mismatch" in reason, reason


@pytest.mark.native
@pytest.mark.turns_red(
    "INF-NET-CERT", defect="The edge serves a certificate that expired ten days ago."
)
def test_an_expired_certificate_is_red() -> None:
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(days=100)
    with edge_serving(leaf_issued=issued) as info:
        outcome, reason = chain_verdict(info)
    assert outcome is Outcome.FAIL, reason
    assert "certificate has expired" in reason, reason


@pytest.mark.native
@pytest.mark.turns_red(
    "INF-NET-CERT",
    defect="The edge's certificate chains to a private CA that no system trust store holds.",
)
def test_a_chain_to_a_root_nobody_trusts_is_red() -> None:
    with edge_serving(declare_ca=False) as info:
        outcome, reason = chain_verdict(info)
    assert outcome is Outcome.FAIL, reason
    assert "this machine's system trust store" in reason, reason
    assert "self-signed certificate in certificate chain" in reason, reason

"""The artefact probes (system/deploy, system/docs/operations, CHANGELOG.md) against deliberately
broken copies of the repository: each defect turns exactly its items red and the reason names it.

The probes read the repository given by --repo-dir; no live target is touched (the two probes
of these items that need one, the worker-kill drill and pip-audit, are deselected), so the
target below is never contacted."""

from __future__ import annotations

import base64
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from preflight.cli import main as cli_main
from preflight.plugin import RunContext, run_probes
from preflight.targets.base import Edge, TargetInfo
from tests.checks.support import CHECKLIST, CHECKS, REPO, apply_edits, failing, outcomes

PROBES = [
    CHECKS / "infrastructure" / "test_k8s.py",
    CHECKS / "deployment" / "test_artefacts.py",
    CHECKS / "operations",
]
ARTEFACT_ITEMS = {
    "INF-K8S-PDB",
    "INF-K8S-NETPOL",
    "INF-K8S-QUOTA",
    "PERF-AUTOSCALE",
    "PERF-RESOURCE-LIMITS",
    "DEP-STRATEGY-ROLLING",
    "APP-IMAGES-PUBLISHED",
    "APP-SUPERVISED",
    "DEP-SECURITY-SCAN",
    "SEC-SECRETS-NOT-IN-CODE",
    "DEP-ROLLBACK-DOC",
    "BAK-DR-PLAN",
    "OPS-RUNBOOK-COMMON",
    "OPS-TROUBLESHOOTING",
    # Their live probes and drills live elsewhere; here the artefacts decide them.
    "BAK-DB-DAILY",  # the compose deployment schedules daily backups
    "DEP-ZERO-DOWNTIME",
    "SEC-HDR-HSTS",
    "SEC-HDR-NOSNIFF",
    "SEC-HDR-CSP",
    "SEC-HDR-FRAME",
    "SEC-HDR-REFERRER",
}
LIVE_PROBES = "not killed_api_worker and not release_dependencies"
NEVER_CONTACTED = TargetInfo(
    name="artefacts-only", kind="external", edge=Edge("https://127.0.0.1:9"), admin_key="unused"
)

Edit = Callable[[str], str]


def broken_copy(tmp: Path, edits: dict[str, Edit]) -> Path:
    """The repository's files (tracked and untracked-not-ignored) in a fresh git work tree, with
    each named file passed through its edit; an edit that changes nothing raises."""
    copy = tmp / "repo"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    subprocess.run(["git", "init", "-q", str(copy)], check=True, timeout=30)
    return apply_edits(copy, edits)


def judge(copy: Path) -> dict[str, str]:
    results = run_probes(
        PROBES,
        RunContext(target=NEVER_CONTACTED, selected=ARTEFACT_ITEMS),
        CHECKLIST,
        extra_args=[f"--repo-dir={copy}", "-k", LIVE_PROBES],
    )
    assert not results.errors, results.errors
    decided = outcomes(results)
    assert set(decided) == ARTEFACT_ITEMS, sorted(ARTEFACT_ITEMS - set(decided))
    not_decided = {i: r for i, (o, r) in decided.items() if o.value in ("error", "skip")}
    assert not not_decided, not_decided
    return failing(results)


def drop_yaml_block(key: str, count: int = 1) -> Edit:
    """Remove the first `count` blocks `key:` (with their deeper-indented lines)."""

    def edit(text: str) -> str:
        return re.sub(rf"(?m)^( *){key}:.*\n(?:\1 .*\n)*", "", text, count=count)

    return edit


def test_the_repository_itself_passes_every_artefact_item(tmp_path: Path) -> None:
    assert judge(broken_copy(tmp_path, {})) == {}


def _without_probes(text: str) -> str:
    return drop_yaml_block("readinessProbe")(drop_yaml_block("livenessProbe")(text))


def _nginx_without_healthcheck(text: str) -> str:
    return re.sub(
        r"(?s)(\n  nginx:\n.*?)\n    healthcheck:\n(?:      [^\n]*\n)+", r"\1\n", text, count=1
    )


def _secret_in_config(text: str) -> str:
    return text.replace(
        "  CHATSDK_LOG_LEVEL: INFO\n",
        f'  CHATSDK_LOG_LEVEL: INFO\n  CHATSDK_JWT_SECRET: "{secrets.token_hex(32)}"\n',
        1,
    )


def _private_key_beside_the_public_ones(text: str) -> str:
    """A key registry whose entry carries a private key too: the exemption is for public keys
    and signatures only."""
    seed = base64.b64encode(secrets.token_bytes(32)).decode()
    return re.sub(r"(?m)^(  public_key: .*)$", rf"\1\n  private_key: {seed}", text, count=1)


def _postgres_without_restart_and_no_backup_service(text: str) -> str:
    """The compose file with postgres's restart policy gone and the backup service dropped."""
    doc = yaml.safe_load(text)
    del doc["services"]["postgres"]["restart"]
    del doc["services"]["backup"]
    return yaml.safe_dump(doc, sort_keys=False)


def _postgres_open_to_minio(text: str) -> str:
    return text.replace(
        "[api, realtime]}\n      ports:\n        - {protocol: TCP, port: 5432}",
        "[api, realtime, minio]}\n      ports:\n        - {protocol: TCP, port: 5432}",
    )


# Each variant seeds several defects whose items do not overlap (one copy and one probe run per
# variant, not one per defect; detect-secrets alone takes seconds); every defect must turn
# exactly its own items red, with a reason naming it.
VARIANTS = [
    pytest.param(
        {
            "system/deploy/k8s/60-api.yaml": _without_probes,
            "system/deploy/k8s/70-hpa.yaml": lambda t: t.replace(
                "maxReplicas: 10", "maxReplicas: 2"
            ),
            "system/deploy/Dockerfile": lambda t: t.replace("USER 10001:10001", "USER root"),
            "system/deploy/k8s/30-config.yaml": _secret_in_config,
            "system/deploy/k8s/71-pdb.yaml": lambda t: t.split("---")[1],
            "system/docs/operations/rollback.md": lambda t: t.replace(
                "rollout undo", "rollout restart"
            ),
        },
        {
            "APP-SUPERVISED": "livenessProbe",
            "DEP-STRATEGY-ROLLING": "readiness",
            "DEP-ZERO-DOWNTIME": "must probe readiness",
            "PERF-AUTOSCALE": "got 3..2",
            "DEP-SECURITY-SCAN": "DL3002",
            "SEC-SECRETS-NOT-IN-CODE": "30-config.yaml",
            "INF-K8S-PDB": "Deployment/api",
            "DEP-ROLLBACK-DOC": "rollout undo",
        },
        marks=pytest.mark.turns_red(
            "APP-SUPERVISED",
            "DEP-STRATEGY-ROLLING",
            "DEP-ZERO-DOWNTIME",
            "PERF-AUTOSCALE",
            "DEP-SECURITY-SCAN",
            "SEC-SECRETS-NOT-IN-CODE",
            "INF-K8S-PDB",
            "DEP-ROLLBACK-DOC",
            defect="Cluster manifests without liveness or readiness probes, an autoscaler capped "
            "at 2 replicas, an API image that runs as root, a JWT secret in the ConfigMap, "
            "no PodDisruptionBudget for the API and a rollback doc without rollout undo.",
        ),
        id="no-probes-hpa-max-2-root-image-secret-in-config-no-pdb-rollback-doc-without-undo",
    ),
    pytest.param(
        {
            "system/deploy/k8s/60-api.yaml": lambda t: drop_yaml_block("resources")(
                t.replace("terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 15")
            ),
            "system/deploy/docker-compose.yml": _nginx_without_healthcheck,
            "system/deploy/k8s/50-networkpolicy.yaml": _postgres_open_to_minio,
            "signoff/keys.yaml": _private_key_beside_the_public_ones,
        },
        {
            "SEC-SECRETS-NOT-IN-CODE": "signoff/keys.yaml",
            "PERF-RESOURCE-LIMITS": "Deployment/api",
            "DEP-STRATEGY-ROLLING": "compose service nginx must define a healthcheck",
            "INF-K8S-NETPOL": "minio",
            "DEP-ZERO-DOWNTIME": "terminationGracePeriodSeconds must exceed",
        },
        marks=pytest.mark.turns_red(
            "SEC-SECRETS-NOT-IN-CODE",
            "PERF-RESOURCE-LIMITS",
            "DEP-STRATEGY-ROLLING",
            "INF-K8S-NETPOL",
            "DEP-ZERO-DOWNTIME",
            defect="An API Deployment without resource limits and a 15 s grace period, a compose "
            "edge without a healthcheck, a NetworkPolicy that opens PostgreSQL to minio and "
            "a private key in signoff/keys.yaml.",
        ),
        id="no-resources-short-grace-compose-without-healthcheck-postgres-open-to-minio-private-key",
    ),
    pytest.param(
        {
            "system/deploy/k8s/61-realtime.yaml": drop_yaml_block("lifecycle"),
            "system/deploy/k8s/80-ingress.yaml": lambda t: re.sub(
                r"(?m)^  Strict-Transport-Security: .*\n", "", t
            ).replace("X-Frame-Options: DENY", "X-Frame-Options: SAMEORIGIN"),
            # The bundled edge's policy changes and the Ingress's does not: they disagree.
            "system/nginx/security/headers.conf": lambda t: t.replace(
                "default-src 'none'; frame-ancestors",
                "default-src 'none'; img-src 'self'; frame-ancestors",
            ),
        },
        {
            "DEP-ZERO-DOWNTIME": "Deployment/realtime",
            "SEC-HDR-HSTS": "got nothing",
            "SEC-HDR-FRAME": "got SAMEORIGIN",
            "SEC-HDR-CSP": "img-src 'self'",
        },
        marks=pytest.mark.turns_red(
            "DEP-ZERO-DOWNTIME",
            "SEC-HDR-HSTS",
            "SEC-HDR-FRAME",
            "SEC-HDR-CSP",
            defect="A realtime Deployment without its preStop hook, and an Ingress without HSTS, "
            "with X-Frame-Options SAMEORIGIN and a CSP that differs from the edge's.",
        ),
        id="realtime-without-prestop-ingress-without-hsts-framable-csp-drifted",
    ),
    pytest.param(
        {"system/deploy/docker-compose.yml": _postgres_without_restart_and_no_backup_service},
        {
            "APP-SUPERVISED": "compose service postgres must restart on failure",
            "BAK-DB-DAILY": "must run a scheduled backup service",
        },
        marks=pytest.mark.turns_red(
            "APP-SUPERVISED",
            "BAK-DB-DAILY",
            defect="A compose file whose PostgreSQL has no restart policy and which runs no backup "
            "service.",
        ),
        id="compose-postgres-without-restart-no-backup-service",
    ),
]


@pytest.mark.parametrize(("edits", "expected"), VARIANTS)
def test_defects_turn_exactly_their_items_red(
    tmp_path: Path, edits: dict[str, Edit], expected: dict[str, str]
) -> None:
    red = judge(broken_copy(tmp_path, edits))
    assert set(red) == set(expected), red
    for item, words in expected.items():
        assert words in red[item], red[item]


def test_registering_a_key_as_the_signing_doc_says_keeps_the_secrets_scan_green(
    tmp_path: Path,
) -> None:
    """docs/signing-off.md's `keygen --register`, word for word (into a copy of the repository):
    the public key it adds to signoff/keys.yaml is published on purpose, not a secret."""
    copy = broken_copy(tmp_path, {})
    doc = (REPO / "docs/signing-off.md").read_text()
    command = next(line for line in doc.splitlines() if "keygen" in line and "--register" in line)
    args = shlex.split(command.replace("~/.config/preflight", str(tmp_path)))[1:]
    assert args[:2] == ["keygen", "--out"], command
    keys = copy / "signoff" / "keys.yaml"
    before = keys.read_text()
    assert cli_main([*args, "--keys", str(keys)]) == 0
    assert keys.read_text() != before, "the key is registered in the copy"
    assert not (copy / "cto.pem").exists()
    red = judge(copy)
    assert "SEC-SECRETS-NOT-IN-CODE" not in red, red

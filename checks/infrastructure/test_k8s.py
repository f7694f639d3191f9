"""The Kubernetes manifests in system/deploy/k8s: schema-valid (kubernetes-validate --strict) and
semantically what the items ask: disruption budget, network isolation of the data stores,
namespace quotas, the API's autoscaling policy, API pods that leave the endpoints before they
drain, and an Ingress that sends the bundled edge's security headers."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from checks.deployment._artefacts import (
    API_COMPONENTS,
    Manifest,
    Repo,
    api_deployments,
    manifests,
    of_kind,
    pod_labels,
    selects,
    valid,
)
from preflight.evidence import EvidenceLog

# The autoscaling policy of the original ChatSDK Kubernetes guide (the document that came with
# the checklist): 3..10 pods at 70 % CPU or 80 % memory, fast up, slow down.
HPA_MIN, HPA_MAX = 3, 10
HPA_TARGETS = {"cpu": 70, "memory": 80}
SCALE_UP = {"stabilizationWindowSeconds": 60, "selectPolicy": "Max"}
SCALE_UP_POLICIES = [("Percent", 100, 60), ("Pods", 2, 60)]
SCALE_DOWN = {"stabilizationWindowSeconds": 300}
SCALE_DOWN_POLICIES = [("Percent", 50, 60)]
READY_PATH = "/v1/health/ready"
# The API drains within 15 s of SIGTERM (system/chatsdk/README.md: exit 1 when the drain
# overran 15 s); a pod's grace period must hold the preStop sleep and that.
DRAIN_BUDGET_S = 15
# The bundled edge's security headers: what the Ingress must send too (the API's policy).
EDGE_HEADER_FILES = ("system/nginx/security/baseline.conf", "system/nginx/security/headers.conf")
ADD_HEADER = re.compile(r'(?m)^\s*add_header\s+([A-Za-z-]+)\s+"([^"]*)"\s+always\s*;')
CUSTOM_HEADERS = "nginx.ingress.kubernetes.io/custom-headers"


def _selected_by(manifest: Manifest, selector: dict[str, Any]) -> bool:
    return selects(selector, pod_labels(manifest))


@pytest.mark.checklist("INF-K8S-PDB")
def test_a_disruption_budget_keeps_an_api_replica_up(repo: Repo, evidence: EvidenceLog) -> None:
    """Node drains can otherwise evict every API replica at once."""
    budgets = valid(of_kind(repo.k8s, "PodDisruptionBudget"), "a PodDisruptionBudget")
    for deployment in valid(api_deployments(repo.k8s), "the API Deployment"):
        replicas = int(deployment.doc["spec"].get("replicas", 1))
        covering = [b for b in budgets if _selected_by(deployment, b.doc["spec"]["selector"])]
        assert covering, (
            f"a PodDisruptionBudget must select the pods of {deployment.ref} (none does)"
        )
        for budget in covering:
            spec = budget.doc["spec"]
            evidence.note(f"{budget.ref}: {spec} for {deployment.ref} ({replicas} replicas)")
            if "minAvailable" in spec:
                kept = int(str(spec["minAvailable"]).rstrip("%") or 0)
                kept = (
                    -(-kept * replicas // 100) if str(spec["minAvailable"]).endswith("%") else kept
                )
                assert 1 <= kept < replicas, (
                    f"{budget.ref} minAvailable must keep at least 1 and fewer than all "
                    f"{replicas} replicas of {deployment.ref} (got {spec['minAvailable']})"
                )
            else:
                gone = str(spec.get("maxUnavailable", ""))
                lost = (
                    -(-int(gone.rstrip("%")) * replicas // 100)
                    if gone.endswith("%")
                    else int(gone or 0)
                )
                assert 1 <= lost < replicas, (
                    f"{budget.ref} maxUnavailable must let 1 to {replicas - 1} of the "
                    f"{replicas} replicas of {deployment.ref} go (got {gone or 'nothing'})"
                )


@pytest.mark.checklist("INF-K8S-NETPOL")
@pytest.mark.parametrize("store", ["postgres", "redis"])
def test_only_the_api_reaches_the_data_store(repo: Repo, evidence: EvidenceLog, store: str) -> None:
    """A flat network lets any compromised pod reach the data stores."""
    policies = valid(of_kind(repo.k8s, "NetworkPolicy"), "a NetworkPolicy")
    pods = [m for m in manifests(repo.k8s) if m.pod_spec and m.component == store]
    assert pods, f"the Kubernetes manifests must run {store} (no workload has component {store})"
    deny_all = [
        p
        for p in policies
        if p.doc["spec"].get("podSelector") == {}
        and "Ingress" in p.doc["spec"].get("policyTypes", [])
        and not p.doc["spec"].get("ingress")
    ]
    assert deny_all, "a default-deny ingress NetworkPolicy (podSelector {}, no rules) must exist"
    for workload in pods:
        applying = [p for p in policies if _selected_by(workload, p.doc["spec"]["podSelector"])]
        for policy in applying:
            for rule in policy.doc["spec"].get("ingress") or []:
                sources = rule.get("from")
                assert sources, f"{policy.ref} must name who may reach {store} (it allows everyone)"
                for source in sources:
                    outside = "ipBlock" in source or "namespaceSelector" in source
                    assert not outside, (
                        f"{policy.ref} must admit only API pods to {store} (it admits {source})"
                    )
                    # The store's own pods may reach each other: a standby streams from its
                    # primary (either may be the primary after a failover).
                    allowed = _components(source.get("podSelector", {}))
                    only_api = bool(allowed) and allowed <= API_COMPONENTS | {store}
                    assert only_api, (
                        f"{policy.ref} must admit only API pods (and its own replicas) to "
                        f"{store} (it admits components {sorted(allowed) or 'all'})"
                    )
                evidence.note(f"{policy.ref} admits {rule.get('from')} on {rule.get('ports')}")


def _components(selector: dict[str, Any]) -> set[str]:
    """Which component labels a pod selector can match (empty: it matches any component)."""
    labels = selector.get("matchLabels") or {}
    if "app.kubernetes.io/component" in labels:
        return {labels["app.kubernetes.io/component"]}
    for expr in selector.get("matchExpressions") or []:
        if expr["key"] == "app.kubernetes.io/component" and expr["operator"] == "In":
            return set(expr["values"])
    return set()


@pytest.mark.checklist("INF-K8S-QUOTA")
@pytest.mark.parametrize("kind", ["ResourceQuota", "LimitRange"])
def test_the_namespace_is_bounded(repo: Repo, evidence: EvidenceLog, kind: str) -> None:
    """Without quotas one deployment can consume a shared cluster."""
    namespaces = {m.name for m in of_kind(repo.k8s, "Namespace")}
    assert namespaces, "the Kubernetes manifests must define the namespace (found none)"
    found = valid(of_kind(repo.k8s, kind), f"a {kind}")
    covered = {m.doc["metadata"].get("namespace") for m in found}
    assert namespaces <= covered, (
        f"every namespace {sorted(namespaces)} must have a {kind} (got {sorted(covered)})"
    )
    for m in found:
        spec = m.doc["spec"]
        if kind == "ResourceQuota":
            hard = spec.get("hard", {})
            missing = [
                k
                for k in ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory")
                if k not in hard
            ]
            assert not missing, f"{m.ref} must bound CPU and memory (missing {', '.join(missing)})"
        else:
            limits = [lim for lim in spec.get("limits", []) if lim.get("type") == "Container"]
            defaults = bool(limits) and all(
                {"cpu", "memory"} <= set(lim.get("default", {})) for lim in limits
            )
            assert defaults, (
                f"{m.ref} must give containers default CPU and memory limits "
                f"(got {spec.get('limits')})"
            )
        evidence.note(f"{m.ref}: {spec}")


@pytest.mark.checklist("PERF-AUTOSCALE")
def test_the_api_autoscales_3_to_10(repo: Repo, evidence: EvidenceLog) -> None:
    """Fixed capacity either wastes money or falls over at peak."""
    hpas = valid(of_kind(repo.k8s, "HorizontalPodAutoscaler"), "a HorizontalPodAutoscaler")
    api = valid(
        [m for m in api_deployments(repo.k8s) if m.component == "api"], "the API Deployment"
    )
    name = api[0].name
    scaling = [h for h in hpas if h.doc["spec"]["scaleTargetRef"].get("name") == name]
    assert scaling, f"a HorizontalPodAutoscaler must scale Deployment/{name} (none does)"
    hpa = scaling[0]
    spec = hpa.doc["spec"]
    evidence.note(f"{hpa.ref}: {spec}")
    bounds = (spec.get("minReplicas", 1), spec["maxReplicas"])
    assert bounds == (HPA_MIN, HPA_MAX), (
        f"{hpa.ref} must scale between {HPA_MIN} and {HPA_MAX} replicas "
        f"(got {bounds[0]}..{bounds[1]})"
    )
    targets = {
        m["resource"]["name"]: m["resource"]["target"].get("averageUtilization")
        for m in spec.get("metrics", [])
        if m.get("type") == "Resource"
    }
    assert targets == HPA_TARGETS, f"{hpa.ref} must target CPU 70 % and memory 80 % (got {targets})"
    behavior = spec.get("behavior", {})
    for direction, fields, policies in (
        ("scaleUp", SCALE_UP, SCALE_UP_POLICIES),
        ("scaleDown", SCALE_DOWN, SCALE_DOWN_POLICIES),
    ):
        rules = behavior.get(direction, {})
        got = {k: rules.get(k) for k in fields}
        assert got == fields, f"{hpa.ref} {direction} must be {fields} (got {got})"
        have = sorted(
            (p["type"], p["value"], p["periodSeconds"]) for p in rules.get("policies", [])
        )
        assert have == sorted(policies), (
            f"{hpa.ref} {direction} policies must be {policies} (got {have})"
        )


# -- DEP-ZERO-DOWNTIME: API pods leave the endpoints before they drain ------------------------


def _pre_stop_sleep(pre_stop: dict[str, Any] | None) -> float | None:
    """The seconds a preStop hook sleeps: the sleep action, or `sleep N` run by exec."""
    if not pre_stop:
        return None
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"].get("seconds", 0))
    command = pre_stop.get("exec", {}).get("command") or []
    words = shlex.split(command[-1]) if command[:1] in (["sh"], ["/bin/sh"]) else command
    if len(words) == 2 and words[0].rsplit("/", 1)[-1] == "sleep":
        try:
            return float(words[1])
        except ValueError:
            return None
    return None


@pytest.mark.checklist("DEP-ZERO-DOWNTIME")
def test_api_pods_leave_the_endpoints_before_they_drain(repo: Repo, evidence: EvidenceLog) -> None:
    """A pod that gets SIGTERM while the ingress still routes to it drops requests."""
    for deployment in valid(api_deployments(repo.k8s), "the API Deployment"):
        grace = float(deployment.pod_spec.get("terminationGracePeriodSeconds", 30))
        for container in deployment.pod_spec.get("containers", []):
            name = container.get("name")
            pre_stop = container.get("lifecycle", {}).get("preStop")
            sleep_s = _pre_stop_sleep(pre_stop)
            ready = container.get("readinessProbe", {}).get("httpGet", {}).get("path")
            evidence.note(
                f"{deployment.ref} container {name}: preStop {pre_stop}, readiness {ready}, "
                f"terminationGracePeriodSeconds {grace:g}"
            )
            assert sleep_s, (
                f"{deployment.ref} container {name} must sleep in a preStop hook so the pod "
                f"leaves the endpoints before SIGTERM (got {pre_stop or 'no preStop'})"
            )
            assert ready == READY_PATH, (
                f"{deployment.ref} container {name} must probe readiness on {READY_PATH}, which "
                f"answers 503 while the worker drains (got {ready or 'no readiness probe'})"
            )
            assert grace > sleep_s + DRAIN_BUDGET_S, (
                f"{deployment.ref} terminationGracePeriodSeconds must exceed the preStop sleep "
                f"and the API's {DRAIN_BUDGET_S} s drain ({sleep_s:g} + {DRAIN_BUDGET_S}; got "
                f"{grace:g})"
            )


# -- SEC-HDR-*: the Ingress sends the bundled edge's security headers -------------------------


def edge_headers(root: Path) -> dict[str, str]:
    """The security headers the bundled NGINX edge adds to API responses, name -> value."""
    found: dict[str, str] = {}
    for relative in EDGE_HEADER_FILES:
        found.update(ADD_HEADER.findall((root / relative).read_text()))
    if not found:
        raise RuntimeError(f"no add_header with a fixed value in {', '.join(EDGE_HEADER_FILES)}")
    return found


def ingress_headers(repo: Repo, ingress: Manifest) -> tuple[str, dict[str, str]]:
    """Where the Ingress takes its response headers from (the custom-headers annotation's
    ConfigMap) and the headers it holds; ("", {}) without the annotation."""
    ref = str(ingress.doc.get("metadata", {}).get("annotations", {}).get(CUSTOM_HEADERS, ""))
    if not ref:
        return "", {}
    namespace, _, name = ref.rpartition("/")
    namespace = namespace or str(ingress.doc.get("metadata", {}).get("namespace", "default"))
    for config in of_kind(repo.k8s, "ConfigMap"):
        meta = config.doc.get("metadata", {})
        if meta.get("name") == name and meta.get("namespace", "default") == namespace:
            return config.ref, {str(k): str(v) for k, v in (config.doc.get("data") or {}).items()}
    return f"ConfigMap/{name} (not in the manifests)", {}


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Strict-Transport-Security", marks=pytest.mark.checklist("SEC-HDR-HSTS")),
        pytest.param("X-Content-Type-Options", marks=pytest.mark.checklist("SEC-HDR-NOSNIFF")),
        pytest.param("Content-Security-Policy", marks=pytest.mark.checklist("SEC-HDR-CSP")),
        pytest.param("X-Frame-Options", marks=pytest.mark.checklist("SEC-HDR-FRAME")),
        pytest.param("Referrer-Policy", marks=pytest.mark.checklist("SEC-HDR-REFERRER")),
    ],
)
def test_the_ingress_sends_the_edges_security_header(
    repo: Repo, evidence: EvidenceLog, header: str
) -> None:
    """A header the bundled edge sends and the Ingress does not is missing in production."""
    expected = edge_headers(repo.root).get(header)
    if expected is None:
        raise RuntimeError(f"the bundled edge ({', '.join(EDGE_HEADER_FILES)}) sets no {header}")
    for ingress in valid(of_kind(repo.k8s, "Ingress"), "an Ingress"):
        source, headers = ingress_headers(repo, ingress)
        got = headers.get(header)
        evidence.note(f"{ingress.ref}: {header} from {source or 'nowhere'}: {got!r}")
        assert got == expected, (
            f"{ingress.ref} must send {header}: {expected} as the bundled edge does "
            f"({', '.join(EDGE_HEADER_FILES)}); got {got or 'nothing'} "
            f"(from {source or f'no {CUSTOM_HEADERS} annotation'})"
        )

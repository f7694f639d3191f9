"""Operator access in the Kubernetes manifests (system/deploy/k8s): the namespace is operated by
people through their own accounts, bound by group or user, with no shared account, no service
account bound for people and no cluster-admin. The security lead attests the groups' members."""

from __future__ import annotations

import re

import pytest

from checks.deployment._artefacts import Manifest, Repo, manifests, valid
from preflight.evidence import EvidenceLog

BINDINGS = ("RoleBinding", "ClusterRoleBinding")
# Names of accounts many people share; a person's account is theirs alone.
SHARED = re.compile(r"^(?:admin|administrator|root|ops|dev|devops|oncall|shared|team|support)$")


def _subjects(binding: Manifest) -> list[dict[str, str]]:
    return list(binding.doc.get("subjects") or [])


@pytest.mark.checklist("OPS-ACCESS")
def test_people_reach_the_namespace_through_personal_accounts(
    repo: Repo, evidence: EvidenceLog
) -> None:
    """Shared or excess access cannot be audited, and missing access delays fixes."""
    bindings = valid([m for m in manifests(repo.k8s) if m.kind in BINDINGS], "RBAC bindings")
    problems: list[str] = []
    people = 0
    for binding in bindings:
        role = binding.doc.get("roleRef") or {}
        if role.get("name") == "cluster-admin":
            problems.append(f"{binding.ref} grants cluster-admin")
        for subject in _subjects(binding):
            kind, name = subject.get("kind"), str(subject.get("name", ""))
            if kind == "ServiceAccount":
                problems.append(f"{binding.ref} binds the service account {name}, not a person")
            elif SHARED.match(name.split("@", 1)[0].lower()):
                problems.append(f"{binding.ref} binds the shared account {kind} {name}")
            else:
                people += 1
        if not _subjects(binding):
            problems.append(f"{binding.ref} binds no one")
    evidence.note(f"{len(bindings)} bindings: {[(b.ref, _subjects(b)) for b in bindings]}")
    assert not problems, "; ".join(problems)
    assert people, "no binding gives people (a User or Group) access to the namespace"

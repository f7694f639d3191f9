"""The operations docs in system/docs/operations: a rollback procedure, a disaster-recovery plan,
runbooks for the common failures and a troubleshooting guide, each naming commands that exist."""

from __future__ import annotations

import re

import pytest

from checks.deployment._artefacts import Repo
from checks.operations._docs import Doc, commands, dangling, read
from preflight.evidence import EvidenceLog

COMMON_FAILURES = ("database down", "redis down", "disk full", "certificate expiry")
MIN_SYMPTOMS = 5


def _sections(doc: Doc, wanted: tuple[str, ...], evidence: EvidenceLog) -> None:
    __tracebackhide__ = True
    titles = list(doc.sections())
    evidence.note(f"{doc.path.name} sections: {titles}")
    missing = [w for w in wanted if not doc.section(w).strip()]
    assert not missing, (
        f"{doc.path.name} must have sections on {', '.join(wanted)} (missing {', '.join(missing)})"
    )


def _names(doc: Doc, where: str, pattern: str, what: str) -> None:
    __tracebackhide__ = True
    found = [c for c in commands(doc.section(where)) if re.search(pattern, c)]
    assert found, (
        f"{doc.path.name} section '{where}' must give the command that {what} "
        f"(none matches {pattern})"
    )


def _references_exist(repo: Repo, doc: Doc) -> None:
    __tracebackhide__ = True
    missing = dangling(repo, doc)
    assert not missing, (
        f"{doc.path.name} must name only commands and paths that exist "
        f"(missing {', '.join(missing)})"
    )


@pytest.mark.checklist("DEP-ROLLBACK-DOC")
def test_the_rollback_procedure_names_its_commands(repo: Repo, evidence: EvidenceLog) -> None:
    """Without a written rollback, a bad deploy stays live while people search for the steps."""
    doc = read(repo, "rollback.md")
    _sections(doc, ("decide", "roll back", "verify"), evidence)
    _names(
        doc, "roll back", r"kubectl .*rollout undo", "returns Kubernetes to the previous release"
    )
    _names(doc, "roll back", r"docker compose .*up", "redeploys the previous image on Compose")
    _names(doc, "verify", r"preflight run", "verifies the restored release")
    _references_exist(repo, doc)


@pytest.mark.checklist("BAK-DR-PLAN")
def test_the_disaster_recovery_plan_has_restore_failover_and_contacts(
    repo: Repo, evidence: EvidenceLog
) -> None:
    """In a disaster, people improvise without a written plan."""
    doc = read(repo, "disaster-recovery.md")
    _sections(doc, ("contacts", "restore", "failover", "verify"), evidence)
    _names(doc, "restore", r"pg_restore|pgbackrest .*restore", "restores PostgreSQL")
    _names(doc, "failover", r"pg_promote|pg_ctl promote", "promotes the replica")
    roles = re.findall(r"\b(on-call|ops lead|dev lead|security lead)\b", doc.section("contacts"))
    assert roles, (
        "disaster-recovery.md section 'contacts' must name who to escalate to (it names no role)"
    )
    _references_exist(repo, doc)


@pytest.mark.checklist("OPS-RUNBOOK-COMMON")
@pytest.mark.parametrize("failure", COMMON_FAILURES)
def test_a_runbook_covers_the_common_failure(
    repo: Repo, evidence: EvidenceLog, failure: str
) -> None:
    """Without runbooks every incident is solved from scratch."""
    doc = read(repo, "runbooks.md")
    _sections(doc, (failure,), evidence)
    steps = commands(doc.section(failure))
    evidence.figure("commands", len(steps))
    assert steps, (
        f"runbooks.md section '{failure}' must give commands to confirm and fix it (it gives none)"
    )
    _references_exist(repo, doc)


@pytest.mark.checklist("OPS-TROUBLESHOOTING")
def test_every_symptom_maps_to_a_command(repo: Repo, evidence: EvidenceLog) -> None:
    """On-call engineers lose time guessing where to look."""
    doc = read(repo, "troubleshooting.md")
    rows = [r for r in doc.text.splitlines() if r.startswith("|") and not set(r) <= set("|- ")]
    symptoms = rows[1:]  # the first row is the header
    evidence.figure("symptoms", len(symptoms))
    assert len(symptoms) >= MIN_SYMPTOMS, (
        f"troubleshooting.md must map at least {MIN_SYMPTOMS} symptoms to checks "
        f"(got {len(symptoms)})"
    )
    bare = [r.split("|")[1].strip() for r in symptoms if "`" not in r.split("|")[2]]
    assert not bare, (
        f"troubleshooting.md symptom '{bare[0]}' must name a command that diagnoses it (none)"
    )
    _references_exist(repo, doc)

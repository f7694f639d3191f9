"""Escalation and incident response: a policy in system/docs/operations/escalation.yaml for every
severity the alert rules use, and a written incident response plan with roles, severities and
communication, linked from the runbooks. The ops lead attests that the teams agreed to them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from checks.deployment._artefacts import Repo
from checks.operations._docs import Doc
from checks.operations._records import ROLES, accountable, linked_from, load_yaml
from preflight.evidence import EvidenceLog

POLICY = "escalation.yaml"
PLAN = "incident-response.md"
ROTA_POSITIONS = ("rota:primary", "rota:secondary")


def alert_severities(repo: Repo) -> set[str]:
    """The `severity` labels of every alert rule the deployment ships."""
    path = repo.root / "system" / "monitoring" / "alerts.yml"
    rules = yaml.safe_load(path.read_text())
    return {
        str(rule["labels"]["severity"])
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule and "severity" in (rule.get("labels") or {})
    }


@pytest.mark.checklist("OPS-ESCALATION")
def test_every_alert_severity_has_an_escalation_policy(repo: Repo, evidence: EvidenceLog) -> None:
    """Incidents stall when nobody knows who to call next, or after how long."""
    policies = load_yaml(repo, POLICY).get("severities") or {}
    used = alert_severities(repo)
    evidence.note(f"alert severities {sorted(used)}; {POLICY} covers {sorted(policies)}")
    missing = sorted(used - set(policies))
    assert not missing, (
        f"{POLICY} must have a policy for every alert severity in system/monitoring/alerts.yml "
        f"(missing {', '.join(missing)})"
    )
    known = {*ROTA_POSITIONS, *(f"role:{r}" for r in ROLES)}
    problems: list[str] = []
    for severity in sorted(used):
        steps = (policies[severity] or {}).get("steps") or []
        after = [step.get("after_minutes") for step in steps]
        if not steps or after[0] != 0:
            problems.append(f"{severity}: the first step must notify at once (after_minutes: 0)")
        if any(not isinstance(a, int) for a in after) or after != sorted(set(after)):
            problems.append(f"{severity}: after_minutes must rise step by step (got {after})")
        for step in steps:
            unknown = [n for n in step.get("notify") or ["(nobody)"] if n not in known]
            if unknown:
                problems.append(f"{severity}: notifies {', '.join(unknown)}, not a rota or role")
    assert not problems, f"{POLICY}: " + "; ".join(problems)


@pytest.mark.checklist("OPS-INCIDENT-PLAN")
def test_the_incident_response_plan_has_roles_severities_and_communication(
    repo: Repo, evidence: EvidenceLog
) -> None:
    """Without a plan, the first hour of an incident goes to deciding who does what."""
    path: Path = repo.operations / PLAN
    owner, reviewed = accountable(repo, path)
    doc = Doc(path, path.read_text())
    evidence.note(f"{PLAN}: owner {owner}, reviewed {reviewed}, sections {list(doc.sections())}")
    missing = [s for s in ("roles", "severities", "communication") if not doc.section(s).strip()]
    assert not missing, f"{PLAN} must have sections on {', '.join(missing)}"
    commander = "incident commander" in doc.section("roles").lower()
    assert commander, f"{PLAN} section 'roles' must name the incident commander"
    severities = doc.section("severities")
    unmapped = sorted(s for s in alert_severities(repo) if s not in severities)
    assert not unmapped, (
        f"{PLAN} section 'severities' must say what each alert severity means "
        f"(missing {', '.join(unmapped)})"
    )
    linked_from(repo, path, "runbooks.md")

"""The security patch SLA (system/docs/operations/patching.md): a deadline per severity, critical
within 7 days as the original promised, how a fix is deployed, an owner and a date, linked from
the runbooks. That the team meets it is the security lead's attestation: the vulnerability data
that would show it cannot be reached from here (DEP-SECURITY-SCAN)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from checks.deployment._artefacts import Repo
from checks.operations._docs import Doc
from checks.operations._records import accountable, linked_from
from preflight.evidence import EvidenceLog

CRITICAL_DAYS = 7
ROW = re.compile(r"^\|\s*(critical|high|medium|low)\s*\|[^|]*\|\s*([^|]+?)\s*\|\s*$", re.M)
DAYS = re.compile(r"^(\d+) days?$")


@pytest.mark.checklist("SEC-PATCH-SLA")
def test_the_patch_sla_gives_a_deadline_per_severity(repo: Repo, evidence: EvidenceLog) -> None:
    """Without a deadline, a published fix for a critical hole waits for the next release."""
    path: Path = repo.operations / "patching.md"
    owner, reviewed = accountable(repo, path)
    doc = Doc(path, path.read_text())
    rows = dict(ROW.findall(doc.section("sla")))
    evidence.note(f"patching.md: owner {owner}, reviewed {reviewed}, SLA {rows}")
    missing = [s for s in ("critical", "high", "medium", "low") if s not in rows]
    assert not missing, f"patching.md section 'SLA' must give a deadline for {', '.join(missing)}"
    critical = DAYS.match(rows["critical"])
    assert critical, (
        f"patching.md: the critical deadline must be in days (got {rows['critical']!r})"
    )
    assert int(critical.group(1)) <= CRITICAL_DAYS, (
        f"patching.md: critical fixes must be deployed within {CRITICAL_DAYS} days "
        f"(it says {rows['critical']})"
    )
    assert doc.section("how").strip(), "patching.md must say how a fix is deployed (`## How`)"
    linked_from(repo, path, "runbooks.md")

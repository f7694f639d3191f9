"""The retention period the original promised: "Data retention policy (7 years)", listed under
data privacy beside GDPR, export and erasure, so it speaks of the users' data, the messages and
files the retention job expires (system/chatsdk/retention.py). The probe asks the running
system's retention job for the policy in force and compares both periods with seven years."""

from __future__ import annotations

import json

import pytest

from checks.drills.test_gdpr import run_retention
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

PROMISED_DAYS = 7 * 365 + 2  # seven years, with their leap days


@pytest.mark.checklist("CMP-RETENTION-PERIOD")
def test_messages_and_files_are_kept_for_the_promised_seven_years(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A retention period other than the promised one loses data or keeps it without a basis."""
    policy = run_retention(target)["policy"]
    evidence.note(f"retention policy in force: {json.dumps(policy)}")
    periods = {"messages": policy.get("messages_days"), "uploads": policy.get("uploads_days")}
    short = {k: v for k, v in periods.items() if v and int(v) < PROMISED_DAYS}
    assert not short, (
        f"the original promises a 7-year retention ({PROMISED_DAYS} days); the system deletes "
        + ", ".join(f"{k} after {v} days" for k, v in short.items())
        + " (CHATSDK_RETENTION_MESSAGES_DAYS / CHATSDK_RETENTION_UPLOADS_DAYS)"
    )

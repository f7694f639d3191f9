"""What each API worker reports about itself (GET /v1/admin/runtime through the edge)."""

from __future__ import annotations

from typing import Any

from checks._chat import polite
from preflight.client import expect
from preflight.evidence import EvidenceLog
from preflight.probe_target import ProbeTarget

# The edge balances requests over the workers; this many requests reach every worker of a
# target with a handful of them (the probe says which workers it saw).
SAMPLES = 16


def workers(target: ProbeTarget, evidence: EvidenceLog) -> dict[str, dict[str, Any]]:
    """worker id -> its runtime report, from SAMPLES requests through the edge."""
    admin = target.http.as_admin(target.admin_key)
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(SAMPLES):
        response = polite(lambda: admin.get("/v1/admin/runtime"))
        report: dict[str, Any] = expect(response, 200)
        if report["worker_id"] not in seen:
            evidence.request(response)
        seen[str(report["worker_id"])] = report
    evidence.figure("workers reached", len(seen))
    return seen

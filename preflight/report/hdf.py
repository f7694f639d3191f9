"""The run record as MITRE's Heimdall Data Format (HDF, InSpec's `exec-json`), so security teams
view it in Heimdall beside their InSpec results: one profile (the checklist), one control per
item, one result per probe (or per load figure, attestation or signature that decided it).

Outcomes map to HDF's four result statuses: pass -> passed, fail -> failed, error -> error, and
skip and unverified -> skipped (Heimdall shows those as "not reviewed"). A waived item keeps its
failed results and carries `waiver_data`; an attested manual item carries `attestation_data` and
a passed result naming the statement, so nothing a person claimed looks like a probe's finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from preflight.checklist import AREAS

# Heimdall reads severity from impact: >= 0.9 critical, >= 0.7 high, >= 0.4 medium, else low.
IMPACT = {"critical": 0.9, "high": 0.7, "medium": 0.5, "low": 0.3}
STATUS = {
    "pass": "passed",
    "fail": "failed",
    "error": "error",
    "skip": "skipped",
    "unverified": "skipped",
}


def _results(item: Mapping[str, Any], started: str) -> list[dict[str, Any]]:
    """One HDF result per test that decided the item, or one saying what decided it instead."""
    results = []
    for test in item.get("tests") or []:
        status = STATUS.get(test["outcome"], "skipped")
        result: dict[str, Any] = {
            "status": status,
            "code_desc": test["nodeid"],
            "run_time": test.get("duration_s"),
            "start_time": started,
        }
        if status == "skipped":
            result["skip_message"] = test.get("message") or ""
        elif status != "passed":
            result["message"] = test.get("message") or ""
        results.append(result)
    if results:
        return results
    outcome = item["outcome"]
    status = "passed" if outcome in ("pass", "attested") else STATUS.get(outcome, "skipped")
    result = {
        "status": status,
        "code_desc": f"{item['id']}: decided by {item['verify']} ({outcome})",
        "start_time": started,
    }
    result["skip_message" if status == "skipped" else "message"] = item.get("reason") or ""
    return [result]


def _control(item: Mapping[str, Any], started: str) -> dict[str, Any]:
    control: dict[str, Any] = {
        "id": item["id"],
        "title": item["title"],
        "desc": item["risk"],
        "descriptions": [
            {"label": "default", "data": item["risk"]},
            {"label": "check", "data": f"verified by {item['verify']}: {item['title']}"},
            {"label": "fix", "data": item["remediation"]},
        ],
        "impact": IMPACT[item["severity"]],
        "refs": [{"ref": ref} for ref in item.get("refs") or []],
        "tags": {
            "severity": item["severity"],
            "area": item["area"],
            "owner": item["owner"],
            "verify": item["verify"],
            "outcome": item["outcome"],
            "blocking": item.get("blocking", False),
            "source": item.get("source"),
        },
        "code": "",
        "source_location": {"ref": "checklist.yaml", "line": None},
        "results": _results(item, started),
    }
    waiver = item.get("waiver")
    if waiver:
        control["waiver_data"] = {
            "justification": waiver["justification"],
            "expiration_date": waiver["expires"],
            "run": True,
            "skipped_due_to_waiver": False,
            "message": f"{waiver['status']} waiver approved by {waiver['approver']}",
        }
    attestation = item.get("attestation")
    if attestation and item["outcome"] == "attested":
        control["attestation_data"] = {
            "control_id": item["id"],
            "explanation": attestation["note"],
            "frequency": f"until {attestation['expires']}",
            "status": "passed",
            "updated": attestation["signed_at"],
            "updated_by": f"{attestation['role']} ({attestation['signer']})",
        }
    return control


def render_hdf(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as one HDF (exec-json) document."""
    started = record["started_at"]
    items = [item for item in record["items"] if item.get("selected", True)]
    target = record["target"]
    checklist = record["checklist"]
    return {
        "platform": {
            "name": f"preflight-{target['kind']}",
            "release": str(record["preflight_version"]),
            "target_id": target.get("edge_url") or target["name"],
        },
        "version": str(record["preflight_version"]),
        "statistics": {"duration": record["duration_s"]},
        "profiles": [
            {
                "name": "preflight-checklist",
                "title": f"Production readiness checklist ({checklist['path']})",
                "version": str(checklist.get("version", "")),
                "summary": record["verdict"]["summary"],
                "maintainer": "preflight",
                "license": None,
                "copyright": None,
                "sha256": checklist["sha256"],
                "status": "loaded",
                "supports": [],
                "attributes": [],
                "groups": [
                    {
                        "id": area,
                        "title": area,
                        "controls": [i["id"] for i in items if i["area"] == area],
                    }
                    for area in AREAS
                    if any(i["area"] == area for i in items)
                ],
                "controls": [_control(item, started) for item in items],
            }
        ],
        "passthrough": {"run_id": record["run_id"], "verdict": record["verdict"]["label"]},
    }

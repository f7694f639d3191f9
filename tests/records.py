"""Realistic run records for tests: every outcome, every kind of evidence, waivers, attestations
and real Ed25519 signatures over the record digest.

`make_record()` builds a small record from real checklist items (13 of them, one per situation a
report must show); `make_record(every_item=True)` adds the rest of checklist.yaml. Keyword
overrides replace top-level fields before the verdict is computed and the record signed.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import struct
import zlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from preflight.checklist import Checklist, Item, load_checklist
from preflight.outcomes import OUTCOMES
from preflight.record import CANONICAL, RECORD_SCHEMA, evidence_digest, record_digest
from preflight.signing import PANEL_ROLES

REPO = Path(__file__).resolve().parents[1]
GATE = {"critical": ["pass", "waived", "attested"], "high": ["pass", "waived", "attested"]}
RUN_ID = "20261125T201500Z-3f2a9c"
SIGNED_BY = ("harness", "security-lead", "dev-lead")
EDGE = "https://127.0.0.1:8443"

# The item ids used below, by the situation each one shows.
PASS_ID = "SEC-HDR-HSTS"  # critical pass, request evidence
BLOCKING_FAIL_ID = "SEC-HDR-CSP"  # high fail: blocks
OPEN_FAIL_ID = "SEC-HDR-NOSNIFF"  # medium fail: does not block; text and image attachments
ERROR_ID = "OPS-REDIS-LOSS"  # high error: blocks
LOAD_PASS_ID = "PERF-ERROR-RATE-LIVE"  # load item, scale reached
LOAD_UNVERIFIED_ID = "PERF-WS-DELIVERY-P95"  # load item, scale not reached: blocks
FIGURE_ID = "MON-ALERT-RULES"  # pass with figures and a text attachment
WAIVED_ID = "BAK-OFFSITE"  # fail covered by an active waiver
EXPIRED_WAIVER_ID = "BAK-FRESHNESS-ALERT"  # fail, its waiver expired: blocks
ATTESTED_ID = "OPS-CHANNELS"  # manual, valid attestation
EXPIRED_ATTESTATION_ID = "CMP-SECURITY-AUDIT"  # manual, attestation expired: unverified, medium
SIGNOFF_ID = "SIGN-CTO"  # decided by the cto's signature after the run: never blocks the run
SKIP_ID = "INF-K8S-QUOTA"  # not applicable to the native target
# Probes also named in an item's message, which ends with the node id of the test deciding it.
CSP_TEST = (
    "checks/security/test_headers.py::test_csp_restricts_scripts_objects_and_framing[edge-404]"
)
NOSNIFF_TEST = "checks/security/test_headers.py::test_nosniff_is_sent[download]"
REDIS_DRILL = (
    "checks/drills/test_faults.py::test_losing_redis_keeps_writes_limits_and_revocations[restart]"
)
QUOTA_TEST = "checks/infrastructure/test_k8s.py::test_the_namespace_is_bounded[ResourceQuota]"


def role_key(role: str) -> Ed25519PrivateKey:
    """A fixed test key per role, so records are reproducible."""
    seed = hashlib.sha256(f"preflight-test-key:{role}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def key_id(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signature(record: dict[str, Any], role: str, signed_at: str) -> dict[str, Any]:
    key = role_key(role)
    digest = record_digest(record)
    signer = "preflight run on host ci-7" if role == "harness" else f"{role} (Jo Example)"
    return {
        "role": role,
        "signer": signer,
        "key_id": key_id(key),
        "public_key": public_key_b64(key),
        "algorithm": "ed25519",
        "record_sha256": digest,
        "signed_at": signed_at,
        "signature": base64.b64encode(key.sign(f"{RECORD_SCHEMA}:{digest}".encode())).decode(),
    }


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, built by hand so the tests need no imaging library."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


@cache
def _checklist() -> Checklist:
    return load_checklist(REPO / "checklist.yaml")


def _by_id(item_id: str) -> Item:
    for item in _checklist().items:
        if item.id == item_id:
            return item
    raise KeyError(f"{item_id} is not in checklist.yaml")


def _request(path: str, status: int, headers: dict[str, str], body: str = "") -> dict[str, Any]:
    return {
        "kind": "request",
        "method": "GET",
        "url": f"{EDGE}{path}",
        "status": status,
        "headers": headers,
        "body": body,
        "elapsed_ms": 3.2,
    }


def _test(
    nodeid: str, items: Sequence[str], outcome: str, message: str, *evidence: dict[str, Any]
) -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "items": list(items),
        "outcome": outcome,
        "message": message,
        "duration_s": 0.0421,
        "evidence": list(evidence),
    }


def make_item(
    item_id: str,
    outcome: str,
    reason: str,
    tests: Sequence[dict[str, Any]] = (),
    **fields: Any,
) -> dict[str, Any]:
    """One record item from the real checklist entry; `fields` override anything."""
    item = _by_id(item_id)
    entry: dict[str, Any] = {
        **item.to_json(),
        "selected": True,
        "outcome": outcome,
        "reason": reason,
        "blocking": False,
        "tests": list(tests),
        "evidence_sha256": evidence_digest(list(tests)),
        "waiver": None,
        "attestation": None,
        "figures": {},
    }
    if item.verify == "load":
        entry["figures"] = {
            "metric": item.metric,
            "comparison": item.comparison,
            "value": item.value,
            "measured": None,
            "scale_reached": False,
        }
    entry.update(fields)
    if "tests" in fields:
        entry["evidence_sha256"] = evidence_digest(entry["tests"])
    return entry


WAIVER_ACTIVE = {
    "justification": "Off-site copies start with the new storage contract on 2027-01-15; "
    "nightly on-site snapshots cover the gap.",
    "owner": "ops-lead",
    "approver": "cto",
    "expires": "2027-01-31",
    "status": "active",
}
WAIVER_EXPIRED = {
    "justification": "Freshness alert to be added after the monitoring migration.",
    "owner": "ops-lead",
    "approver": "security-lead",
    "expires": "2026-10-01",
    "status": "expired",
}


def _sample_items() -> list[dict[str, Any]]:
    hsts = "max-age=31536000; includeSubDomains"
    shot = base64.b64encode(png(24, 12, (9, 105, 218))).decode()
    nginx_excerpt = (
        "# security/headers.conf\n"
        'add_header X-Frame-Options "DENY" always;\n'
        "# <missing> add_header X-Content-Type-Options nosniff always;\n"
    )
    return [
        make_item(
            PASS_ID,
            "pass",
            "2 of 2 probes passed",
            [
                _test(
                    f"checks/security/test_headers.py::test_hsts_is_at_least_one_year[{case}]",
                    [PASS_ID],
                    "pass",
                    "",
                    _request(path, status, {"Strict-Transport-Security": hsts}),
                )
                for case, path, status in (
                    ("api-200", "/v1/health/ready", 200),
                    ("api-401", "/v1/channels", 401),
                )
            ],
        ),
        make_item(
            BLOCKING_FAIL_ID,
            "fail",
            "Content-Security-Policy on https://127.0.0.1:8443/ must be present (got none) "
            f"[{CSP_TEST}]",
            [
                _test(
                    CSP_TEST,
                    [BLOCKING_FAIL_ID],
                    "fail",
                    "Content-Security-Policy on https://127.0.0.1:8443/ must be present (got none)",
                    _request("/", 200, {"Content-Type": "text/html"}, "<!doctype html><title>"),
                    {"kind": "note", "text": "Checked the HTML entry point and /v1/channels."},
                )
            ],
            blocking=True,
        ),
        make_item(
            OPEN_FAIL_ID,
            "fail",
            "X-Content-Type-Options on https://127.0.0.1:8443/v1/files must be nosniff (got none) "
            f"[{NOSNIFF_TEST}]",
            [
                _test(
                    NOSNIFF_TEST,
                    [OPEN_FAIL_ID],
                    "fail",
                    "X-Content-Type-Options on https://127.0.0.1:8443/v1/files must be "
                    "nosniff (got none)",
                    _request("/v1/files", 200, {"Content-Type": "application/octet-stream"}),
                    {
                        "kind": "attachment",
                        "name": "headers.conf",
                        "media_type": "text/plain",
                        "content": nginx_excerpt,
                    },
                    {
                        "kind": "attachment",
                        "name": "response.png",
                        "media_type": "image/png",
                        "content": shot,
                        "encoding": "base64",
                    },
                )
            ],
        ),
        make_item(
            ERROR_ID,
            "error",
            "Redis did not come back within 30 s after a restart, so recovery could not be "
            f"judged [{REDIS_DRILL}]",
            [
                _test(
                    REDIS_DRILL,
                    [ERROR_ID],
                    "error",
                    "Redis did not come back within 30 s after a restart, so recovery could "
                    "not be judged",
                    {"kind": "note", "text": "redis-server exited with status 1 on restart."},
                    {
                        "kind": "attachment",
                        "name": "redis.log",
                        "media_type": "text/plain",
                        "content": "# Fatal error loading the DB: <Invalid argument>. Exiting.\n",
                    },
                )
            ],
            blocking=True,
        ),
        make_item(
            LOAD_PASS_ID,
            "pass",
            "error_ratio_pct 0.12 < 1 at 50 users for 60 s",
            figures={
                "metric": "error_ratio_pct",
                "comparison": "<",
                "value": 1.0,
                "measured": 0.12,
                "scale_reached": True,
            },
        ),
        make_item(
            LOAD_UNVERIFIED_ID,
            "unverified",
            "the smoke profile opened 50 WebSocket connections, the item needs 1000",
            figures={
                "metric": "ws_delivery_p95_ms",
                "comparison": "<",
                "value": 200.0,
                "measured": 41.7,
                "scale_reached": False,
            },
            blocking=True,
        ),
        make_item(
            FIGURE_ID,
            "pass",
            "1 of 1 probes passed",
            [
                _test(
                    "checks/monitoring/test_alerts.py::"
                    "test_alert_rules_cover_the_critical_cases_and_their_unit_tests_pass",
                    [FIGURE_ID],
                    "pass",
                    "",
                    {"kind": "figure", "name": "alert rules", "value": 14, "unit": "rules"},
                    {"kind": "figure", "name": "promtool test time", "value": 0.31, "unit": "s"},
                    {
                        "kind": "attachment",
                        "name": "promtool.txt",
                        "media_type": "text/plain",
                        "content": "Unit Testing:  alerts_test.yml\n  SUCCESS\n",
                    },
                )
            ],
        ),
        make_item(
            WAIVED_ID,
            "waived",
            "waived until 2027-01-31 (approved by cto): no off-site copy of the nightly backup",
            [
                _test(
                    "checks/drills/test_backup.py::test_backups_are_copied_outside_the_database_host",
                    [WAIVED_ID],
                    "fail",
                    "no off-site copy of the nightly backup (got 0 objects in the remote)",
                )
            ],
            waiver=WAIVER_ACTIVE,
        ),
        make_item(
            EXPIRED_WAIVER_ID,
            "fail",
            "no alert rule fires when the newest backup is older than 26 h; its waiver "
            "expired on 2026-10-01",
            [
                _test(
                    "checks/monitoring/test_alerts.py::test_backup_age_alert_fires_after_25_hours",
                    [EXPIRED_WAIVER_ID],
                    "fail",
                    "no alert rule fires when the newest backup is older than 26 h",
                )
            ],
            waiver=WAIVER_EXPIRED,
            blocking=True,
        ),
        make_item(
            ATTESTED_ID,
            "attested",
            "attested by ops-lead until 2027-05-25",
            attestation={
                "role": "ops-lead",
                "signer": "Sam Ops",
                "key_id": key_id(role_key("ops-lead")),
                "note": "Incident channel and status-page process walked through with the team.",
                "signed_at": "2026-11-24T09:12:00Z",
                "expires": "2027-05-25",
                "status": "valid",
            },
        ),
        make_item(
            EXPIRED_ATTESTATION_ID,
            "unverified",
            "attestation by security-lead expired on 2026-06-30",
            attestation={
                "role": "security-lead",
                "signer": "Sue Security",
                "key_id": key_id(role_key("security-lead")),
                "note": "Yearly security audit, report SA-2025-12, four findings with owners.",
                "signed_at": "2025-12-30T16:00:00Z",
                "expires": "2026-06-30",
                "status": "expired",
            },
        ),
        make_item(SIGNOFF_ID, "unverified", signoff_reason("cto")),
        make_item(
            SKIP_ID,
            "skip",
            f"the native target runs no Kubernetes namespace [{QUOTA_TEST}]",
            [
                _test(
                    QUOTA_TEST,
                    [SKIP_ID],
                    "skip",
                    "the native target runs no Kubernetes namespace",
                )
            ],
        ),
    ]


def signoff_reason(role: str) -> str:
    """What a run says of a sign-off item (preflight/decide.py)."""
    return (
        f"decided by {role}'s signature on this run's record: "
        f"`preflight sign --role {role} RECORD`, then `preflight verify RECORD`"
    )


def _filler(item: Item) -> dict[str, Any]:
    """Every other checklist item, decided the way a smoke run decides it."""
    if item.verify == "signoff":
        return make_item(item.id, "unverified", signoff_reason(item.owner))
    if item.attestable:  # manual, or a probe item that needs its owner's attestation too
        return make_item(item.id, "unverified", f"no attestation on file from {item.owner}")
    if item.verify == "load":
        return make_item(item.id, "unverified", "the smoke profile does not reach its scale")
    test = _test(
        f"checks/{item.area}/test_{item.id.lower().replace('-', '_')}.py::test_it",
        [item.id],
        "pass",
        "",
        _request("/v1/health/ready", 200, {"Content-Type": "application/json"}, '{"ok":true}'),
    )
    return make_item(item.id, "pass", "1 of 1 probes passed", [test])


def verdict(items: Sequence[dict[str, Any]], gate: dict[str, list[str]]) -> dict[str, Any]:
    for entry in items:
        allowed = gate.get(entry["severity"])
        entry["blocking"] = bool(
            entry["selected"]
            and entry["verify"] != "signoff"
            and allowed is not None
            and entry["outcome"] not in allowed
        )
    counts = {str(o): sum(1 for e in items if e["outcome"] == o) for o in OUTCOMES}
    blocking = [e["id"] for e in items if e["blocking"]]
    label = "NOT READY" if blocking else "READY"
    tally = ", ".join(f"{n} {o}" for o, n in counts.items())
    return {
        "ready": not blocking,
        "label": label,
        "counts": counts,
        "blocking": blocking,
        "summary": f"{label} - {tally} in 212 s",
    }


def make_record(
    *, every_item: bool = False, signed_by: Sequence[str] = SIGNED_BY, **overrides: Any
) -> dict[str, Any]:
    """A complete, schema-valid, signed record; `overrides` replace top-level fields."""
    items = _sample_items()
    if every_item:
        taken = {e["id"] for e in items}
        items += [_filler(i) for i in _checklist().items if i.id not in taken]
    checklist_text = (REPO / "checklist.yaml").read_bytes()
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "canonical": CANONICAL,
        "run_id": RUN_ID,
        "preflight_version": "0.1.0",
        "started_at": "2026-11-25T20:15:00Z",
        "finished_at": "2026-11-25T20:18:32Z",
        "duration_s": 212.3,
        "checklist": {
            "path": "checklist.yaml",
            "sha256": hashlib.sha256(checklist_text).hexdigest(),
            "version": 1,
            "items": len(_checklist().items),
            "gate": copy.deepcopy(GATE),
        },
        "selection": {
            "areas": None,
            "severities": None,
            "profile": "smoke",
            "workers": 1,
            "api_workers": 2,
        },
        "target": {
            "name": "native",
            "kind": "native",
            "edge_url": EDGE,
            "versions": {
                "postgresql": "15.8",
                "redis": "7.0.15",
                "nginx": "1.22.1",
                "python": "3.11.2",
                "chatsdk": "0.1.0",
            },
            "config_digests": {
                name: hashlib.sha256(name.encode()).hexdigest()
                for name in ("nginx.conf", "postgresql.conf", "redis.conf")
            },
        },
        "verdict": {},
        "items": items,
        "load": {
            "profile": "smoke",
            "ran": True,
            "reason": "smoke profile: 50 users, 50 WebSocket connections, 60 s",
            "figures": {"api_latency_p95_ms": 84.0, "error_ratio_pct": 0.12},
            "valid": True,
            "invalid_reason": "",
            "generator": {
                "mode": "master/worker",
                "workers": 2,
                "cores": 2,
                "cpu_by_process": {
                    "locust-master": {"mean_pct": 3.1, "max_pct": 6.0},
                    "locust-worker-1": {"mean_pct": 41.5, "max_pct": 58.2},
                },
            },
            "cpu_per_request": {
                "http_requests": 1200,
                "generator_cpu_s": 30.0,
                "generator_ms_per_request": 25.0,
                "target_cpu_s": 18.0,
                "target_ms_per_request": 15.0,
            },
            "requests": {
                "GET /v1/channels": {
                    "requests": 70,
                    "failures": 0,
                    "p50_ms": 3.0,
                    "p95_ms": 32.0,
                    "p99_ms": 65.0,
                },
                "WS delivery": {
                    "requests": 416,
                    "failures": 0,
                    "p50_ms": 8.0,
                    "p95_ms": 11.0,
                    "p99_ms": 45.0,
                },
            },
            "timeseries": [
                {
                    "t_s": float(t),
                    "users": 50,
                    "ws_connections": 50,
                    "requests_per_s": 20.0 + t,
                    "failures_per_s": 0.0,
                    "http_p50_ms": 6.0,
                    "http_p95_ms": 9.0 + t,
                    "http_p99_ms": 14.0 + t,
                    "ws_delivery_p95_ms": 11.0,
                }
                for t in range(2, 62, 2)
            ],
            "resources": {
                "components": {
                    "api-0": {
                        "cpu_peak_pct": 24.4,
                        "cpu_peak_cores": 0.489,
                        "limit_cpus": 2.0,
                        "memory_peak_pct": 4.3,
                        "memory_peak_bytes": 92_274_688,
                    },
                    "redis": {"not_measured": "its process could not be read <here>"},
                },
                "saturation": {"parts_pct": {"cpu": 24.4, "host_cpu": 72.1}},
            },
            "scaling": {
                "ratio": 1.02,
                "cpus_per_worker": 0.25,
                "workers": {
                    "2": {
                        "ok_requests_per_s": 330.9,
                        "p95_ms": 4700.0,
                        "failures": 0,
                        "invalid": "",
                        "throttling": {
                            "api-1": {"throttled_share": 0.91},
                            "api-2": {"throttled_share": 0.88},
                        },
                    },
                    "1": {
                        "ok_requests_per_s": 325.2,
                        "p95_ms": 3600.0,
                        "failures": 0,
                        "invalid": "",
                        "throttling": {"api-1": {"throttled_share": 0.97}},
                    },
                },
            },
        },
        "drills": [
            {
                "name": "faults",
                "nodeid": REDIS_DRILL,
                "items": ["OPS-REDIS-LOSS"],
                "outcome": "error",
                "message": "Redis did not come back within 30 s",
                "duration_s": 31.2,
                "figures": [{"name": "writes failed", "value": 0, "unit": ""}],
            }
        ],
        "waivers": [
            {"id": WAIVED_ID, **WAIVER_ACTIVE},
            {"id": EXPIRED_WAIVER_ID, **WAIVER_EXPIRED},
        ],
        "previous": {
            "run_id": "20261124T180000Z-9b1e04",
            "record_sha256": hashlib.sha256(b"previous run").hexdigest(),
        },
        "changes": [
            {"id": BLOCKING_FAIL_ID, "before": "pass", "after": "fail"},
            {"id": SKIP_ID, "before": "pass", "after": "skip"},
            {"id": ATTESTED_ID, "before": "unverified", "after": "attested"},
            {"id": FIGURE_ID, "before": None, "after": "pass"},
        ],
        "signoff": {"required": list(PANEL_ROLES)},
        "signatures": [],
    }
    record.update(overrides)
    if "verdict" not in overrides:
        record["verdict"] = verdict(record["items"], record["checklist"]["gate"])
    if "signatures" not in overrides:
        record["signatures"] = [
            signature(record, role, f"2026-11-25T20:{18 + n:02d}:33Z")
            for n, role in enumerate(signed_by)
        ]
    return record


def make_ready_record(*, signed_by: Sequence[str] = (), **overrides: Any) -> dict[str, Any]:
    """The sample record with every item that blocked it decided `pass`: the run is READY, and
    only the signatures (the sign-off items) are left to decide the release. `items` in
    `overrides` replace the sample's (their verdict is computed as given)."""
    if "items" in overrides:
        return make_record(signed_by=signed_by, **overrides)
    items = [
        {**entry, "outcome": "pass", "reason": "1 of 1 probes passed", "waiver": None}
        if entry["blocking"]
        else entry
        for entry in make_record(signed_by=())["items"]
    ]
    return make_record(items=items, signed_by=signed_by, **overrides)

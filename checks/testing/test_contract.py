"""The API against its own OpenAPI description (GET /v1/openapi.json): schemathesis generates
bounded, schema-valid requests for every documented operation and checks that no answer is a
server error and every answer conforms (status documented, content type, body schema); and the
description matches the routes the deployment serves."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Err

from checks._chat import Tenant, call, created
from checks.security._actors import PNG_1X1
from preflight.client import expect
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

EXAMPLES_PER_OPERATION = 12
TIME_BUDGET_S = 35.0  # the whole run; operations not reached are named in the evidence
# Not plain HTTP operations: the WebSocket, and what the edge deliberately does not serve; and
# the error-tracking verification route, which answers 500 on purpose (MON-ERROR-TRACKING).
SKIPPED = {("GET", "/v1/realtime"), ("GET", "/metrics"), ("POST", "/v1/admin/debug/error")}
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH")
JSON = {"Content-Type": "application/json"}


def openapi(target: ProbeTarget) -> dict[str, Any]:
    spec: dict[str, Any] = expect(target.http.get("/v1/openapi.json"), 200)
    return spec


@dataclass
class World:
    """A tenant of its own for the fuzzer (it may rename or delete what it finds), and the real
    ids it puts into path parameters so that requests reach more than 404s."""

    headers: dict[str, str]
    ids: dict[str, str]
    failures: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, target: ProbeTarget) -> World:
        tenant = Tenant.create(target, "contract")
        user = tenant.user("fuzzer")
        channel = created(
            user.client, "/v1/channels", {"name": "fuzz", "kind": "public"}, "channel"
        )
        cid = channel["channel_id"]
        up = call(
            user.client, "POST", "/v1/uploads", body=PNG_1X1, headers={"Content-Type": "image/png"}
        )
        upload_id = expect(up, 201)["upload_id"]
        message = created(user.client, f"/v1/channels/{cid}/messages", {"text": "fuzz"}, "message")
        poll = created(
            user.client,
            f"/v1/channels/{cid}/polls",
            {"question": "q", "options": ["a", "b"]},
            "poll",
        )
        hook = created(
            tenant.client,
            "/v1/webhooks",
            {"url": "https://127.0.0.1:9/none", "events": ["*"]},
            "hook",
        )
        headers = {
            "X-Admin-Key": target.admin_key,
            "X-API-Key": tenant.api_key,
            "Authorization": f"Bearer {user.access_token}",
        }
        ids = {
            "channel_id": cid,
            "message_id": message["message_id"],
            "poll_id": poll["poll_id"],
            "upload_id": upload_id,
            "webhook_id": hook["webhook_id"],
        }
        return cls(headers, ids)


@pytest.mark.checklist("TST-API-CONTRACT")
def test_every_operation_answers_as_documented(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Undocumented or drifting endpoints break clients after deploy."""
    spec = openapi(target)
    schema = schemathesis.openapi.from_dict(spec)
    world = World.create(target)
    session = requests.Session()
    verify: str | bool = str(target.info.edge.ca_file) if target.info.edge.ca_file else True
    base_url = target.edge_url
    started = time.monotonic()
    tried: list[str] = []
    skipped: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            world.failures.append(f"an operation of /v1/openapi.json is invalid: {result.err()}")
            continue
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        if time.monotonic() - started > TIME_BUDGET_S:
            skipped.append(label)
            continue
        tried.append(label)
        params = {
            p.name: world.ids[p.name] for p in operation.path_parameters if p.name in world.ids
        }
        strategy = operation.as_strategy(path_parameters=params or None)

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:  # a schemathesis.Case
            nonlocal calls
            calls += 1
            response = case.call(base_url, session, world.headers, timeout=10, verify=verify)
            if response.status_code == 429:  # the edge's per-address limit: wait, try once more
                time.sleep(float(str(response.headers.get("Retry-After") or 1)))
                response = case.call(base_url, session, world.headers, timeout=10, verify=verify)
            try:
                case.validate_response(response, checks=CHECKS)
            except (Failure, FailureGroup) as exc:
                found = exc.exceptions if isinstance(exc, FailureGroup) else [exc]
                titles = ", ".join(str(getattr(f, "title", type(f).__name__)) for f in found)
                where = f"{case.method.upper()} {case.path}"
                world.failures.append(f"{where} -> {response.status_code}: {titles}")

        run()
    session.close()
    evidence.figure("operations exercised", len(tried))
    evidence.figure("requests sent", calls)
    if skipped:
        evidence.note(f"not reached within {TIME_BUDGET_S:g} s: {', '.join(skipped)}")
    for failure in world.failures[:50]:
        evidence.note(failure)
    assert not world.failures, (
        f"every documented operation must answer as /v1/openapi.json says ({len(world.failures)} "
        f"deviations; first: {world.failures[0]})"
    )


@pytest.mark.checklist("DEP-DOCS")
def test_documented_routes_are_served_and_nothing_else(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Outdated docs break integrators and hide removed endpoints."""
    spec = openapi(target)
    missing: list[str] = []
    undocumented: list[str] = []
    for path, item in spec["paths"].items():
        if not path.startswith("/v1/") or path == "/v1/realtime":
            continue
        concrete = re.sub(r"\{[^}]+\}", "preflight-doc-probe", path)
        documented = {m.upper() for m in item if m.upper() in METHODS}
        for method in METHODS:
            body = b"{}" if method in ("POST", "PUT", "PATCH") else None
            response = call(target.http, method, concrete, body=body, headers=JSON)
            # Without credentials a served route answers 401 (or 400, or 200 when public); only a
            # route the server does not have answers 404 or 405 to every such request.
            served = response.status not in (404, 405)
            if method in documented and not served:
                missing.append(f"{method} {path} (got {response.status})")
            elif method not in documented and served:
                undocumented.append(f"{method} {path} (got {response.status})")
    evidence.note(f"documented but not served: {missing or 'none'}")
    evidence.note(f"served but not documented: {undocumented or 'none'}")
    matches = not missing and not undocumented
    assert matches, (
        f"/v1/openapi.json must match the deployed routes (documented but not served: "
        f"{missing or 'none'}; served but not documented: {undocumented or 'none'})"
    )

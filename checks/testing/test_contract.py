"""The API against its own OpenAPI description (GET /v1/openapi.json), as an outside fuzzer sees
it: schemathesis runs every one of its checks (server errors, status codes, content types,
headers and bodies as documented, schema-violating data rejected, schema-valid data accepted,
missing credentials refused, undeclared methods answered 405 with Allow, deleted objects gone,
...) on schema-valid and schema-violating requests (its examples, coverage and fuzzing phases,
EXAMPLES_PER_OPERATION each), then its stateful phase, which chains operations through the links
it infers (an id one answer returns used by the next request). It calls with a real user's
token, an app's API key and the operator's key; and the description matches the routes the
deployment serves."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import Status, events, from_schema

from checks._chat import Tenant, call, created
from checks.security._actors import PNG_1X1
from checks.testing._relay import relayed
from preflight.client import expect
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

EXAMPLES_PER_OPERATION = 15
REQUEST_TIMEOUT_S = 10.0
METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH")
JSON = {"Content-Type": "application/json"}


def openapi(target: ProbeTarget) -> dict[str, Any]:
    spec: dict[str, Any] = expect(target.http.get("/v1/openapi.json"), 200)
    return spec


@dataclass
class World:
    """A tenant of its own for the fuzzer (it may rename, delete, revoke or erase what it finds),
    and the real ids it puts into path parameters so that requests reach more than 404s. The
    `user_id` it names is another member's: the fuzzer's own user is revoked only through the
    links it follows, and then it signs in again (`token`)."""

    tenant: Tenant
    user_id: str
    admin_key: str
    ids: dict[str, str]
    tokens_minted: int = 0

    @classmethod
    def create(cls, target: ProbeTarget) -> World:
        tenant = Tenant.create(target, "contract")
        user = tenant.user("fuzzer")
        other = tenant.user("member")
        channel = created(
            user.client,
            "/v1/channels",
            {"name": "fuzz", "kind": "public", "member_ids": [other.user_id]},
            "channel",
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
        ids = {
            "channel_id": cid,
            "message_id": message["message_id"],
            "poll_id": poll["poll_id"],
            "upload_id": upload_id,
            "webhook_id": hook["webhook_id"],
            "user_id": other.user_id,
        }
        return cls(tenant, user.user_id, target.admin_key, ids)

    def headers(self) -> dict[str, str]:
        """Every credential the document names, with a user token minted now (POST /v1/tokens):
        schemathesis asks again after a 401, e.g. once the fuzzer has revoked its own user."""
        response = call(self.tenant.client, "POST", "/v1/tokens", json={"user_id": self.user_id})
        token = expect(response, 201)["access_token"]
        self.tokens_minted += 1
        return {
            "X-Admin-Key": self.admin_key,
            "X-API-Key": self.tenant.api_key,
            "Authorization": f"Bearer {token}",
        }


def fuzzer(
    target: ProbeTarget, spec: dict[str, Any], world: World, base_url: str, *, stateful: bool
) -> Any:
    """schemathesis on `spec` against the edge at `base_url`: every check, positive and negative
    data; Retry-After honoured on 429. Either its examples, coverage and fuzzing phases, with the
    world's ids in path parameters, or (`stateful`) its stateful phase alone, where the ids come
    from the links it follows (an id the world fixed would override the one a link carries, and
    a request meant for what the previous step created would reach the world's object instead)."""
    ca_file = target.info.edge.ca_file
    phases: dict[str, Any] = (
        {"enabled": False, "stateful": {"enabled": True}}
        if stateful
        else {"stateful": {"enabled": False}}
    )
    parameters = {} if stateful else {f"path.{name}": value for name, value in world.ids.items()}
    config = schemathesis.Config.from_dict(
        {
            "phases": phases,
            "base-url": base_url,
            "tls-verify": str(ca_file) if ca_file else True,
            "request-timeout": REQUEST_TIMEOUT_S,
            "rate-limit": "auto",
            "seed": 1,
            "workers": 1,
            "generation": {
                "mode": "all",
                "max-examples": EXAMPLES_PER_OPERATION,
                "database": "none",
                # Garbage credentials in every request would be guesses: the API's throttle of
                # failed authentication (per address) would lock the fuzzer out of the API
                # for minutes. ignored_auth still sends each operation one missing and one
                # invalid credential of each kind.
                "with-security-parameters": False,
            },
            "checks": {"enabled": True},
            "parameters": parameters,
        }
    )
    schema = schemathesis.openapi.from_dict(spec, config=config)

    class Client:
        """What a well-behaved client adds to each request: the credentials, and a fresh
        Idempotency-Key wherever one is sent. The fuzzer draws keys from a small pool of values
        and reuses one with another body, which the API rightly refuses (422, as documented);
        a client that means a new request sends a new key."""

        def get(self, case: Any, ctx: Any) -> dict[str, str]:
            return world.headers()

        def set(self, case: Any, data: dict[str, str], ctx: Any) -> None:
            headers = {**(case.headers or {}), **data}
            for name in headers:
                if name.lower() == "idempotency-key":
                    headers[name] = uuid.uuid4().hex
            case.headers = headers

    schema.auth(retry_on=[401])(Client)
    return schema


@dataclass
class Findings:
    """What the run found: one line per failed check (deduplicated) with what was wrong and the
    request again as curl, and what the run covered."""

    failures: dict[str, str | None] = field(default_factory=dict)
    checks: Counter[str] = field(default_factory=Counter)
    operations: set[str] = field(default_factory=set)
    scenarios: int = 0
    stateful_scenarios: int = 0

    def record(self, event: events.ScenarioFinished) -> None:
        self.scenarios += 1
        if event.recorder.label == "Stateful tests":
            self.stateful_scenarios += 1
        else:
            self.operations.add(event.recorder.label)
        for case_id, nodes in event.recorder.checks.items():
            for node in nodes:
                self.checks[node.name] += 1
                if node.status == Status.FAILURE and node.failure_info is not None:
                    failure = node.failure_info.failure
                    case = event.recorder.cases.get(case_id)
                    where = (
                        f"{case.value.method.upper()} {case.value.formatted_path}"
                        if case is not None
                        else event.recorder.label
                    )
                    line = f"[{event.phase.value}] {where}: {failure.title} ({node.name})"
                    # What was wrong and how to send the request again (curl), for the evidence.
                    message = failure.message.strip().splitlines()
                    self.failures[line] = " / ".join(
                        part
                        for part in (*message[:3], node.failure_info.code_sample.strip())
                        if part
                    )


def run(schema: Any, findings: Findings) -> None:
    finished = False
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            findings.record(event)
        elif isinstance(event, events.NonFatalError):
            message = str(event.value).strip().splitlines()
            findings.failures[f"{event.label}: {event.info.title}"] = " / ".join(message[:3])
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            finished = True
            for failure in event.failures:
                findings.failures[f"{failure.operation}: {failure.title}"] = None
    if not finished:
        # Every engine run ends with EngineFinished. Without it the events came from classes
        # other than the ones imported here (schemathesis loaded twice in this process), and
        # nothing the engine found was seen: a harness fault, not the API's.
        raise RuntimeError(
            "schemathesis's events are not the classes this probe imported (is schemathesis "
            "imported twice in this process?); its findings cannot be read"
        )


# The whole engine over every operation takes about 100 s on the native target and more than the
# default 180 s on the containers target of a loaded 2-core machine.
@pytest.mark.checklist("TST-API-CONTRACT", budget=600)
def test_every_operation_answers_as_documented(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Undocumented or drifting endpoints break clients after deploy."""
    spec = openapi(target)
    world = World.create(target)
    # From a client address of its own where there is one: the credentials the fuzzer gets
    # wrong on purpose then count against that address's throttle, not the other probes'.
    findings = Findings()
    started = time.monotonic()
    with relayed(target) as (base_url, source):
        for stateful in (False, True):
            run(fuzzer(target, spec, world, base_url, stateful=stateful), findings)
    elapsed = time.monotonic() - started
    evidence.note(f"fuzzer's client address: {source or 'the one this machine has'}")
    evidence.figure("operations exercised", len(findings.operations))
    evidence.figure("checks run", sum(findings.checks.values()))
    evidence.figure("stateful scenarios", findings.stateful_scenarios)
    evidence.figure("run time", round(elapsed, 1), "s")
    evidence.figure("user tokens minted", world.tokens_minted)
    evidence.note("checks: " + ", ".join(f"{n} x{c}" for n, c in sorted(findings.checks.items())))
    failures = list(findings.failures)
    for failure in failures[:50]:
        detail = findings.failures[failure]
        evidence.note(f"{failure}: {detail}" if detail else failure)
    documented = sum(
        1 for item in spec["paths"].values() for method in item if method.upper() in METHODS
    )
    stopped = "; ".join(f"{line}: {findings.failures[line] or ''}" for line in failures[:3])
    assert len(findings.operations) == documented, (
        f"schemathesis must exercise every documented operation ({len(findings.operations)} of "
        f"{documented}; what stopped it: {stopped or 'nothing it reported'})"
    )
    assert findings.stateful_scenarios > 0, (
        "schemathesis's stateful phase must run (no scenario followed a link)"
    )
    by_check = Counter(line.rsplit("(", 1)[-1].rstrip(")") for line in failures)
    assert not failures, (
        f"every documented operation must answer as /v1/openapi.json says ({len(failures)} "
        f"deviations, by check: {', '.join(f'{c} x{n}' for c, n in sorted(by_check.items()))}; "
        f"first: {failures[0]})"
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

"""Hostile input through the edge never produces a 5xx: every JSON-body endpoint of the OpenAPI
document (so new endpoints are covered automatically) answers wrong content types, malformed,
oversized and deeply nested JSON, invalid UTF-8, unknown fields, wrong types, over-long strings
and huge integers with the contract's error shape and status; bad path ids give 400/404; a
64 KB header is refused by the edge; and the service is still ready afterwards."""

from __future__ import annotations

import copy
import http.client
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from chatsdk.openapi import openapi_document

from preflight.client import ChatClient, Response, expect
from preflight.targets.base import TargetInfo
from tests.api.conftest import AppCtx, UserCtx, make_app

DOC = openapi_document()
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]
JSON_LIMIT = 64 * 1024
USES_PER_USER = 5  # well inside every per-user rate-limit burst (create_channel: 10)


# -- the endpoints and their body schemas, from the document ------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    security: str | None  # AdminKey, ApiKey, BearerAuth or None
    schema: dict[str, Any] = field(hash=False, compare=False)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return resolve(SCHEMAS[schema["$ref"].rsplit("/", 1)[-1]])
    return schema


def security_of(operation: dict[str, Any]) -> str | None:
    requirements = operation.get("security", DOC.get("security", []))
    return next(iter(requirements[0])) if requirements else None


def json_endpoints() -> list[Endpoint]:
    out = []
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            content = (
                operation.get("requestBody", {}).get("content", {})
                if method != "parameters"
                else {}
            )
            if "application/json" in content:
                schema = resolve(content["application/json"]["schema"])
                out.append(Endpoint(method.upper(), path, security_of(operation), schema))
    return out


ENDPOINTS = json_endpoints()


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", "string")
    return kind if isinstance(kind, list) else [kind]


def example(schema: dict[str, Any], salt: int = 0) -> Any:  # noqa: PLR0911 - one per type
    """A value valid for `schema` (the smallest that fits)."""
    schema = resolve(schema)
    if "enum" in schema:
        return next(v for v in schema["enum"] if v is not None)
    kind = next(t for t in _types(schema) if t != "null")
    if kind == "string":
        if schema.get("format") == "uri":
            return f"https://example.com/{salt}"
        return (f"x{salt}" * schema.get("minLength", 1))[: schema.get("maxLength", 200)]
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    if kind == "array":
        items = schema["items"]
        if "enum" in items:
            return [v for v in items["enum"] if v is not None][: max(1, schema.get("minItems", 0))]
        return [example(items, i) for i in range(max(1, schema.get("minItems", 0)))]
    if kind == "object":
        return {k: example(v) for k, v in schema["properties"].items() if k in schema["required"]}
    raise AssertionError(f"no example for {schema}")


def wrong_type(schema: dict[str, Any]) -> Any:
    kinds = _types(resolve(schema))
    if "string" in kinds:
        return 12345
    if "integer" in kinds:
        return "12"
    if "array" in kinds:
        return {"not": "a list"}
    if "boolean" in kinds:
        return "yes"
    return ["x"]


# -- cases --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    content_type: str | None
    statuses: frozenset[int]


def raw_cases() -> list[Case]:
    deep_small = b'{"a":' * 10_000 + b"1" + b"}" * 10_000  # 60 KB: under the size limit
    deep_huge = b"[" * 100_000 + b"]" * 100_000
    bad = frozenset({400})
    return [
        Case("content-type text/plain", b"{}", "text/plain", frozenset({415})),
        Case("content-type form", b"a=1", "application/x-www-form-urlencoded", frozenset({415})),
        Case("content-type missing", b"{}", None, frozenset({415})),
        Case("content-type json-ish", b"{}", "application/json-patch+json", frozenset({415})),
        Case("malformed json", b'{"a": ', "application/json", bad),
        Case("empty body", b"", "application/json", bad),
        Case("invalid utf-8", b'{"a": "\xff\xfe\xc0"}', "application/json", bad),
        Case("utf-16 body", '{"a": 1}'.encode("utf-16"), "application/json", bad),
        Case("json array", b"[]", "application/json", bad),
        Case("json string", b'"x"', "application/json", bad),
        Case("json number", b"42", "application/json", bad),
        Case("json null", b"null", "application/json", bad),
        Case("nesting 10000 deep", deep_small, "application/json", bad),
        Case("nesting 100000 deep", deep_huge, "application/json", frozenset({400, 413})),
        Case(
            "body over 64 KB",
            b'{"a": "' + b"x" * 70_000 + b'"}',
            "application/json",
            frozenset({413}),
        ),
        Case("huge integer literal", b'{"a": ' + b"9" * 5000 + b"}", "application/json", bad),
        Case("NaN literal", b'{"a": NaN}', "application/json", bad),
        Case("unknown field", b'{"zz_unknown": 1}', "application/json", bad),
    ]


def field_cases(endpoint: Endpoint) -> list[Case]:
    """Valid bodies with exactly one thing wrong."""
    base = example(endpoint.schema)
    props: dict[str, Any] = endpoint.schema["properties"]
    cases: list[tuple[str, dict[str, Any]]] = [("valid body plus unknown field", {**base, "zz": 1})]
    for name, declared in props.items():
        prop = resolve(declared)
        kinds = _types(prop)
        cases.append((f"{name} wrong type", {**base, name: wrong_type(prop)}))
        if name in endpoint.schema["required"]:
            cases.append((f"{name} null", {**base, name: None}))
            missing = dict(base)
            missing.pop(name)
            cases.append((f"{name} missing", missing))
        if "enum" in prop:
            cases.append((f"{name} not in enum", {**base, name: "not-a-choice"}))
        if "string" in kinds and "maxLength" in prop:
            cases.append((f"{name} too long", {**base, name: "x" * (prop["maxLength"] + 1)}))
        if "string" in kinds and prop.get("minLength", 0) >= 1:
            cases.append((f"{name} empty", {**base, name: ""}))
        if "string" in kinds:
            cases.append((f"{name} NUL", {**base, name: "a\x00b"}))
            cases.append((f"{name} lone surrogate", {**base, name: "a\ud800b"}))
        if "integer" in kinds:
            cases.append((f"{name} huge", {**base, name: 10**30}))
            cases.append((f"{name} negative", {**base, name: -1}))
            cases.append((f"{name} float", {**base, name: 1.5}))
            cases.append((f"{name} bool", {**base, name: True}))
        if "array" in kinds:
            too_many = [example(prop["items"], i) for i in range(prop["maxItems"] + 1)]
            cases.append((f"{name} too many items", {**base, name: too_many}))
            cases.append((f"{name} item wrong type", {**base, name: [wrong_type(prop["items"])]}))
            if prop.get("minItems", 0) > 0:
                cases.append((f"{name} empty list", {**base, name: []}))
    out = []
    for label, body in cases:
        # ensure_ascii keeps the lone surrogate as the escape \ud800, which is valid JSON text.
        encoded = json.dumps(body, ensure_ascii=True).encode()
        out.append(Case(label, encoded, "application/json", frozenset({400})))
    return out


def all_cases() -> Iterator[Any]:
    for endpoint in ENDPOINTS:
        for case in [*raw_cases(), *field_cases(endpoint)]:
            yield pytest.param(endpoint, case, id=f"{endpoint} | {case.name}")


BODY_CASES = list(all_cases())


# -- the world the requests run in --------------------------------------------------------------


@dataclass
class World:
    info: TargetInfo
    app: AppCtx
    owner: UserCtx
    ids: dict[str, str]
    users: Iterator[UserCtx]

    def headers(self, security: str | None, user: UserCtx) -> dict[str, str]:
        if security == "AdminKey":
            return {"X-Admin-Key": self.info.admin_key}
        if security == "ApiKey":
            return {"X-API-Key": self.app.api_key}
        if security == "BearerAuth":
            return {"Authorization": f"Bearer {user.access_token}"}
        return {}

    def path(self, template: str, **override: str) -> str:
        values = {**self.ids, **override}
        return template.format(**values)


@pytest.fixture(scope="module")
def world(info: TargetInfo, chat: ChatClient, admin: ChatClient) -> World:
    app = make_app(chat, admin)
    owner = app.user()
    channel = expect(owner.client.post("/v1/channels", {"name": "bad", "kind": "public"}), 201)
    channel_id = channel["channel_id"]
    message = expect(
        owner.client.post(f"/v1/channels/{channel_id}/messages", {"text": "target"}), 201
    )
    poll = expect(
        owner.client.post(
            f"/v1/channels/{channel_id}/polls", {"question": "q?", "options": ["a", "b"]}
        ),
        201,
    )
    hook = expect(
        app.client.post("/v1/webhooks", {"url": "https://example.com/h", "events": ["*"]}), 201
    )
    # Enough members that no one passes a rate-limit burst, so validation is what answers.
    needed = (len(BODY_CASES) + len(PATH_CASES) + 10) // USES_PER_USER + 1
    members = [app.user() for _ in range(needed)]
    for i in range(0, len(members), 100):
        expect(
            owner.client.post(
                f"/v1/channels/{channel_id}/members",
                {"user_ids": [m.user_id for m in members[i : i + 100]]},
            ),
            200,
        )
    users = itertools.chain.from_iterable(itertools.repeat(m, USES_PER_USER) for m in members)
    ids = {
        "app_id": app.app_id,
        "key_id": app.key_id,
        "user_id": owner.user_id,
        "channel_id": channel_id,
        "message_id": message["message_id"],
        "poll_id": poll["poll_id"],
        "webhook_id": hook["webhook_id"],
        "upload_id": "up_00000000000000000000",
        "emoji": "%F0%9F%91%8D",
    }
    return World(info, app, owner, ids, iter(users))


def send(
    client: ChatClient, method: str, target: str, body: bytes | None, headers: dict[str, str]
) -> Response:
    url = urlsplit(client.base_url)
    conn = http.client.HTTPSConnection(
        url.hostname or "", url.port, context=client.ssl_context(), timeout=15
    )
    try:
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return Response(
            resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, method, target
        )
    except (ConnectionResetError, BrokenPipeError):
        # The edge may close the connection before reading all of an oversized request.
        return Response(499, {}, b"", method, target)
    finally:
        conn.close()


def assert_error_shape(resp: Response, statuses: frozenset[int]) -> None:
    __tracebackhide__ = True
    assert resp.status < 500, f"{resp.method} {resp.path} must never answer 5xx (got {resp})"
    assert resp.status in statuses, (
        f"{resp.method} {resp.path} must answer {sorted(statuses)} (got {resp})"
    )
    error = resp.json().get("error", {})
    assert set(error) >= {"code", "message", "request_id"}, (
        f"{resp.method} {resp.path} must answer in the contract's error shape (got {resp})"
    )


@pytest.mark.parametrize(("endpoint", "case"), BODY_CASES)
def test_hostile_json_bodies_get_4xx_in_the_error_shape(
    world: World, chat: ChatClient, endpoint: Endpoint, case: Case
) -> None:
    """A 5xx on client input means a crash path an attacker can drive at will."""
    user = next(world.users)
    headers = world.headers(endpoint.security, user)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    resp = send(chat, endpoint.method, world.path(endpoint.path), case.body, headers)
    assert_error_shape(resp, case.statuses)


def test_a_valid_body_passes_validation(world: World, chat: ChatClient) -> None:
    """Positive control: the same requests with nothing wrong are accepted, so the 400s above
    come from the defects put in, not from the world (ids, credentials, rate limits)."""
    user = next(world.users)
    target = world.path("/v1/channels/{channel_id}/messages")
    headers = {**world.headers("BearerAuth", user), "Content-Type": "application/json"}
    resp = send(chat, "POST", target, json.dumps({"text": "fine"}).encode(), headers)
    assert resp.status == 201, f"a valid message must be accepted (got {resp})"
    endpoint = next(e for e in ENDPOINTS if e.path == "/v1/channels/{channel_id}/messages")
    resp = send(chat, "POST", target, json.dumps(example(endpoint.schema)).encode(), headers)
    assert resp.status == 201, f"the schema's example body must be accepted (got {resp})"


# -- path ids -----------------------------------------------------------------------------------

BAD_IDS = {
    "dot-dot-slash": "..%2f..%2f..%2fetc%2fpasswd",
    "300 chars": "a" * 300,
    "unicode": "%C3%BCn%C3%AFc%C3%B8d%C3%A9",
    "percent-encoded NUL": "a%00b",
    "invalid utf-8": "%ff%fe",
    "dot-dot": "..",
    "quote and angle": "%22%3Cscript%3E",
    "sql-ish": "1%27%20OR%20%271%27%3D%271",
}


@dataclass(frozen=True)
class PathCase:
    method: str
    path: str
    param: str
    bad: str
    security: str | None


EMOJI_INVALID = frozenset({"300 chars", "percent-encoded NUL"})


def path_cases() -> Iterator[Any]:
    for path, item in DOC["paths"].items():
        params = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
        for method, operation in item.items():
            if method == "parameters" or not params:
                continue
            for param in params:
                for label, bad in BAD_IDS.items():
                    if param == "emoji" and label not in EMOJI_INVALID:
                        continue  # an emoji is free text, not an id: only these are invalid
                    case = PathCase(method.upper(), path, param, bad, security_of(operation))
                    yield pytest.param(case, id=f"{method.upper()} {path} | {param}={label}")


PATH_CASES = list(path_cases())


@pytest.mark.parametrize("case", PATH_CASES)
def test_bad_path_ids_get_400_or_404(world: World, chat: ChatClient, case: PathCase) -> None:
    """Ids go into SQL, storage keys and logs: a malformed one must be refused, not crash."""
    user = next(world.users)
    headers = world.headers(case.security, user)
    body = None
    if case.method in ("POST", "PUT", "PATCH"):
        headers["Content-Type"] = "application/json"
        body = b"{}"
    target = world.path(case.path, **{case.param: case.bad})
    resp = send(chat, case.method, target, body, headers)
    assert resp.status < 500, f"{case.method} {target} must never answer 5xx (got {resp})"
    assert resp.status in (400, 404), f"{case.method} {target} must answer 400 or 404 (got {resp})"


# -- headers and the aftermath --------------------------------------------------------------------

HUGE_HEADERS: dict[str, Callable[[World], dict[str, str]]] = {
    "one 64 KB header": lambda w: {"X-Padding": "a" * 65_536},
    "64 KB cookie": lambda w: {"Cookie": "c=" + "b" * 65_536},
    "64 KB bearer token": lambda w: {"Authorization": "Bearer " + "c" * 65_536},
    "200 headers of 400 bytes": lambda w: {f"X-H{i}": "d" * 400 for i in range(200)},
}


@pytest.mark.parametrize("shape", list(HUGE_HEADERS))
def test_a_64_kb_header_is_refused_by_the_edge(world: World, chat: ChatClient, shape: str) -> None:
    resp = send(chat, "GET", "/v1/me", None, HUGE_HEADERS[shape](world))
    assert 400 <= resp.status < 500, f"{shape} must get a 4xx from the edge (got {resp})"


def test_the_service_is_still_ready_after_all_that(chat: ChatClient, world: World) -> None:
    """Runs last in this module: nothing above may have broken a worker."""
    for _ in range(4):  # every worker behind the edge
        resp = chat.get("/v1/health/ready")
        assert resp.status == 200, f"after hostile input, readiness must be 200 (got {resp})"
    expect(world.owner.client.get("/v1/me"), 200)


def test_the_document_lists_json_endpoints() -> None:
    """The parametrization above is only as good as the document it reads."""
    assert len(ENDPOINTS) >= 13, f"expected every JSON body endpoint (got {ENDPOINTS})"
    assert copy.deepcopy(DOC) == openapi_document()

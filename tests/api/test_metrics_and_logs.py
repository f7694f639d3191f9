"""Operability: each worker's /metrics has the metric names of the original ChatSDK monitoring
guide with bounded route labels, and the logs are JSON lines with the request id and the caller,
never with a secret in them."""

from __future__ import annotations

import http.client
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from chatsdk.app import create_app
from chatsdk.settings import Settings
from prometheus_client.parser import text_string_to_metric_families

from preflight.client import ChatClient, expect
from preflight.targets.native import NativeTarget
from tests.api.conftest import AppCtx, UserCtx, make_app

GUIDE_METRICS = (
    "http_requests_total",
    "http_request_duration_seconds",
    "http_request_size_bytes",
    "http_response_size_bytes",
    "active_websocket_connections",
    "messages_sent_total",
    "messages_received_total",
    "db_query_duration_seconds",
    "cache_hits_total",
    "cache_misses_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
)
ROUTE_LABELLED = (
    "http_requests_total",
    "http_request_duration_seconds_count",
    "http_request_size_bytes_count",
    "http_response_size_bytes_count",
)


def scrape(worker_url: str) -> str:
    url = urlsplit(worker_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, f"GET {worker_url}/metrics must answer 200 (got {resp.status})"
        return body
    finally:
        conn.close()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def route_labels(text: str) -> set[str]:
    return {labels["route"] for name, labels, _ in samples(text) if name in ROUTE_LABELLED}


def route_templates() -> set[str]:
    """Every route the app can have: the demo routes too, since tests/api/test_demo.py may have
    called them on the same stack before."""
    settings = Settings(
        database_url="postgresql://u:p@127.0.0.1:1/db",
        redis_url="redis://127.0.0.1:1/0",
        admin_key="a" * 32,
        jwt_secret="j" * 48,
        demo=True,
    )
    return {
        r.resource.canonical for r in create_app(settings).router.routes() if r.resource is not None
    }


@dataclass
class World:
    app: AppCtx
    user: UserCtx
    channel_id: str


@pytest.fixture(scope="module")
def world(chat: ChatClient, admin: ChatClient) -> World:
    app = make_app(chat, admin)
    user = app.user()
    channel = expect(user.client.post("/v1/channels", {"name": "ops", "kind": "public"}), 201)
    expect(
        user.client.post(f"/v1/channels/{channel['channel_id']}/messages", {"text": "hello"}),
        201,
    )
    return World(app, user, channel["channel_id"])


def test_each_worker_exposes_the_guide_metric_names(stack: NativeTarget, world: World) -> None:
    """Dashboards and alert rules written for the original guide's names must find real series."""
    for _ in range(4):  # both workers see some traffic (the edge balances round robin)
        expect(world.user.client.get(f"/v1/channels/{world.channel_id}/messages"), 200)
    for worker in stack.worker_urls:
        text = scrape(worker)
        missing = [name for name in GUIDE_METRICS if f"# TYPE {name} " not in text]
        assert not missing, f"{worker}/metrics must expose {missing}"
    merged = [s for worker in stack.worker_urls for s in samples(scrape(worker))]
    db_ops = {labels["operation"] for name, labels, _ in merged if name.startswith("db_query")}
    # A send is one statement that bumps the channel's seq and inserts the message and its event.
    assert "with update channels" in db_ops, (
        f"db_query_duration_seconds must time the message send (operations: {sorted(db_ops)})"
    )
    sizes = [
        value
        for name, labels, value in merged
        if name == "http_request_size_bytes_sum"
        and labels["route"] == "/v1/channels/{channel_id}/messages"
        and labels["method"] == "POST"
    ]
    assert sum(sizes) > 0, "the POST body size must be observed"
    responses = [
        value
        for name, labels, value in merged
        if name == "http_response_size_bytes_sum" and labels["method"] == "GET"
    ]
    assert sum(responses) > 0, "response sizes must be observed"


def test_route_labels_are_templates_not_ids(stack: NativeTarget, world: World) -> None:
    """A label per raw path lets any client blow up the time-series database."""
    before = set().union(*(route_labels(scrape(w)) for w in stack.worker_urls))
    ids = [f"ch_{secrets.token_hex(10)}" for _ in range(50)]
    for channel_id in ids:
        assert world.user.client.get(f"/v1/channels/{channel_id}").status == 404
    for i in range(10):  # paths no route matches
        assert world.user.client.get(f"/v1/no-such-{secrets.token_hex(4)}/{i}").status == 404
    after = set().union(*(route_labels(scrape(w)) for w in stack.worker_urls))
    added = after - before
    assert added <= {"/v1/channels/{channel_id}", "unmatched"}, (
        f"60 requests to distinct paths must add no route label but templates (added {added})"
    )
    allowed = route_templates() | {"unmatched"}
    assert after <= allowed, f"route labels must be route templates (got {after - allowed})"
    assert not any(i in label for label in after for i in ids)


# -- logs ---------------------------------------------------------------------------------------


def log_files(stack: NativeTarget) -> list[Path]:
    assert stack.dir is not None
    return sorted(p for p in stack.dir.rglob("*.log") if p.is_file())


def api_log_lines(stack: NativeTarget) -> Iterator[str]:
    assert stack.dir is not None
    for path in sorted((stack.dir / "logs").glob("api-*.log")):
        yield from path.read_text(errors="replace").splitlines()


def access_lines(stack: NativeTarget, request_ids: set[str]) -> dict[str, dict[str, str]]:
    found = {}
    for line in api_log_lines(stack):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"every API log line must be JSON (got {line[:200]!r})")
        assert isinstance(entry, dict), f"a log line must be a JSON object (got {line[:200]!r})"
        assert {"ts", "level", "msg"} <= set(entry), f"a log line lacks ts/level/msg: {line[:200]}"
        if entry.get("logger") == "chatsdk.access" and entry.get("request_id") in request_ids:
            found[entry["request_id"]] = entry
    return found


def test_api_logs_are_json_with_request_id_app_and_user(stack: NativeTarget, world: World) -> None:
    """Without the request id and the caller, an incident cannot be traced to anyone."""
    as_user = world.user.client.get("/v1/me")
    as_app = world.app.client.post("/v1/tokens", {"user_id": "log-probe"})
    anonymous = world.app.base.get("/v1/health/live")
    wanted = {
        as_user.headers["x-request-id"]: ("user", as_user),
        as_app.headers["x-request-id"]: ("app", as_app),
        anonymous.headers["x-request-id"]: ("none", anonymous),
    }
    found: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + 5
    # The access line is written just after the response is sent: poll briefly for it.
    while set(found) != set(wanted) and time.monotonic() < deadline:
        found = access_lines(stack, set(wanted))
        time.sleep(0.05)
    assert set(found) == set(wanted), "each request must have an access line with its request_id"
    for request_id, (who, resp) in wanted.items():
        entry = found[request_id]
        if who == "user":
            assert entry.get("app_id") == world.app.app_id, f"{resp} must log app_id: {entry}"
            assert entry.get("user_id") == world.user.user_id, f"{resp} must log user_id: {entry}"
        elif who == "app":
            assert entry.get("app_id") == world.app.app_id, f"{resp} must log app_id: {entry}"
            assert "user_id" not in entry
        else:
            assert not {"app_id", "user_id"} & set(entry), (
                f"an anonymous request must not inherit another request's caller: {entry}"
            )


def _raw(client: ChatClient, method: str, target: str, headers: dict[str, str]) -> int:
    """A request with arbitrary headers and target (ChatClient would add its own credentials)."""
    url = urlsplit(client.base_url)
    conn = http.client.HTTPSConnection(
        url.hostname or "", url.port, context=client.ssl_context(), timeout=10
    )
    try:
        conn.request(method, target, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_no_log_line_contains_a_secret(stack: NativeTarget, world: World) -> None:
    """Logs are read by many and kept long: a key or token in them is a key handed out."""
    assert stack.info is not None
    info = stack.info
    pg_password = urlsplit(info.stores.postgres_dsn or "").password or ""
    redis_password = urlsplit(info.stores.redis_url or "").password or ""
    access, refresh = world.user.access_token, world.user.refresh_token
    api_key, admin_key = world.app.api_key, info.admin_key
    sensitive = {
        "api key": api_key,
        "access token": access,
        "refresh token": refresh,
        "admin key": admin_key,
        "postgres password": pg_password,
        "redis password": redis_password,
    }
    assert all(len(v) >= 16 for v in sensitive.values()), "the fixtures must have real secrets"
    client = world.app.base
    me = "/v1/me"
    for value in sensitive.values():
        q = quote(value, safe="")
        # In the query string (refused with 400 before anything else).
        for name in ("api_key", "token", "access_token", "admin_key", "password", "q"):
            _raw(client, "GET", f"{me}?{name}={q}", {})
        # In the wrong headers, or malformed.
        for headers in (
            {"Authorization": f"Bearer {value}"},
            {"Authorization": f"Basic {value}"},
            {"Authorization": value},
            {"X-API-Key": value},
            {"X-Admin-Key": value},
            {"X-API-Key": f"ck_{value}.{value}"},
            {"Cookie": f"session={value}"},
        ):
            _raw(client, "GET", me, headers)
            _raw(client, "POST", "/v1/tokens", headers)
    # The legitimate uses too (headers only).
    expect(world.user.client.get(me), 200)
    expect(client.post("/v1/tokens/refresh", {"refresh_token": refresh}), 201)
    assert not leaks_in(log_files(stack), sensitive, stack), "see above"


def leaks_in(files: list[Path], sensitive: dict[str, str], stack: NativeTarget) -> list[str]:
    __tracebackhide__ = True
    assert any(p.name.startswith("api-") for p in files), f"no API logs found in {files}"
    leaks = [
        f"{what} in {path.relative_to(stack.dir or path)}"
        for path in files
        for what, value in sensitive.items()
        if value in path.read_text(errors="replace")
    ]
    assert not leaks, f"log files must never contain secrets (found: {leaks})"
    return leaks


def test_the_api_masks_secrets_sent_as_path_ids(stack: NativeTarget, world: World) -> None:
    """A client that puts a key or token where an id goes must not get it into the API's logs.
    (The edge logs the path as sent; it cannot know which path segment is a secret.)"""
    assert stack.info is not None
    assert stack.dir is not None
    sensitive = {
        "api key": world.app.api_key,
        "access token": world.user.access_token,
        "admin key": stack.info.admin_key,
        "postgres password": urlsplit(stack.info.stores.postgres_dsn or "").password or "",
    }
    for value in sensitive.values():
        q = quote(value, safe="")
        _raw(
            world.app.base,
            "GET",
            f"/v1/users/{q}",
            {"Authorization": f"Bearer {world.user.access_token}"},
        )
        _raw(world.app.base, "POST", f"/v1/users/{q}/revoke", {"X-API-Key": world.app.api_key})
    # Control: those requests were logged, with the secret masked, so the scan looks at lines
    # that would otherwise have carried them. The access line is written after the response
    # has gone out: wait (bounded) until every one is there.
    deadline = time.monotonic() + 10
    while True:
        masked = [line for line in api_log_lines(stack) if '"path": "/v1/users/[redacted]' in line]
        if len(masked) >= 2 * len(sensitive) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(masked) >= 2 * len(sensitive), "the API must log those requests, masked"
    leaks_in(sorted((stack.dir / "logs").glob("api-*.log")), sensitive, stack)


def ready_gauge(worker: str) -> float:
    return next(v for name, _, v in samples(scrape(worker)) if name == "chatsdk_ready")


def test_the_ready_gauge_is_checked_at_every_scrape(stack: NativeTarget) -> None:
    """chatsdk_ready follows the dependencies even when nobody asks /health/ready (no kubelet
    on a plain host): a value left at 0 after an outage would keep APINotReady pending."""
    assert stack.info is not None
    worker = stack.worker_urls[0]
    redis = stack.info.drills.control["redis"]
    redis.stop()
    try:
        assert ready_gauge(worker) == 0, "a scrape while Redis is down must report not ready"
    finally:
        redis.start()
    deadline = time.monotonic() + 15
    while ready_gauge(worker) != 1:
        assert time.monotonic() < deadline, "the gauge must be 1 again once Redis is back"
        time.sleep(0.2)

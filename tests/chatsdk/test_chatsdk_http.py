from __future__ import annotations

import asyncio
import errno
import json
import re
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from chatsdk.keys import LIFECYCLE
from chatsdk.middlewares import dependency_down
from chatsdk.server import RunningServer
from chatsdk.settings import Settings

Wait = Callable[..., Any]
RunApp = Callable[..., Any]
ERROR_CODE = re.compile(r"[a-z][a-z0-9_]*")


def assert_error_shape(body: dict[str, Any], code: str, request_id: str) -> None:
    __tracebackhide__ = True
    assert set(body) == {"error"}, f"error body must only hold 'error' (got {body})"
    error = body["error"]
    assert set(error) == {"code", "message", "request_id"}, f"error fields (got {error})"
    assert error["code"] == code, f"error code must be {code} (got {error['code']})"
    assert ERROR_CODE.fullmatch(error["code"])
    assert error["message"].endswith("."), f"message must be one sentence (got {error})"
    assert error["request_id"] == request_id


def test_live_answers_200(settings: Settings, run_app: RunApp) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        async with client.get("/v1/health/live") as response:
            assert response.status == 200
            assert await response.json() == {"status": "live"}

    run_app(settings, scenario, ready=False)


def test_ready_answers_200_with_every_check_ok(settings: Settings, run_app: RunApp) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        async with client.get("/v1/health/ready") as response:
            assert response.status == 200
            assert await response.json() == {
                "status": "ready",
                "checks": {"database": "ok", "redis": "ok", "migrations": "ok"},
            }

    run_app(settings, scenario)


def test_the_api_starts_without_its_databases_and_says_what_is_missing(
    env_for: Callable[..., dict[str, str]], run_app: RunApp, wait_status: Wait
) -> None:
    settings = Settings.from_env(
        env_for("postgresql://u:p@127.0.0.1:1/none", "redis://:p@127.0.0.1:1/0")
    )

    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        async with client.get("/v1/health/live") as response:
            assert response.status == 200
        async with client.get("/v1/health/ready") as response:
            body = await response.json()
            assert response.status == 503
            assert response.headers["Retry-After"].isdigit()
        assert body["status"] == "not_ready"
        assert body["checks"] == {
            "database": "unavailable",
            "redis": "unavailable",
            "migrations": "pending",
        }
        assert body["error"]["code"] == "not_ready"
        assert "database" in body["error"]["message"]

    run_app(settings, scenario, ready=False)


def test_readiness_follows_redis_down_and_back_up_without_a_restart(
    database_url: str,
    own_redis: Any,
    env_for: Callable[..., dict[str, str]],
    run_app: RunApp,
    wait_status: Wait,
) -> None:
    settings = Settings.from_env(env_for(database_url, own_redis.url))

    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        await asyncio.to_thread(own_redis.stop)
        async with client.get("/v1/health/ready") as response:
            body = await response.json()
            assert response.status == 503
            assert response.headers["Retry-After"].isdigit()
        assert body["checks"] == {"database": "ok", "redis": "unavailable", "migrations": "ok"}
        assert "redis" in body["error"]["message"]
        await asyncio.to_thread(own_redis.start)
        body = await wait_status(client, "/v1/health/ready", 200, within=10)
        assert body["checks"]["redis"] == "ok"

    run_app(settings, scenario)


def test_readiness_answers_503_draining_once_draining(settings: Settings, run_app: RunApp) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        server.app[LIFECYCLE].draining = True
        async with client.get("/v1/health/ready") as response:
            body = await response.json()
            assert response.status == 503
        assert body["status"] == "draining"
        assert body["error"]["code"] == "draining"

    run_app(settings, scenario)


def test_an_unknown_route_is_a_json_404(settings: Settings, run_app: RunApp) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        async with client.get("/v1/nope", headers={"X-Request-ID": "req-404"}) as response:
            assert response.status == 404
            assert response.content_type == "application/json"
            assert_error_shape(await response.json(), "not_found", "req-404")

    run_app(settings, scenario, ready=False)


def test_a_wrong_method_is_a_json_405_with_allow(settings: Settings, run_app: RunApp) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        async with client.post("/v1/health/live", headers={"X-Request-ID": "r405"}) as response:
            assert response.status == 405
            assert "GET" in response.headers["Allow"]
            assert_error_shape(await response.json(), "method_not_allowed", "r405")

    run_app(settings, scenario, ready=False)


def test_an_unhandled_error_is_a_json_500_without_details(
    settings: Settings, run_app: RunApp
) -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("/secret/path.py SELECT password FROM users")

    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        async with client.get("/v1/boom", headers={"X-Request-ID": "r500"}) as response:
            text = await response.text()
            assert response.status == 500
        assert "secret" not in text
        assert "Traceback" not in text
        assert_error_shape(json.loads(text), "internal_error", "r500")

    # The failing route is added to this test's own app instance, never to the real app.
    run_app(settings, scenario, ready=False, extra_routes=[web.get("/v1/boom", boom)])


@pytest.mark.parametrize("supplied", ["abc-123", "A.b_c-9", "x" * 128])
def test_a_sane_request_id_is_echoed(settings: Settings, run_app: RunApp, supplied: str) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        async with client.get("/v1/health/live", headers={"X-Request-ID": supplied}) as response:
            assert response.headers["X-Request-ID"] == supplied

    run_app(settings, scenario, ready=False)


@pytest.mark.parametrize("supplied", [None, "", "x" * 129, "has space", "semi;colon", "ü"])
def test_a_missing_or_insane_request_id_is_replaced(
    settings: Settings, run_app: RunApp, supplied: str | None
) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        headers = {} if supplied is None else {"X-Request-ID": supplied}
        async with client.get("/v1/missing", headers=headers) as response:
            generated = response.headers["X-Request-ID"]
            body = await response.json()
        assert generated != supplied
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", generated)
        assert body["error"]["request_id"] == generated

    run_app(settings, scenario, ready=False)


def test_metrics_are_served_in_prometheus_text_format(settings: Settings, run_app: RunApp) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> str:
        async with client.get("/v1/nope"):
            pass
        async with client.get("/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return await response.text()

    text = run_app(settings, scenario)
    for expected in (
        'http_requests_total{method="GET",route="/v1/health/ready",status="200"}',
        'http_requests_total{method="GET",route="unmatched",status="404"}',
        'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/health/ready"}',
        "chatsdk_ready 1.0",
        "chatsdk_draining 0.0",
        "chatsdk_db_up 1.0",
        "chatsdk_redis_up 1.0",
    ):
        assert expected in text, f"/metrics must contain {expected}"
    assert "/v1/nope" not in text, "unknown paths must not become metric labels"


def test_the_openapi_document_describes_the_existing_routes(
    settings: Settings, run_app: RunApp
) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> Any:
        async with client.get("/v1/openapi.json") as response:
            assert response.status == 200
            return await response.json()

    doc = run_app(settings, scenario, ready=False)
    assert doc["openapi"].startswith("3.1")
    assert {"title", "version"} <= set(doc["info"])
    # The full route-by-route match is tests/api/test_openapi.py; here: the service routes.
    assert {"/v1/health/live", "/v1/health/ready", "/v1/openapi.json"} <= set(doc["paths"])
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if method not in {"get", "put", "post", "patch", "delete"}:
                continue  # path-level keys such as "parameters"
            assert operation["responses"], f"{method.upper()} {path} must list its responses"
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(doc))
    assert set(refs) <= set(doc["components"]["schemas"])


@pytest.mark.parametrize(
    ("exc", "down"),
    [
        # On a container network a stopped PostgreSQL's name stops resolving (the containers
        # target's OPS-DB-LOSS drill saw these as 500s before they were classified).
        (socket.gaierror(-2, "Name or service not known"), True),
        (OSError(errno.EHOSTUNREACH, "No route to host"), True),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
        (TimeoutError(), True),
        (OSError(errno.ENOENT, "No such file or directory"), False),
        (ValueError("a bug"), False),
    ],
    ids=["dns", "unreachable", "refused", "timeout", "enoent", "bug"],
)
def test_a_store_that_cannot_be_reached_is_a_503_and_a_bug_is_not(
    exc: BaseException, down: bool
) -> None:
    assert dependency_down(exc) is down

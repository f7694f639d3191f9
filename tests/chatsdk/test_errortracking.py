"""chatsdk/errortracking.py: the settings, what leaves in an event, and the verification route.
The whole path (a worker reporting to the stand-in through sentry-sdk) runs in
tests/checks/test_error_tracking_variants.py and tests/targets/test_errortracker.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from chatsdk.app import create_app
from chatsdk.errors import SettingsError
from chatsdk.errortracking import (
    RELEASE,
    VERIFY_PATH,
    ErrorTracking,
    init_error_tracking,
    scrub_event,
)
from chatsdk.logs import Redactor, bind_request_context
from chatsdk.settings import Settings
from chatsdk.version import __version__

ADMIN_KEY = "admin-key-" + "k" * 30
JWT_SECRET = "jwt-secret-" + "s" * 30
API_KEY = "ck_app1.secretpart-0123456789"


def test_error_tracking_is_off_without_a_dsn() -> None:
    config = ErrorTracking.from_env({})
    assert not config.enabled
    assert not init_error_tracking(config, "0", ())
    assert ErrorTracking.from_env({"CHATSDK_SENTRY_DSN": "  "}).enabled is False


def test_a_dsn_turns_it_on_with_the_release_and_environment() -> None:
    config = ErrorTracking.from_env(
        {"CHATSDK_SENTRY_DSN": "https://k3y@errors.example/42", "CHATSDK_SENTRY_ENVIRONMENT": "eu"}
    )
    assert config.enabled
    assert config.host == "errors.example"
    assert config.environment == "eu"
    assert config.release == RELEASE == f"chatsdk@{__version__}"
    assert "k3y" not in repr(config)
    assert ErrorTracking.from_env({"CHATSDK_SENTRY_DSN": "http://k@h/1"}).environment == (
        "production"
    )


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"CHATSDK_SENTRY_DSN": "https://errors.example/42"}, "CHATSDK_SENTRY_DSN"),
        ({"CHATSDK_SENTRY_DSN": "not a url"}, "CHATSDK_SENTRY_DSN"),
        ({"CHATSDK_SENTRY_DSN": "ftp://k@errors.example/42"}, "CHATSDK_SENTRY_DSN"),
        ({"CHATSDK_SENTRY_ENVIRONMENT": "prod/eu"}, "CHATSDK_SENTRY_ENVIRONMENT"),
        ({"CHATSDK_SENTRY_ENVIRONMENT": "e" * 65}, "CHATSDK_SENTRY_ENVIRONMENT"),
    ],
)
def test_a_bad_value_names_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        ErrorTracking.from_env(environ)


def event_with_credentials() -> dict[str, Any]:
    return {
        "event_id": "e1",
        "tags": {"custom": "x"},
        "user": {"ip_address": "203.0.113.9"},
        "request": {
            "url": "http://127.0.0.1:8080/v1/admin/debug/error",
            "method": "POST",
            "query_string": "token=abc",
            "cookies": {"session": "s"},
            "data": '{"password": "p"}',
            "env": {"REMOTE_ADDR": "203.0.113.9"},
            "headers": {
                "Host": "127.0.0.1",
                "User-Agent": "probe",
                "X-Request-ID": "rid-1",
                "Authorization": "Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl",
                "X-Admin-Key": ADMIN_KEY,
                "X-API-Key": API_KEY,
                "X-Forwarded-For": "203.0.113.9",
            },
        },
        "breadcrumbs": {"values": [{"message": f"admin key was {ADMIN_KEY}"}]},
        "exception": {"values": [{"type": "Boom", "value": f"jwt {JWT_SECRET} and {API_KEY}"}]},
    }


def test_an_event_leaves_with_its_request_id_and_without_credentials_or_personal_data() -> None:
    redact = Redactor([ADMIN_KEY, JWT_SECRET])
    with bind_request_context("rid-1"):
        event = scrub_event(event_with_credentials(), {}, redact=redact, worker_id="3")
    assert event["tags"] == {"custom": "x", "request_id": "rid-1", "worker_id": "3"}
    assert set(event["request"]["headers"]) == {"Host", "User-Agent", "X-Request-ID"}
    assert set(event["request"]) == {"url", "method", "headers"}
    assert "user" not in event
    text = json.dumps(event)
    for secret in (ADMIN_KEY, JWT_SECRET, API_KEY, "203.0.113.9", "eyJhbGciOi"):
        assert secret not in text
    assert event["exception"]["values"][0]["type"] == "Boom"


def test_an_event_inside_a_request_carries_that_request_without_query_or_credentials() -> None:
    request = make_mocked_request(
        "POST",
        "/v1/channels/c1/messages?token=abc",
        headers={"Host": "chat.example", "User-Agent": "probe", "X-Admin-Key": ADMIN_KEY},
    )
    with bind_request_context("rid-2", request):
        event = scrub_event({"event_id": "e2"}, {}, redact=Redactor(), worker_id="1")
    assert event["request"] == {
        "url": "http://chat.example/v1/channels/c1/messages",
        "method": "POST",
        "headers": {"Host": "chat.example", "User-Agent": "probe"},
    }
    assert event["tags"]["request_id"] == "rid-2"


def test_an_event_outside_a_request_has_no_request_id() -> None:
    event = scrub_event({"tags": [["a", "b"]]}, {}, redact=Redactor(), worker_id="0")
    assert event["tags"] == {"a": "b", "worker_id": "0"}


def settings() -> Settings:
    return Settings(
        database_url="postgresql://u:p@127.0.0.1:1/db",
        redis_url="redis://127.0.0.1:1/0",
        admin_key=ADMIN_KEY,
        jwt_secret=JWT_SECRET,
    )


def test_the_verification_route_raises_for_the_admin_only() -> None:
    async def scenario() -> tuple[list[int], dict[str, Any], str]:
        async with TestClient(TestServer(create_app(settings()))) as client:
            anonymous = await client.post(VERIFY_PATH)
            wrong = await client.post(VERIFY_PATH, headers={"X-Admin-Key": "x" * 32})
            admin = await client.post(VERIFY_PATH, headers={"X-Admin-Key": ADMIN_KEY})
            body: dict[str, Any] = await admin.json()
            statuses = [anonymous.status, wrong.status, admin.status]
            return statuses, body, admin.headers["X-Request-ID"]

    statuses, body, request_id = asyncio.run(scenario())
    assert statuses == [401, 401, 500]
    assert body["error"]["code"] == "internal_error"
    assert body["error"]["request_id"] == request_id
    assert "Traceback" not in json.dumps(body)

"""The real native stack (through NGINX) for the API's integration tests, and a small world of
apps and users built through the public API."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from preflight.client import ChatClient, expect
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeOptions, NativeTarget

_counter = itertools.count(1)


@dataclass
class UserCtx:
    app_id: str
    user_id: str
    access_token: str
    refresh_token: str
    client: ChatClient


@dataclass
class AppCtx:
    app_id: str
    api_key: str
    key_id: str
    client: ChatClient  # authenticated as the app's backend
    base: ChatClient

    def user(self, user_id: str | None = None, name: str | None = None) -> UserCtx:
        user_id = user_id or f"user{next(_counter)}"
        body: dict[str, str] = {"user_id": user_id}
        if name:
            body["name"] = name
        tokens = expect(self.client.post("/v1/tokens", body), 201)
        return UserCtx(
            self.app_id,
            user_id,
            tokens["access_token"],
            tokens["refresh_token"],
            self.base.as_user(tokens["access_token"]),
        )


@pytest.fixture(scope="session")
def stack() -> Iterator[NativeTarget]:
    # Two workers, so cross-worker behaviour is exercised; edge limits raised because the suite
    # drives the API from one address (the limits are tested in tests/targets).
    target = NativeTarget(NativeOptions(workers=2, api_rate_per_s=20000, ws_rate_per_s=5000))
    with target:
        yield target


@pytest.fixture(scope="session")
def info(stack: NativeTarget) -> TargetInfo:
    assert stack.info is not None
    return stack.info


@pytest.fixture(scope="session")
def chat(info: TargetInfo) -> ChatClient:
    return ChatClient.for_target(info)


@pytest.fixture(scope="session")
def admin(chat: ChatClient, info: TargetInfo) -> ChatClient:
    return chat.as_admin(info.admin_key)


def make_app(chat: ChatClient, admin: ChatClient) -> AppCtx:
    created = expect(admin.post("/v1/apps", {"name": f"app{next(_counter)}"}), 201)
    return AppCtx(
        created["app_id"],
        created["api_key"],
        created["key_id"],
        chat.as_app(created["api_key"]),
        chat,
    )


@pytest.fixture
def app(chat: ChatClient, admin: ChatClient) -> AppCtx:
    return make_app(chat, admin)


@pytest.fixture
def other_app(chat: ChatClient, admin: ChatClient) -> AppCtx:
    return make_app(chat, admin)

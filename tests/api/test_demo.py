"""The demo sign-in of the bundled web client (chatsdk/demo.py): off unless CHATSDK_DEMO is set
(its routes do not even exist then), and when on, a name becomes a demo user with a token pair
and a seat in the demo's channels, and nothing more."""

from __future__ import annotations

import secrets

import pytest
from chatsdk.app import create_app
from chatsdk.demo import user_id_for
from chatsdk.errors import SettingsError
from chatsdk.settings import Settings

from preflight.client import ChatClient, expect
from tests.api.conftest import AppCtx

REQUIRED = {
    "CHATSDK_DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db",
    "CHATSDK_REDIS_URL": "redis://127.0.0.1:1/0",
    "CHATSDK_ADMIN_KEY": "a" * 32,
    "CHATSDK_JWT_SECRET": "j" * 48,
}


def _routes(environ: dict[str, str]) -> set[str]:
    app = create_app(Settings.from_env(environ))
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


def test_demo_mode_is_off_unless_asked_for() -> None:
    assert Settings.from_env(REQUIRED).demo is False
    assert not {"/v1/demo", "/v1/demo/session"} & _routes(REQUIRED)
    assert Settings.from_env({**REQUIRED, "CHATSDK_DEMO": "0"}).demo is False
    on = {**REQUIRED, "CHATSDK_DEMO": "1"}
    assert Settings.from_env(on).demo is True
    assert {"/v1/demo", "/v1/demo/session"} <= _routes(on)


def test_a_bad_demo_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^CHATSDK_DEMO must be 1, true"):
        Settings.from_env({**REQUIRED, "CHATSDK_DEMO": "maybe"})


@pytest.mark.parametrize(
    ("name", "user_id"),
    [
        ("Ada Lovelace", "demo-ada-lovelace"),
        ("  Grace  Hopper ", "demo-grace-hopper"),
        ("Zoë", "demo-zoe"),
        ("李", "demo-user"),
        ("../../etc", "demo-etc"),
    ],
)
def test_demo_user_ids_are_plain_slugs(name: str, user_id: str) -> None:
    assert user_id_for(name) == user_id


def test_a_name_signs_in_to_the_demo_channels(chat: ChatClient) -> None:
    assert expect(chat.get("/v1/demo"), 200)["demo"] is True
    name = f"Demo {secrets.token_hex(3)}"
    pair = expect(chat.post("/v1/demo/session", {"name": name}), 201)
    assert pair["user_id"] == user_id_for(name)
    assert pair["app_id"] == "app_demo"
    user = chat.as_user(pair["access_token"])
    assert expect(user.get("/v1/me"), 200)["name"] == name
    channels = {c["name"]: c for c in expect(user.get("/v1/channels"), 200)["channels"]}
    assert set(channels) == {"general", "random"}
    welcome = expect(user.get(f"/v1/channels/{channels['general']['channel_id']}/messages"), 200)
    assert welcome["messages"][0]["seq"] == 1
    assert welcome["messages"][0]["user_id"] == "demo-host"
    # The pair is an ordinary one: it refreshes (rotating) without any app key.
    refreshed = expect(
        chat.post("/v1/tokens/refresh", {"refresh_token": pair["refresh_token"]}), 201
    )
    assert (
        expect(chat.as_user(refreshed["access_token"]).get("/v1/me"), 200)["user_id"]
        == pair["user_id"]
    )

    # The same name is the same user again, still in the same channels, and not twice.
    again = expect(chat.post("/v1/demo/session", {"name": name}), 201)
    assert again["user_id"] == pair["user_id"]
    assert len(expect(user.get("/v1/channels"), 200)["channels"]) == 2


def test_demo_users_see_only_the_demo(chat: ChatClient, app: AppCtx) -> None:
    owner = app.user()
    private = expect(owner.client.post("/v1/channels", {"name": "ours", "kind": "public"}), 201)
    pair = expect(chat.post("/v1/demo/session", {"name": f"Eve {secrets.token_hex(3)}"}), 201)
    eve = chat.as_user(pair["access_token"])
    assert eve.get(f"/v1/channels/{private['channel_id']}").status == 404
    assert eve.get(f"/v1/users/{owner.user_id}").status == 404


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": "x" * 41}, {"name": "a", "admin": True}]
)
def test_bad_demo_sign_ins_are_refused(chat: ChatClient, body: dict[str, object]) -> None:
    response = chat.post("/v1/demo/session", body)
    assert response.status == 400, response

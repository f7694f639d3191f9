"""Apps, API keys, user tokens and users: who may do what, through the edge."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable

import asyncpg
import jwt
import pytest

from preflight.client import ChatClient, expect
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTarget
from tests.api.conftest import AppCtx

ISS, AUD = "chatsdk", "chatsdk-api"


def claims(app: AppCtx, user_id: str, **over: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": ISS,
        "aud": AUD,
        "sub": user_id,
        "app": app.app_id,
        "typ": "access",
        "ver": 1,
        "jti": "t" * 32,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def db_fetch(info: TargetInfo, query: str, *args: object) -> list[asyncpg.Record]:
    import asyncio  # noqa: PLC0415

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(info.stores.postgres_dsn, timeout=5)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def secret(stack: NativeTarget) -> str:
    return stack._jwt_secret


def weak_encode(payload: dict[str, object], key: str) -> str:
    """An attacker's token: PyJWT rightly warns about the short key, which is the point here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(payload, key, algorithm="HS256")


def test_apps_need_the_admin_key(chat: ChatClient, info: TargetInfo) -> None:
    assert chat.post("/v1/apps", {"name": "x"}).status == 401
    assert chat.as_admin("wrong" * 10).post("/v1/apps", {"name": "x"}).status == 401
    assert chat.as_admin(info.admin_key).post("/v1/apps", {"name": "x"}).status == 201


def test_api_keys_are_stored_only_as_hashes(app: AppCtx, info: TargetInfo) -> None:
    rows = db_fetch(info, "SELECT key_hash FROM api_keys WHERE key_id = $1", app.key_id)
    assert len(rows) == 1
    secret_part = app.api_key.split(".", 1)[1]
    assert len(secret_part) >= 43, "the secret must carry at least 256 bits"
    assert bytes(rows[0]["key_hash"]) == hashlib.sha256(secret_part.encode()).digest()
    dumped = str(db_fetch(info, "SELECT * FROM api_keys WHERE key_id = $1", app.key_id))
    assert secret_part not in dumped


def test_a_revoked_key_is_refused_at_once(app: AppCtx, admin: ChatClient) -> None:
    second = expect(admin.post(f"/v1/apps/{app.app_id}/keys"), 201)
    client = app.base.as_app(second["api_key"])
    assert client.post("/v1/tokens", {"user_id": "u1"}).status == 201
    assert admin.delete(f"/v1/apps/{app.app_id}/keys/{second['key_id']}").status == 204
    assert client.post("/v1/tokens", {"user_id": "u1"}).status == 401
    # The app's other key still works: revocation is per key.
    assert app.client.post("/v1/tokens", {"user_id": "u1"}).status == 201


def test_a_key_of_one_app_never_mints_for_another(
    app: AppCtx, other_app: AppCtx, admin: ChatClient
) -> None:
    bogus = f"ck_{app.key_id}.{other_app.api_key.split('.', 1)[1]}"
    assert app.base.as_app(bogus).post("/v1/tokens", {"user_id": "u"}).status == 401
    assert admin.delete(f"/v1/apps/{other_app.app_id}/keys/{app.key_id}").status == 404


def test_credentials_in_the_query_string_are_refused(app: AppCtx) -> None:
    user = app.user()
    resp = app.base.get("/v1/me", query={"access_token": user.access_token})
    assert resp.status == 400
    assert resp.error_code == "credentials_in_query"
    resp = user.client.get("/v1/me", query={"api_key": app.api_key})
    assert resp.status == 400, "even with a valid header, a key in the query is refused"


def test_me_and_profile_updates(app: AppCtx) -> None:
    user = app.user(name="Alice")
    assert expect(user.client.get("/v1/me"), 200)["name"] == "Alice"
    updated = expect(user.client.patch("/v1/me", {"avatar_url": "https://example.test/a.png"}), 200)
    assert updated["avatar_url"] == "https://example.test/a.png"
    assert user.client.patch("/v1/me", {"token_version": 0}).status == 400
    assert user.client.patch("/v1/me", {"avatar_url": "javascript:alert(1)"}).status == 400


def test_users_are_visible_within_their_app_only(app: AppCtx, other_app: AppCtx) -> None:
    alice, bob, eve = app.user(), app.user(), other_app.user()
    assert expect(alice.client.get(f"/v1/users/{bob.user_id}"), 200)["user_id"] == bob.user_id
    assert eve.client.get(f"/v1/users/{alice.user_id}").status == 404
    # The same user id in another app is another person.
    twin = other_app.user(alice.user_id)
    assert expect(twin.client.get("/v1/me"), 200)["user_id"] == alice.user_id
    assert alice.client.get("/v1/me").status == 200


def test_refresh_rotates_and_a_used_refresh_token_is_refused(app: AppCtx) -> None:
    user = app.user()
    pair = expect(app.base.post("/v1/tokens/refresh", {"refresh_token": user.refresh_token}), 201)
    assert app.base.as_user(pair["access_token"]).get("/v1/me").status == 200
    again = app.base.post("/v1/tokens/refresh", {"refresh_token": user.refresh_token})
    assert again.status == 401
    # A refresh token is never an access token, and the reverse.
    assert app.base.as_user(pair["refresh_token"]).get("/v1/me").status == 401
    assert app.base.post("/v1/tokens/refresh", {"refresh_token": user.access_token}).status == 401


def test_revocation_stops_every_token_and_survives_a_restart(
    app: AppCtx, stack: NativeTarget, info: TargetInfo
) -> None:
    user = app.user()
    pair = expect(app.base.post("/v1/tokens/refresh", {"refresh_token": user.refresh_token}), 201)
    assert app.client.post(f"/v1/users/{user.user_id}/revoke").status == 204
    assert user.client.get("/v1/me").status == 401
    assert app.base.as_user(pair["access_token"]).get("/v1/me").status == 401
    assert (
        app.base.post("/v1/tokens/refresh", {"refresh_token": pair["refresh_token"]}).status == 401
    )
    for name in ("api-0", "api-1"):  # restart every worker: nothing in memory may un-revoke
        info.drills.control[name].stop()
        info.drills.control[name].start()
    deadline = time.monotonic() + 20
    while app.base.get("/v1/health/ready").status != 200:
        assert time.monotonic() < deadline, "the workers did not come back"
        time.sleep(0.1)
    assert user.client.get("/v1/me").status == 401
    # A token minted after the revocation works.
    fresh = app.user(user.user_id)
    assert fresh.client.get("/v1/me").status == 200
    assert not stack.crashed()


@pytest.mark.parametrize(
    "case",
    [
        "alg_none",
        "tampered_signature",
        "changed_subject",
        "expired",
        "future_nbf",
        "wrong_audience",
        "wrong_issuer",
        "refresh_type",
        "missing_version",
        "weak_secret",
    ],
)
def test_forged_and_broken_tokens_are_refused(app: AppCtx, secret: str, case: str) -> None:
    victim = app.user()
    good = jwt.encode(claims(app, victim.user_id), secret, algorithm="HS256")
    assert app.base.as_user(good).get("/v1/me").status == 200, "control: a proper token works"
    now = int(time.time())

    def enc(**over: object) -> str:
        return jwt.encode(claims(app, victim.user_id, **over), secret, algorithm="HS256")

    make: dict[str, Callable[[], str]] = {
        "alg_none": lambda: jwt.encode(claims(app, victim.user_id), "", algorithm="none"),
        "tampered_signature": lambda: good[:-4] + ("BBBB" if good.endswith("AAAA") else "AAAA"),
        "changed_subject": lambda: _resign_payload(good, secret, "someone-else"),
        "expired": lambda: enc(iat=now - 900, nbf=now - 900, exp=now - 60),
        "future_nbf": lambda: enc(nbf=now + 300),
        "wrong_audience": lambda: enc(aud="other"),
        "wrong_issuer": lambda: enc(iss="other"),
        "refresh_type": lambda: enc(typ="refresh"),
        "missing_version": lambda: enc(ver=None),
        "weak_secret": lambda: weak_encode(claims(app, victim.user_id), "secret"),
    }
    token = make[case]()
    resp = app.base.as_user(token).get("/v1/me")
    assert resp.status == 401, f"{case}: {resp}"
    assert resp.error_code == "unauthorized"


def _resign_payload(token: str, secret: str, new_subject: str) -> str:
    """The payload changed but the original signature kept (what an attacker can do)."""
    header, _payload, signature = token.split(".")
    decoded = jwt.decode(token, secret, algorithms=["HS256"], audience=AUD)
    decoded["sub"] = new_subject
    forged = weak_encode(decoded, "attacker-does-not-know-it")
    return ".".join([header, forged.split(".")[1], signature])

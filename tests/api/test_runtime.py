"""GET /v1/admin/runtime: admin only, reports what the worker runs with and never a secret."""

from __future__ import annotations

from preflight.client import ChatClient, expect
from preflight.targets.base import TargetInfo


def test_runtime_needs_the_admin_key(chat: ChatClient) -> None:
    assert chat.get("/v1/admin/runtime").status == 401
    assert chat.as_admin("not-the-key").get("/v1/admin/runtime").status == 401


def test_runtime_reports_release_dependencies_and_no_secret(
    admin: ChatClient, info: TargetInfo
) -> None:
    response = admin.get("/v1/admin/runtime")
    report = expect(response, 200)
    assert report["service"] == "chatsdk"
    assert report["migrations"]["state"] == "ok"
    assert report["migrations"]["applied"] == report["migrations"]["shipped"]
    assert {d["up"] for d in report["dependencies"].values()} == {True}
    assert report["secrets"]["jwt_secret"]["placeholder"] is False
    assert response.headers["cache-control"] == "no-store"
    text = response.body.decode()
    for secret in (info.admin_key, info.stores.postgres_dsn, info.stores.redis_url):
        assert secret
        password = secret.rsplit("@", 1)[0].rsplit(":", 1)[-1] if "@" in secret else secret
        assert password not in text, "the runtime report must not contain a secret"

"""GDPR through NGINX: the export holds everything about the caller and nothing private of
others; erasure leaves nothing personal in PostgreSQL (every text column of every table is
searched), in upload storage or in Redis, and the user's tokens stop working."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from preflight.client import Response, expect
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTarget
from tests.api.conftest import AppCtx, UserCtx
from tests.api.test_webhooks import Receiver, create_webhook

TEXT_TYPES = ("text", "character varying", "character", "jsonb", "json", "ARRAY")


def send(user: UserCtx, channel_id: str, text: str, **extra: Any) -> Any:
    body = {"text": text, **extra}
    return expect(user.client.post(f"/v1/channels/{channel_id}/messages", body), 201)


def channel_with(owner: UserCtx, *members: UserCtx) -> str:
    body = {"name": "gdpr room", "kind": "private", "member_ids": [m.user_id for m in members]}
    channel_id: str = expect(owner.client.post("/v1/channels", body), 201)["channel_id"]
    return channel_id


def upload(user: UserCtx, data: bytes, filename: str) -> Any:
    resp = user.client.request(
        "POST",
        "/v1/uploads",
        body=data,
        headers={"Content-Type": "text/plain"},
        query={"filename": filename},
    )
    return expect(resp, 201)


def ok(resp: Response) -> None:
    __tracebackhide__ = True
    assert resp.status < 300, f"{resp.method} {resp.path} must succeed (got {resp})"


async def _rows_containing(dsn: str, needles: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type = any($1::text[])",
            list(TEXT_TYPES),
        )
        found: dict[str, int] = {}
        for col in columns:
            table, column = col["table_name"], col["column_name"]
            count = await conn.fetchval(
                f'SELECT count(*) FROM "{table}" WHERE EXISTS ('  # noqa: S608 - catalog names
                f'SELECT 1 FROM unnest($1::text[]) n WHERE strpos("{column}"::text, n) > 0)',
                needles,
            )
            if count:
                found[f"{table}.{column}"] = count
        return found
    finally:
        await conn.close()


def rows_containing(info: TargetInfo, needles: list[str]) -> dict[str, int]:
    assert info.stores.postgres_dsn is not None
    return asyncio.run(_rows_containing(info.stores.postgres_dsn, needles))


async def _storage_key(dsn: str, upload_id: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        key: str = await conn.fetchval("SELECT storage_key FROM uploads WHERE id = $1", upload_id)
        return key
    finally:
        await conn.close()


def redis_keys_with(info: TargetInfo, needle: str) -> list[str]:
    assert info.stores.redis_url is not None
    client = redis.Redis.from_url(info.stores.redis_url, socket_timeout=5)
    try:
        return [k.decode() for k in client.scan_iter(match=f"*{needle}*", count=1000)]
    finally:
        client.close()


@pytest.fixture(scope="module")
def upload_dir(stack: NativeTarget) -> Path:
    assert stack.dir is not None
    return stack.dir / "uploads"


# --- export -----------------------------------------------------------------------------------


def test_export_holds_my_data_and_nothing_private_of_others(app: AppCtx) -> None:
    secret = uuid.uuid4().hex
    me = app.user(name="Exporting Me")
    other = app.user(name=f"Other {secret}")
    channel_id = channel_with(me, other)
    mine = [send(me, channel_id, f"mine {i}") for i in range(3)]
    theirs = send(other, channel_id, f"their private words {secret}")
    ok(me.client.put(f"/v1/channels/{channel_id}/messages/{theirs['message_id']}/reactions/ok"))
    poll = expect(
        other.client.post(
            f"/v1/channels/{channel_id}/polls", {"question": "Lunch?", "options": ["yes", "no"]}
        ),
        201,
    )
    option_id = poll["options"][0]["option_id"]
    ok(me.client.post(f"/v1/polls/{poll['poll_id']}/votes", {"option_ids": [option_id]}))
    up = upload(me, b"my file", "mine.txt")
    attached = send(me, channel_id, "with a file", upload_ids=[up["upload_id"]])
    ok(me.client.post(f"/v1/channels/{channel_id}/read", {"seq": attached["seq"]}))

    resp = me.client.get("/v1/me/export")
    export = expect(resp, 200)
    assert "no-store" in resp.headers["cache-control"]
    datetime.fromisoformat(export["generated_at"])
    assert export["profile"]["user_id"] == me.user_id
    assert export["profile"]["name"] == "Exporting Me"

    messages = {m["message_id"]: m for m in export["messages"]}
    for sent in [*mine, attached]:
        got = messages[sent["message_id"]]
        assert got["text"] == sent["text"]
        assert got["seq"] == sent["seq"]
        assert got["channel_id"] == channel_id
    assert messages[attached["message_id"]]["upload_ids"] == [up["upload_id"]]
    assert theirs["message_id"] not in messages, "another user's message is not my data"

    assert [(c["channel_id"], c["role"]) for c in export["channels"]] == [(channel_id, "owner")]
    (read,) = export["read_state"]
    assert read["channel_id"] == channel_id
    assert read["last_read_seq"] == attached["seq"]
    (reaction,) = export["reactions"]
    assert (reaction["message_id"], reaction["emoji"]) == (theirs["message_id"], "ok")
    (vote,) = export["votes"]
    assert (vote["poll_id"], vote["option_id"]) == (poll["poll_id"], option_id)
    (exported_upload,) = export["uploads"]
    assert exported_upload["upload_id"] == up["upload_id"]
    assert exported_upload["sha256"] == up["sha256"]
    assert exported_upload["download_path"] == f"/v1/uploads/{up['upload_id']}"
    assert me.client.get(exported_upload["download_path"]).body == b"my file"

    assert secret not in resp.body.decode(), "nothing of another user's name or words"


def test_export_needs_a_user_token(app: AppCtx) -> None:
    assert app.base.get("/v1/me/export").status == 401
    assert app.client.get("/v1/me/export").status == 401, "an app key is not a user"


# --- erasure ----------------------------------------------------------------------------------


def test_erasure_leaves_nothing_personal_anywhere(
    app: AppCtx, other_app: AppCtx, info: TargetInfo, upload_dir: Path
) -> None:
    marker = uuid.uuid4().hex
    user_id = f"erase-{uuid.uuid4().hex}"
    name = f"Name {marker}"
    victim = app.user(user_id=user_id, name=name)
    friend = app.user(name="Friend")
    with Receiver() as rx:
        # Webhook payloads keep event data in PostgreSQL too: they must be cleaned as well.
        create_webhook(app, rx.url, ["*"])
        channel_id = channel_with(friend, victim)
        texts = [f"words {marker} {i}" for i in range(3)]
        sent = [send(victim, channel_id, t) for t in texts]
        kept = send(friend, channel_id, "the friend's words stay")
        send(friend, channel_id, "a reply", parent_id=sent[0]["message_id"])
        ok(
            victim.client.put(
                f"/v1/channels/{channel_id}/messages/{kept['message_id']}/reactions/ok"
            )
        )
        question = f"question {marker}?"
        poll = expect(
            victim.client.post(
                f"/v1/channels/{channel_id}/polls",
                {"question": question, "options": [f"opt {marker} a", f"opt {marker} b"]},
            ),
            201,
        )
        ok(
            friend.client.post(
                f"/v1/polls/{poll['poll_id']}/votes",
                {"option_ids": [poll["options"][0]["option_id"]]},
            )
        )
        ok(victim.client.patch("/v1/me", {"avatar_url": f"https://example.com/{marker}.png"}))
        up = upload(victim, f"file {marker}".encode(), f"file-{marker}.txt")
        send(victim, channel_id, f"attached {marker}", upload_ids=[up["upload_id"]])
        assert friend.client.get(f"/v1/uploads/{up['upload_id']}").status == 200
        rx.wait_for(6, 10)  # events reached webhook_deliveries

        assert info.stores.postgres_dsn is not None
        key = asyncio.run(_storage_key(info.stores.postgres_dsn, up["upload_id"]))
        stored = upload_dir / key[:2] / key
        # Positive controls: the searches below do find the data while it exists.
        assert stored.is_file()
        assert rows_containing(info, [marker])
        # Redis keys name the user (membership cache, rate-limit buckets). Right after a Redis
        # restart in an earlier test the workers skip Redis for a moment, by design: touch the
        # channel until the cache holds the user again.
        deadline = time.monotonic() + 10
        while not redis_keys_with(info, user_id):
            assert time.monotonic() < deadline, "the user must have Redis keys before erasure"
            ok(victim.client.get(f"/v1/channels/{channel_id}/messages"))
            time.sleep(0.2)

        assert other_app.client.delete(f"/v1/users/{user_id}").status == 404
        resp = app.client.delete(f"/v1/users/{user_id}")
        assert resp.status == 204, f"erasure must answer 204 (got {resp})"

        leftovers = rows_containing(info, [marker, name, *texts, question])
        assert not leftovers, f"PostgreSQL still holds the erased user's data in {leftovers}"
        assert not stored.exists(), "the upload's bytes must be gone from storage"
        keys = redis_keys_with(info, user_id)
        assert not keys, f"Redis still has keys naming the erased user: {keys}"

    # The user is gone for the API: tokens dead, profile invisible, no new tokens.
    assert victim.client.get("/v1/me").status == 401
    refreshed = app.base.post("/v1/tokens/refresh", {"refresh_token": victim.refresh_token})
    assert refreshed.status == 401
    assert friend.client.get(f"/v1/users/{user_id}").status == 404
    assert app.client.post("/v1/tokens", {"user_id": user_id}).status == 404
    assert friend.client.get(f"/v1/uploads/{up['upload_id']}").status == 404
    # Tombstones keep the channel's history intact; the friend's data stays.
    history = expect(friend.client.get(f"/v1/channels/{channel_id}/messages"), 200)
    by_id = {m["message_id"]: m for m in history["messages"]}
    for message in sent:
        assert by_id[message["message_id"]]["text"] is None
        assert by_id[message["message_id"]]["deleted"] is True
    assert by_id[kept["message_id"]]["text"] == "the friend's words stay"
    assert by_id[kept["message_id"]]["reactions"] == {}
    # Erasing again is safe (a retry after a timeout must not fail).
    assert app.client.delete(f"/v1/users/{user_id}").status == 204


def test_erasure_needs_the_apps_key(app: AppCtx) -> None:
    user = app.user()
    assert user.client.delete(f"/v1/users/{user.user_id}").status == 401
    assert app.base.delete(f"/v1/users/{user.user_id}").status == 401
    assert app.client.delete("/v1/users/nobody-here").status == 404
    assert user.client.get("/v1/me").status == 200, "a refused erasure changed nothing"

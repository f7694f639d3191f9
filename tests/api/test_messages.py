"""Messages through NGINX: sends and seq, client_msg_id idempotency, history paging, threads,
reactions, edits, tombstones, and that nobody outside the channel can read or change them."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from preflight.client import Response, expect
from preflight.targets.base import TargetInfo
from tests.api.conftest import AppCtx, UserCtx


def create(owner: UserCtx, *members: UserCtx, kind: str = "public") -> str:
    body: dict[str, Any] = {"name": "room", "kind": kind}
    if members:
        body["member_ids"] = [m.user_id for m in members]
    return str(expect(owner.client.post("/v1/channels", body), 201)["channel_id"])


def send(user: UserCtx, cid: str, text: str = "hi", **extra: Any) -> Any:
    return expect(user.client.post(f"/v1/channels/{cid}/messages", {"text": text, **extra}), 201)


def history(user: UserCtx, cid: str, **query: Any) -> Any:
    return expect(user.client.get(f"/v1/channels/{cid}/messages", query=query), 200)


def seqs(page: Any) -> list[int]:
    return [m["seq"] for m in page["messages"]]


def sql(info: TargetInfo, query: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(info.stores.postgres_dsn, timeout=5)
        try:
            return list(await conn.fetch(query, *args, timeout=5))
        finally:
            await conn.close(timeout=5)

    return asyncio.run(run())


# --- sending -------------------------------------------------------------------------------------


def test_send_assigns_consecutive_seqs_and_records_the_event(app: AppCtx, info: TargetInfo) -> None:
    owner = app.user()
    cid = create(owner)
    sent = [send(owner, cid, f"m{i}") for i in range(3)]
    assert [m["seq"] for m in sent] == [1, 2, 3]
    first = sent[0]
    assert first["message_id"].startswith("msg_")
    assert first["channel_id"] == cid
    assert first["user_id"] == owner.user_id
    assert first["text"] == "m0"
    assert first["deleted"] is False
    assert first["reactions"] == {}
    assert first["reply_count"] == 0
    assert first["created_at"]
    assert first["parent_id"] is None
    assert first["upload_ids"] == []
    assert seqs(history(owner, cid)) == [1, 2, 3]
    events = sql(
        info,
        "SELECT seq, data->>'message_id' AS mid FROM outbox "
        "WHERE channel_id = $1 AND type = 'message.new' ORDER BY seq",
        cid,
    )
    assert [(e["seq"], e["mid"]) for e in events] == [(m["seq"], m["message_id"]) for m in sent]


def test_repeating_a_client_msg_id_returns_the_original(app: AppCtx) -> None:
    owner, other = app.user(), app.user()
    cid = create(owner, other)
    body = {"text": "once", "client_msg_id": "c-1"}
    first = owner.client.post(f"/v1/channels/{cid}/messages", body)
    again = owner.client.post(f"/v1/channels/{cid}/messages", {**body, "text": "changed"})
    assert first.status == 201
    assert again.status == 200
    assert again.json()["message_id"] == first.json()["message_id"]
    assert again.json()["text"] == "once"
    assert again.json()["client_msg_id"] == "c-1"
    # client_msg_id is per sender: another sender's same id is another message.
    theirs = other.client.post(f"/v1/channels/{cid}/messages", body)
    assert theirs.status == 201
    assert theirs.json()["seq"] == 2
    # No gap: the replay did not consume a seq.
    assert send(owner, cid)["seq"] == 3
    assert seqs(history(owner, cid)) == [1, 2, 3]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"text": ""}, 400),
        ({"text": "x" * 4001}, 400),
        ({"text": 5}, 400),
        ({}, 400),
        ({"text": "x", "seq": 99}, 400),  # unknown field: the server owns seq
        ({"text": "x", "user_id": "someone"}, 400),
        ({"text": "x", "client_msg_id": "has space"}, 400),
        ({"text": "x", "parent_id": "msg_doesnotexist"}, 409),
        ({"text": "x", "upload_ids": ["up_doesnotexist"]}, 409),
    ],
)
def test_invalid_sends_are_refused(app: AppCtx, body: dict[str, Any], status: int) -> None:
    owner = app.user()
    cid = create(owner)
    resp = owner.client.post(f"/v1/channels/{cid}/messages", body)
    assert resp.status == status, f"send {body} must answer {status} (got {resp})"
    assert history(owner, cid)["messages"] == []
    assert send(owner, cid)["seq"] == 1, "a refused send must not consume a seq"


def test_text_of_exactly_4000_characters_is_accepted(app: AppCtx) -> None:
    owner = app.user()
    cid = create(owner)
    assert len(send(owner, cid, "é" * 4000)["text"]) == 4000


def test_non_json_body_is_415(app: AppCtx) -> None:
    owner = app.user()
    cid = create(owner)
    resp = owner.client.request(
        "POST",
        f"/v1/channels/{cid}/messages",
        body=b"text=hi",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 415


# --- history paging -----------------------------------------------------------------------------


def test_history_pages_by_seq(app: AppCtx) -> None:
    owner = app.user()
    cid = create(owner)
    for i in range(7):
        send(owner, cid, f"m{i + 1}")
    pages: list[tuple[dict[str, int], list[int], bool]] = [
        ({}, [5, 6, 7], True),  # the latest
        ({"before_seq": 5}, [2, 3, 4], True),  # older
        ({"before_seq": 2}, [1], False),  # the oldest
        ({"after_seq": 0}, [1, 2, 3], True),  # forward from the start
        ({"after_seq": 6}, [7], False),  # the tail
    ]
    for query, want, more in pages:
        page = history(owner, cid, **query, limit=3)
        assert (seqs(page), page["has_more"]) == (want, more), query
    assert seqs(history(owner, cid, after_seq=2, before_seq=6)) == [3, 4, 5]
    assert [m["text"] for m in history(owner, cid)["messages"]] == [f"m{i}" for i in range(1, 8)]


@pytest.mark.parametrize(
    "query",
    [{"limit": 0}, {"limit": 201}, {"after_seq": -1}, {"after_seq": "x"}, {"before_seq": 0}],
)
def test_bad_paging_parameters_are_400(app: AppCtx, query: dict[str, Any]) -> None:
    owner = app.user()
    cid = create(owner)
    assert owner.client.get(f"/v1/channels/{cid}/messages", query=query).status == 400


# --- threads --------------------------------------------------------------------------------------


def test_replies_form_a_thread(app: AppCtx) -> None:
    owner, member = app.user(), app.user()
    cid = create(owner, member)
    root = send(owner, cid, "root")
    send(owner, cid, "unrelated")
    replies = [send(member, cid, f"r{i}", parent_id=root["message_id"]) for i in range(3)]
    assert all(r["parent_id"] == root["message_id"] for r in replies)
    thread = expect(
        owner.client.get(f"/v1/channels/{cid}/messages/{root['message_id']}/replies"), 200
    )
    assert [m["text"] for m in thread["messages"]] == ["r0", "r1", "r2"]
    assert seqs(thread) == [3, 4, 5]
    assert thread["has_more"] is False
    page = expect(
        owner.client.get(
            f"/v1/channels/{cid}/messages/{root['message_id']}/replies",
            query={"after_seq": 3, "limit": 1},
        ),
        200,
    )
    assert seqs(page) == [4]
    assert page["has_more"] is True
    [listed_root] = [m for m in history(owner, cid)["messages"] if m["seq"] == 1]
    assert listed_root["reply_count"] == 3
    # Threads are one level deep, and a parent must be in the same channel.
    resp = owner.client.post(
        f"/v1/channels/{cid}/messages", {"text": "x", "parent_id": replies[0]["message_id"]}
    )
    assert resp.status == 400
    elsewhere = create(owner)
    resp = owner.client.post(
        f"/v1/channels/{elsewhere}/messages", {"text": "x", "parent_id": root["message_id"]}
    )
    assert resp.status == 409, "a parent in another channel names nothing this channel has"


# --- attachments ------------------------------------------------------------------------------


def insert_upload(info: TargetInfo, user: UserCtx) -> str:
    upload_id = f"up_{secrets.token_hex(10)}"
    sql(
        info,
        "INSERT INTO uploads (id, app_id, user_id, size, content_type, sha256, storage_key) "
        "VALUES ($1, $2, $3, 1, 'text/plain', $4, $1) RETURNING id",
        upload_id,
        user.app_id,
        user.user_id,
        "0" * 64,
    )
    return upload_id


def test_only_the_senders_own_uploads_can_be_attached(app: AppCtx, info: TargetInfo) -> None:
    owner, member = app.user(), app.user()
    cid = create(owner, member)
    mine, theirs = insert_upload(info, owner), insert_upload(info, member)
    msg = send(owner, cid, "see file", upload_ids=[mine])
    assert msg["upload_ids"] == [mine]
    assert history(member, cid)["messages"][0]["upload_ids"] == [mine]
    resp = owner.client.post(f"/v1/channels/{cid}/messages", {"text": "x", "upload_ids": [theirs]})
    assert resp.status == 409
    # Deleting the message detaches the upload.
    assert owner.client.delete(f"/v1/channels/{cid}/messages/{msg['message_id']}").status == 204
    assert history(member, cid)["messages"][0]["upload_ids"] == []
    rows = sql(info, "SELECT 1 FROM message_uploads WHERE message_id = $1", msg["message_id"])
    assert rows == []


# --- edits and tombstones ---------------------------------------------------------------------


def test_only_the_author_edits(app: AppCtx) -> None:
    owner, member = app.user(), app.user()
    cid = create(owner, member)
    msg = send(member, cid, "draft")
    path = f"/v1/channels/{cid}/messages/{msg['message_id']}"
    assert owner.client.patch(path, {"text": "hijacked"}).status == 403
    edited = expect(member.client.patch(path, {"text": "final"}), 200)
    assert edited["text"] == "final"
    assert edited["edited_at"]
    assert edited["seq"] == msg["seq"]
    assert member.client.patch(path, {"text": "x", "user_id": owner.user_id}).status == 400
    assert member.client.patch(path, {"text": ""}).status == 400
    [listed] = history(owner, cid)["messages"]
    assert listed["text"] == "final"
    assert listed["user_id"] == member.user_id


def test_delete_leaves_a_tombstone(app: AppCtx) -> None:
    owner, member, third = app.user(), app.user(), app.user()
    cid = create(owner, member, third)
    a = send(member, cid, "first")
    b = send(member, cid, "second")
    c = send(third, cid, "third")
    # A plain member cannot delete someone else's message; the author and the owner can.
    assert third.client.delete(f"/v1/channels/{cid}/messages/{a['message_id']}").status == 403
    assert member.client.delete(f"/v1/channels/{cid}/messages/{a['message_id']}").status == 204
    assert owner.client.delete(f"/v1/channels/{cid}/messages/{c['message_id']}").status == 204
    assert member.client.delete(f"/v1/channels/{cid}/messages/{a['message_id']}").status == 204
    page = history(third, cid)
    assert seqs(page) == [1, 2, 3], "tombstones keep their place in the history"
    tomb, kept, tomb2 = page["messages"]
    assert tomb["deleted"] is True
    assert tomb["text"] is None
    assert tomb["deleted_at"]
    assert tomb2["deleted"] is True
    assert tomb2["text"] is None
    assert kept["text"] == "second"
    assert kept["message_id"] == b["message_id"]
    path = f"/v1/channels/{cid}/messages/{a['message_id']}"
    assert member.client.patch(path, {"text": "undelete"}).status == 409
    assert member.client.put(f"{path}/reactions/ok").status == 409
    assert send(member, cid)["seq"] == 4


# --- reactions ------------------------------------------------------------------------------------


def reaction_path(cid: str, mid: str, emoji: str) -> str:
    return f"/v1/channels/{cid}/messages/{mid}/reactions/{quote(emoji, safe='')}"


def test_reactions_are_idempotent_and_summarised(app: AppCtx) -> None:
    owner, member = app.user(), app.user()
    cid = create(owner, member)
    mid = send(owner, cid)["message_id"]
    thumbs = "\U0001f44d"
    put = expect(owner.client.put(reaction_path(cid, mid, thumbs)), 200)
    assert put["reactions"] == {thumbs: 1}
    assert expect(owner.client.put(reaction_path(cid, mid, thumbs)), 200)["reactions"] == {
        thumbs: 1
    }
    expect(member.client.put(reaction_path(cid, mid, thumbs)), 200)
    expect(member.client.put(reaction_path(cid, mid, "party")), 200)
    assert history(owner, cid)["messages"][0]["reactions"] == {thumbs: 2, "party": 1}
    assert owner.client.delete(reaction_path(cid, mid, thumbs)).status == 204
    assert owner.client.delete(reaction_path(cid, mid, thumbs)).status == 204
    assert history(owner, cid)["messages"][0]["reactions"] == {thumbs: 1, "party": 1}


@pytest.mark.parametrize("emoji", ["a b", "x" * 33, "tab\there", "nl\n"])
def test_invalid_emoji_are_400(app: AppCtx, emoji: str) -> None:
    owner = app.user()
    cid = create(owner)
    mid = send(owner, cid)["message_id"]
    assert owner.client.put(reaction_path(cid, mid, emoji)).status == 400
    assert history(owner, cid)["messages"][0]["reactions"] == {}


# --- authorization ----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["outsider", "stranger"])
def test_non_members_get_404_for_every_message_operation(
    app: AppCtx, other_app: AppCtx, who: str
) -> None:
    owner = app.user()
    user = app.user() if who == "outsider" else other_app.user()
    cid = create(owner, kind="private")
    msg = send(owner, cid, "secret text")
    mid = msg["message_id"]
    expect(owner.client.put(reaction_path(cid, mid, "ok")), 200)
    base = f"/v1/channels/{cid}/messages"
    attempts: list[Response] = [
        user.client.get(base),
        user.client.get(base, query={"after_seq": 0}),
        user.client.post(base, {"text": "intruder"}),
        user.client.post(base, {"text": "reply", "parent_id": mid}),
        user.client.get(f"{base}/{mid}/replies"),
        user.client.patch(f"{base}/{mid}", {"text": "pwned"}),
        user.client.delete(f"{base}/{mid}"),
        user.client.put(reaction_path(cid, mid, "evil")),
        user.client.delete(reaction_path(cid, mid, "ok")),
    ]
    for resp in attempts:
        assert resp.status == 404, f"{who}: {resp} must be 404"
        assert b"secret text" not in resp.body
    [listed] = history(owner, cid)["messages"]
    assert listed["text"] == "secret text"
    assert listed["deleted"] is False
    assert listed["reactions"] == {"ok": 1}


def test_a_message_id_from_another_channel_is_404(app: AppCtx) -> None:
    owner, member = app.user(), app.user()
    mine = create(member)
    theirs = create(owner)
    foreign = send(owner, theirs, "not yours")["message_id"]
    base = f"/v1/channels/{mine}/messages/{foreign}"
    assert member.client.patch(base, {"text": "x"}).status == 404
    assert member.client.delete(base).status == 404
    assert member.client.get(f"{base}/replies").status == 404
    assert member.client.put(reaction_path(mine, foreign, "ok")).status == 404
    [listed] = history(owner, theirs)["messages"]
    assert listed["text"] == "not yours"
    assert listed["reactions"] == {}

"""Channels, members and read state through NGINX: the happy paths, Idempotency-Key, and that
nobody outside a channel (other app or same app) can see or change it."""

from __future__ import annotations

import http.client
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest

from preflight.client import expect
from preflight.targets.native import NativeTarget
from tests.api.conftest import AppCtx, UserCtx


def create(owner: UserCtx, kind: str = "public", *members: UserCtx, **extra: Any) -> Any:
    body = {"name": f"{kind} room", "kind": kind, **extra}
    if members:
        body["member_ids"] = [m.user_id for m in members]
    return expect(owner.client.post("/v1/channels", body), 201)


def my_channel_ids(user: UserCtx) -> list[str]:
    listed = expect(user.client.get("/v1/channels"), 200)
    return [c["channel_id"] for c in listed["channels"]]


def send(user: UserCtx, channel_id: str, text: str = "hi") -> Any:
    return expect(user.client.post(f"/v1/channels/{channel_id}/messages", {"text": text}), 201)


# --- creation ---------------------------------------------------------------------------------


def test_create_public_channel_makes_the_creator_owner(app: AppCtx) -> None:
    owner, member = app.user(), app.user()
    ch = create(owner, "public", member)
    assert ch["channel_id"].startswith("ch_")
    assert ch["kind"] == "public"
    assert ch["created_by"] == owner.user_id
    assert ch["role"] == "owner"
    assert ch["last_seq"] == 0
    assert sorted(ch["member_ids"]) == sorted([owner.user_id, member.user_id])

    got = expect(member.client.get(f"/v1/channels/{ch['channel_id']}"), 200)
    assert got["role"] == "member"
    assert got["member_count"] == 2
    listed = expect(member.client.get("/v1/channels"), 200)
    mine = [c for c in listed["channels"] if c["channel_id"] == ch["channel_id"]]
    assert mine
    assert mine[0]["unread"] == 0
    assert mine[0]["last_seq"] == 0
    assert listed["has_more"] is False


def test_channel_list_pages_by_id(app: AppCtx) -> None:
    owner = app.user()
    created = sorted(create(owner)["channel_id"] for _ in range(3))
    first = expect(owner.client.get("/v1/channels", query={"limit": 2}), 200)
    assert first["has_more"] is True
    assert len(first["channels"]) == 2
    last_id = first["channels"][-1]["channel_id"]
    rest = expect(owner.client.get("/v1/channels", query={"after": last_id, "limit": 2}), 200)
    seen = [c["channel_id"] for c in first["channels"] + rest["channels"]]
    assert seen == created
    assert rest["has_more"] is False


def test_direct_channels_have_two_members_or_only_the_caller(app: AppCtx) -> None:
    a, b, c = app.user(), app.user(), app.user()
    ch = create(a, "direct", b)
    assert sorted(ch["member_ids"]) == sorted([a.user_id, b.user_id])
    alone = a.client.post(
        "/v1/channels", {"name": "me", "kind": "direct", "member_ids": [a.user_id]}
    )
    assert alone.status == 201, f"a direct channel with yourself must be created (got {alone})"
    assert alone.json()["member_ids"] == [a.user_id]
    for members in ([], [b.user_id, c.user_id]):
        resp = a.client.post(
            "/v1/channels", {"name": "dm", "kind": "direct", "member_ids": members}
        )
        assert resp.status == 400, f"direct channel with member_ids={members} must be refused"
    # Membership of a direct channel is fixed.
    resp = a.client.post(f"/v1/channels/{ch['channel_id']}/members", {"user_ids": [c.user_id]})
    assert resp.status == 409


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "kind": "public", "role": "admin"},  # unknown field: no mass assignment
        {"name": "x", "kind": "secret"},
        {"name": "", "kind": "public"},
        {"name": "x" * 201, "kind": "public"},
        {"kind": "public"},
        {"name": "x", "kind": "public", "member_ids": "u1"},
        {"name": "x", "kind": "public", "member_ids": ["bad id with spaces"]},
    ],
)
def test_invalid_channel_bodies_are_400(app: AppCtx, body: dict[str, Any]) -> None:
    owner = app.user()
    resp = owner.client.post("/v1/channels", body)
    assert resp.status == 400, f"POST /v1/channels {body} must answer 400 (got {resp})"
    assert resp.json()["error"]["request_id"]
    assert my_channel_ids(owner) == []


def test_members_must_be_users_of_the_same_app(app: AppCtx, other_app: AppCtx) -> None:
    owner, stranger = app.user(), other_app.user()
    for member_ids in ([stranger.user_id], ["nobody-here"]):
        body = {"name": "x", "kind": "private", "member_ids": member_ids}
        resp = owner.client.post("/v1/channels", body)
        assert resp.status == 409
        assert resp.json()["error"]["code"] == "unknown_reference"
        assert "member_ids[0]" in resp.json()["error"]["message"]
    assert my_channel_ids(owner) == []
    assert my_channel_ids(stranger) == []


# --- Idempotency-Key ---------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_response(app: AppCtx) -> None:
    owner = app.user()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"name": "once", "kind": "public"}
    first = owner.client.post("/v1/channels", body, headers=key)
    again = owner.client.post("/v1/channels", body, headers=key)
    assert first.status == 201
    assert again.status == 201
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert my_channel_ids(owner) == [first.json()["channel_id"]]


def test_idempotency_key_with_another_body_is_422(app: AppCtx) -> None:
    owner = app.user()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    expect(owner.client.post("/v1/channels", {"name": "a", "kind": "public"}, headers=key), 201)
    resp = owner.client.post("/v1/channels", {"name": "b", "kind": "public"}, headers=key)
    assert resp.status == 422
    assert resp.error_code == "idempotency_key_reused"
    assert len(my_channel_ids(owner)) == 1
    # Keys are per user: another user's identical key is a new request.
    other = app.user()
    expect(other.client.post("/v1/channels", {"name": "b", "kind": "public"}, headers=key), 201)


def test_concurrent_requests_with_one_idempotency_key_create_one_channel(
    app: AppCtx,
) -> None:
    owner = app.user()
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"name": "race", "kind": "public"}

    def post(_: int) -> tuple[int, str]:
        client = owner.client.with_headers()  # own connection per thread
        try:
            resp = client.post("/v1/channels", body, headers=key)
            return resp.status, resp.json()["channel_id"]
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(8)))
    assert {status for status, _ in results} == {201}
    assert len({cid for _, cid in results}) == 1
    assert len(my_channel_ids(owner)) == 1


def test_a_bad_idempotency_key_header_is_400(app: AppCtx) -> None:
    owner = app.user()
    body = {"name": "x", "kind": "public"}
    resp = owner.client.post("/v1/channels", body, headers={"Idempotency-Key": "k" * 300})
    assert resp.status == 400


# --- authorization -----------------------------------------------------------------------------


@pytest.fixture
def world(app: AppCtx, other_app: AppCtx) -> dict[str, Any]:
    owner, member, outsider = app.user(), app.user(), app.user()
    stranger = other_app.user()
    ch = create(owner, "private", member)
    return {
        "owner": owner,
        "member": member,
        "outsider": outsider,
        "stranger": stranger,
        "channel_id": ch["channel_id"],
    }


@pytest.mark.parametrize("who", ["outsider", "stranger"])
def test_non_members_get_404_for_every_channel_operation(world: dict[str, Any], who: str) -> None:
    user: UserCtx = world[who]
    cid = world["channel_id"]
    owner: UserCtx = world["owner"]
    send(owner, cid, "secret")
    attempts = [
        user.client.get(f"/v1/channels/{cid}"),
        user.client.patch(f"/v1/channels/{cid}", {"name": "pwned"}),
        user.client.delete(f"/v1/channels/{cid}"),
        user.client.post(f"/v1/channels/{cid}/members", {"user_ids": [user.user_id]}),
        user.client.delete(f"/v1/channels/{cid}/members/{world['member'].user_id}"),
        user.client.post(f"/v1/channels/{cid}/read", {"seq": 1}),
    ]
    for resp in attempts:
        assert resp.status == 404, f"{who}: {resp} must be 404"
        assert b"secret" not in resp.body
        assert b"private room" not in resp.body
    assert cid not in my_channel_ids(user)
    # Nothing changed: the owner still sees the channel as it was, with both members.
    got = expect(owner.client.get(f"/v1/channels/{cid}"), 200)
    assert got["name"] == "private room"
    assert got["member_count"] == 2
    assert user.user_id not in got["member_ids"]


def test_only_the_owner_renames_and_deletes(world: dict[str, Any]) -> None:
    owner: UserCtx = world["owner"]
    member: UserCtx = world["member"]
    cid = world["channel_id"]
    assert member.client.patch(f"/v1/channels/{cid}", {"name": "mine"}).status == 403
    assert member.client.delete(f"/v1/channels/{cid}").status == 403
    assert expect(owner.client.get(f"/v1/channels/{cid}"), 200)["name"] == "private room"
    renamed = expect(owner.client.patch(f"/v1/channels/{cid}", {"name": "renamed"}), 200)
    assert renamed["name"] == "renamed"
    resp = owner.client.patch(f"/v1/channels/{cid}", {"name": "x", "kind": "public"})
    assert resp.status == 400
    assert resp.error_code == "unknown_field"
    assert expect(member.client.get(f"/v1/channels/{cid}"), 200)["kind"] == "private"


def test_deleted_channel_is_gone_for_everyone(world: dict[str, Any]) -> None:
    owner: UserCtx = world["owner"]
    member: UserCtx = world["member"]
    cid = world["channel_id"]
    send(member, cid)  # the member's membership is now cached
    assert owner.client.delete(f"/v1/channels/{cid}").status == 204
    for user in (owner, member):
        assert user.client.get(f"/v1/channels/{cid}").status == 404
        assert user.client.get(f"/v1/channels/{cid}/messages").status == 404
        resp = user.client.post(f"/v1/channels/{cid}/messages", {"text": "hello?"})
        assert resp.status == 404
        assert cid not in my_channel_ids(user)
    assert owner.client.delete(f"/v1/channels/{cid}").status == 404


# --- members -------------------------------------------------------------------------------


def test_private_channel_only_the_owner_adds(world: dict[str, Any]) -> None:
    owner: UserCtx = world["owner"]
    member: UserCtx = world["member"]
    outsider: UserCtx = world["outsider"]
    cid = world["channel_id"]
    resp = member.client.post(f"/v1/channels/{cid}/members", {"user_ids": [outsider.user_id]})
    assert resp.status == 403
    assert outsider.client.get(f"/v1/channels/{cid}").status == 404
    added = expect(
        owner.client.post(f"/v1/channels/{cid}/members", {"user_ids": [outsider.user_id]}), 200
    )
    assert added["added"] == [outsider.user_id]
    assert expect(outsider.client.get(f"/v1/channels/{cid}"), 200)["role"] == "member"
    # Adding again changes nothing.
    again = owner.client.post(f"/v1/channels/{cid}/members", {"user_ids": [outsider.user_id]})
    assert expect(again, 200)["added"] == []


def test_public_channel_any_member_adds(app: AppCtx) -> None:
    owner, member, newcomer = app.user(), app.user(), app.user()
    cid = create(owner, "public", member)["channel_id"]
    body = {"user_ids": [newcomer.user_id]}
    assert expect(member.client.post(f"/v1/channels/{cid}/members", body), 200)["added"]
    assert cid in my_channel_ids(newcomer)


def test_users_of_other_apps_cannot_be_added(world: dict[str, Any]) -> None:
    owner: UserCtx = world["owner"]
    stranger: UserCtx = world["stranger"]
    cid = world["channel_id"]
    resp = owner.client.post(f"/v1/channels/{cid}/members", {"user_ids": [stranger.user_id]})
    assert resp.status == 409
    assert stranger.client.get(f"/v1/channels/{cid}").status == 404
    assert cid not in my_channel_ids(stranger)


def test_leaving_and_removal_revoke_access_at_once(world: dict[str, Any]) -> None:
    owner: UserCtx = world["owner"]
    member: UserCtx = world["member"]
    outsider: UserCtx = world["outsider"]
    cid = world["channel_id"]
    expect(owner.client.post(f"/v1/channels/{cid}/members", {"user_ids": [outsider.user_id]}), 200)
    # Both read (and so cache) their membership first, on whichever worker answers.
    for user in (member, outsider):
        for _ in range(3):
            expect(user.client.get(f"/v1/channels/{cid}/messages"), 200)
    # A member cannot remove another member; the owner cannot leave.
    resp = member.client.delete(f"/v1/channels/{cid}/members/{outsider.user_id}")
    assert resp.status == 403
    assert owner.client.delete(f"/v1/channels/{cid}/members/{owner.user_id}").status == 409

    assert member.client.delete(f"/v1/channels/{cid}/members/{member.user_id}").status == 204
    assert owner.client.delete(f"/v1/channels/{cid}/members/{outsider.user_id}").status == 204
    for user in (member, outsider):
        for _ in range(3):  # through NGINX, so both workers are asked
            assert user.client.get(f"/v1/channels/{cid}/messages").status == 404
            resp = user.client.post(f"/v1/channels/{cid}/messages", {"text": "still here?"})
            assert resp.status == 404
    assert owner.client.delete(f"/v1/channels/{cid}/members/{member.user_id}").status == 404
    assert expect(owner.client.get(f"/v1/channels/{cid}"), 200)["member_ids"] == [owner.user_id]


# --- read state --------------------------------------------------------------------------------


def test_read_state_and_unread_counts(app: AppCtx) -> None:
    reader, writer = app.user(), app.user()
    cid = create(reader, "public", writer)["channel_id"]
    send(reader, cid, "mine")  # own messages are never unread
    for i in range(3):
        send(writer, cid, f"m{i}")
    listed = expect(reader.client.get("/v1/channels"), 200)["channels"]
    [entry] = [c for c in listed if c["channel_id"] == cid]
    assert entry["last_seq"] == 4
    assert entry["unread"] == 3
    assert entry["last_read_seq"] == 0

    state = expect(reader.client.post(f"/v1/channels/{cid}/read", {"seq": 3}), 200)
    assert state["last_read_seq"] == 3
    assert state["unread"] == 1
    # Never backwards.
    state = expect(reader.client.post(f"/v1/channels/{cid}/read", {"seq": 1}), 200)
    assert state["last_read_seq"] == 3
    assert reader.client.post(f"/v1/channels/{cid}/read", {"seq": -1}).status == 400
    assert reader.client.post(f"/v1/channels/{cid}/read", {"seq": "3"}).status == 400
    assert expect(reader.client.get(f"/v1/channels/{cid}"), 200)["unread"] == 1
    # Never past the end: a seq beyond it marks everything read and stops at last_seq.
    state = expect(reader.client.post(f"/v1/channels/{cid}/read", {"seq": 5}), 200)
    assert (state["last_read_seq"], state["unread"]) == (4, 0)
    # The writer's own read state is separate.
    assert expect(writer.client.get(f"/v1/channels/{cid}"), 200)["unread"] == 1


# --- the membership cache ---------------------------------------------------------------------


def scrape(worker_url: str) -> str:
    url = urlsplit(worker_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def membership_hits(stack: NativeTarget) -> float:
    total = 0.0
    for worker in stack.worker_urls:
        for line in scrape(worker).splitlines():
            if line.startswith('cache_hits_total{cache="membership"}'):
                total += float(line.split()[-1])
    return total


def test_membership_checks_are_served_from_the_cache(stack: NativeTarget, app: AppCtx) -> None:
    owner = app.user()
    cid = create(owner)["channel_id"]
    before = membership_hits(stack)
    for _ in range(6):
        expect(owner.client.get(f"/v1/channels/{cid}/messages"), 200)
    assert membership_hits(stack) >= before + 4, "repeated checks must hit the Redis cache"


def test_membership_checks_fall_back_to_postgres_while_redis_is_down(
    stack: NativeTarget, app: AppCtx
) -> None:
    assert stack.info is not None
    owner, outsider = app.user(), app.user()
    cid = create(owner)["channel_id"]
    send(owner, cid, "before")
    redis = stack.info.drills.control["redis"]
    redis.stop()
    try:
        statuses = [owner.client.get(f"/v1/channels/{cid}/messages").status for _ in range(4)]
        denied = [outsider.client.get(f"/v1/channels/{cid}/messages").status for _ in range(4)]
        sent = owner.client.post(f"/v1/channels/{cid}/messages", {"text": "during"}).status
    finally:
        redis.start()
    assert statuses == [200] * 4, "members must be served from PostgreSQL while Redis is down"
    assert denied == [404] * 4, "non-members must still be refused while Redis is down"
    assert sent == 201

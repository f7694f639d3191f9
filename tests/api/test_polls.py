"""Polls through NGINX: a poll is a message with a seq, votes replace earlier votes, counts add
up, and only members of the poll's channel see or vote."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from preflight.client import expect
from tests.api.conftest import AppCtx, UserCtx


def create_channel(owner: UserCtx, *members: UserCtx) -> str:
    body: dict[str, Any] = {"name": "room", "kind": "private"}
    if members:
        body["member_ids"] = [m.user_id for m in members]
    return str(expect(owner.client.post("/v1/channels", body), 201)["channel_id"])


def create_poll(user: UserCtx, cid: str, multiple: bool = False, n: int = 3) -> Any:
    body = {"question": "Lunch?", "options": [f"opt{i}" for i in range(n)], "multiple": multiple}
    return expect(user.client.post(f"/v1/channels/{cid}/polls", body), 201)


def vote(user: UserCtx, poll_id: str, *option_ids: str) -> Any:
    return user.client.post(f"/v1/polls/{poll_id}/votes", {"option_ids": list(option_ids)})


def counts(poll: Any) -> list[int]:
    return [o["votes"] for o in poll["options"]]


def test_a_poll_is_a_message_in_the_channel(app: AppCtx) -> None:
    owner, member = app.user(), app.user()
    cid = create_channel(owner, member)
    expect(owner.client.post(f"/v1/channels/{cid}/messages", {"text": "before"}), 201)
    poll = create_poll(owner, cid)
    assert poll["poll_id"].startswith("poll_")
    assert poll["message_id"].startswith("msg_")
    assert poll["seq"] == 2
    assert poll["question"] == "Lunch?"
    assert poll["multiple"] is False
    assert [o["text"] for o in poll["options"]] == ["opt0", "opt1", "opt2"]
    assert counts(poll) == [0, 0, 0]
    assert poll["my_votes"] == []
    history = expect(member.client.get(f"/v1/channels/{cid}/messages"), 200)["messages"]
    assert [m["kind"] for m in history] == ["text", "poll"]
    assert history[1]["poll_id"] == poll["poll_id"]
    assert history[1]["text"] == "Lunch?"
    # The poll's message cannot be edited as text.
    path = f"/v1/channels/{cid}/messages/{poll['message_id']}"
    assert owner.client.patch(path, {"text": "Dinner?"}).status == 409


def test_single_choice_votes_replace_each_other(app: AppCtx) -> None:
    owner, member = app.user(), app.user()
    cid = create_channel(owner, member)
    poll = create_poll(owner, cid)
    pid = poll["poll_id"]
    o0, o1, _ = (o["option_id"] for o in poll["options"])
    assert counts(expect(vote(owner, pid, o0), 200)) == [1, 0, 0]
    after = expect(vote(member, pid, o0), 200)
    assert counts(after) == [2, 0, 0]
    assert after["my_votes"] == [o0]
    changed = expect(vote(member, pid, o1), 200)
    assert counts(changed) == [1, 1, 0]
    assert changed["my_votes"] == [o1]
    assert vote(member, pid, o0, o1).status == 400, "a single-choice poll takes one option"
    got = expect(owner.client.get(f"/v1/polls/{pid}"), 200)
    assert counts(got) == [1, 1, 0]
    assert got["my_votes"] == [o0]


def test_multiple_choice_takes_several_options(app: AppCtx) -> None:
    owner = app.user()
    cid = create_channel(owner)
    poll = create_poll(owner, cid, multiple=True)
    pid = poll["poll_id"]
    o0, o1, o2 = (o["option_id"] for o in poll["options"])
    got = expect(vote(owner, pid, o0, o2), 200)
    assert counts(got) == [1, 0, 1]
    assert got["my_votes"] == [o0, o2]
    got = expect(vote(owner, pid, o1), 200)
    assert counts(got) == [0, 1, 0]
    assert got["my_votes"] == [o1]
    assert vote(owner, pid).status == 400
    assert vote(owner, pid, o1, o1).status == 400


def test_concurrent_votes_of_one_user_leave_one_vote(app: AppCtx) -> None:
    owner = app.user()
    cid = create_channel(owner)
    poll = create_poll(owner, cid, n=4)
    pid = poll["poll_id"]
    options = [o["option_id"] for o in poll["options"]]

    def cast(i: int) -> int:
        client = owner.client.with_headers()
        try:
            resp = client.post(f"/v1/polls/{pid}/votes", {"option_ids": [options[i % 4]]})
            return resp.status
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(cast, range(12)))
    assert set(statuses) <= {200, 429}
    assert 200 in statuses
    got = expect(owner.client.get(f"/v1/polls/{pid}"), 200)
    assert sum(counts(got)) == 1
    assert len(got["my_votes"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"question": "q", "options": ["only one"]},
        {"question": "q", "options": [f"o{i}" for i in range(11)]},
        {"question": "q", "options": ["same", "same"]},
        {"question": "", "options": ["a", "b"]},
        {"question": "q", "options": ["a", ""]},
        {"question": "q", "options": ["a", "b"], "multiple": "yes"},
        {"question": "q", "options": ["a", "b"], "closes_at": "never"},
    ],
)
def test_invalid_polls_are_400(app: AppCtx, body: dict[str, Any]) -> None:
    owner = app.user()
    cid = create_channel(owner)
    resp = owner.client.post(f"/v1/channels/{cid}/polls", body)
    assert resp.status == 400, f"poll {body} must be refused (got {resp})"
    assert expect(owner.client.get(f"/v1/channels/{cid}/messages"), 200)["messages"] == []


def test_options_of_another_poll_are_refused(app: AppCtx) -> None:
    owner = app.user()
    cid = create_channel(owner)
    first, second = create_poll(owner, cid), create_poll(owner, cid)
    foreign = second["options"][0]["option_id"]
    assert vote(owner, first["poll_id"], foreign).status == 409
    assert vote(owner, first["poll_id"], "opt_nope").status == 409
    assert sum(counts(expect(owner.client.get(f"/v1/polls/{first['poll_id']}"), 200))) == 0


def test_deleting_the_message_closes_the_poll(app: AppCtx) -> None:
    owner, member = app.user(), app.user()
    cid = create_channel(owner, member)
    poll = create_poll(owner, cid)
    option = poll["options"][0]["option_id"]
    path = f"/v1/channels/{cid}/messages/{poll['message_id']}"
    assert owner.client.delete(path).status == 204
    resp = vote(member, poll["poll_id"], option)
    assert resp.status == 409
    assert resp.error_code == "poll_closed"
    assert expect(member.client.get(f"/v1/polls/{poll['poll_id']}"), 200)["closed"] is True


@pytest.mark.parametrize("who", ["outsider", "stranger"])
def test_non_members_get_404_for_polls(app: AppCtx, other_app: AppCtx, who: str) -> None:
    owner = app.user()
    user = app.user() if who == "outsider" else other_app.user()
    cid = create_channel(owner)
    poll = create_poll(owner, cid)
    pid, option = poll["poll_id"], poll["options"][0]["option_id"]
    expect(vote(owner, pid, option), 200)
    attempts = [
        user.client.get(f"/v1/polls/{pid}"),
        vote(user, pid, option),
        user.client.post(f"/v1/channels/{cid}/polls", {"question": "q", "options": ["a", "b"]}),
    ]
    for resp in attempts:
        assert resp.status == 404, f"{who}: {resp} must be 404"
        assert b"Lunch" not in resp.body
    got = expect(owner.client.get(f"/v1/polls/{pid}"), 200)
    assert counts(got) == [1, 0, 0]
    history = expect(owner.client.get(f"/v1/channels/{cid}/messages"), 200)["messages"]
    assert len(history) == 1


def test_a_removed_member_can_no_longer_vote(app: AppCtx) -> None:
    owner, member = app.user(), app.user()
    cid = create_channel(owner, member)
    poll = create_poll(owner, cid)
    option = poll["options"][0]["option_id"]
    expect(vote(member, poll["poll_id"], option), 200)
    assert member.client.delete(f"/v1/channels/{cid}/members/{member.user_id}").status == 204
    assert vote(member, poll["poll_id"], option).status == 404
    assert member.client.get(f"/v1/polls/{poll['poll_id']}").status == 404

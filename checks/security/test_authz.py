"""Broken object-level authorization: a user of the same app who is not a member of a channel, and
a user of another app, try to read, change and delete the channel owner's channel, messages,
upload and poll with the ids the API gave the owner; and API keys are per app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from checks._chat import Actor, call
from checks.security._actors import Actors, Objects
from preflight.client import ChatClient, Response
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

REFUSED = (403, 404)


@dataclass(frozen=True)
class Attempt:
    method: str
    path: Callable[[Objects], str]
    body: Callable[[Objects, Actor], Any] = lambda _o, _a: None
    changes: bool = False  # the owner checks afterwards that nothing changed


ATTEMPTS = {
    "read-channel": Attempt("GET", lambda o: f"/v1/channels/{o.channel_id}"),
    "rename-channel": Attempt(
        "PATCH", lambda o: f"/v1/channels/{o.channel_id}", lambda _o, _a: {"name": "pwned"}, True
    ),
    "delete-channel": Attempt("DELETE", lambda o: f"/v1/channels/{o.channel_id}", changes=True),
    "join-channel": Attempt(
        "POST",
        lambda o: f"/v1/channels/{o.channel_id}/members",
        lambda _o, a: {"user_ids": [a.user_id]},
        True,
    ),
    "read-messages": Attempt("GET", lambda o: f"/v1/channels/{o.channel_id}/messages"),
    "read-thread": Attempt(
        "GET", lambda o: f"/v1/channels/{o.channel_id}/messages/{o.message_id}/replies"
    ),
    "post-message": Attempt(
        "POST",
        lambda o: f"/v1/channels/{o.channel_id}/messages",
        lambda _o, _a: {"text": "injected"},
        True,
    ),
    "edit-message": Attempt(
        "PATCH",
        lambda o: f"/v1/channels/{o.channel_id}/messages/{o.message_id}",
        lambda _o, _a: {"text": "pwned"},
        True,
    ),
    "delete-message": Attempt(
        "DELETE", lambda o: f"/v1/channels/{o.channel_id}/messages/{o.message_id}", changes=True
    ),
    "react-to-message": Attempt(
        "PUT",
        lambda o: f"/v1/channels/{o.channel_id}/messages/{o.message_id}/reactions/%F0%9F%91%8D",
        changes=True,
    ),
    "mark-read": Attempt(
        "POST", lambda o: f"/v1/channels/{o.channel_id}/read", lambda _o, _a: {"seq": 1}, True
    ),
    "download-upload": Attempt("GET", lambda o: f"/v1/uploads/{o.upload_id}"),
    "read-poll": Attempt("GET", lambda o: f"/v1/polls/{o.poll_id}"),
    "vote-in-poll": Attempt(
        "POST",
        lambda o: f"/v1/polls/{o.poll_id}/votes",
        lambda o, _a: {"option_ids": [o.option_id]},
        True,
    ),
    "create-poll": Attempt(
        "POST",
        lambda o: f"/v1/channels/{o.channel_id}/polls",
        lambda _o, _a: {"question": "pwned?", "options": ["a", "b"]},
        True,
    ),
}
ATTACKERS = {
    "non-member": lambda actors: actors.outsider,
    "other-app-user": lambda actors: actors.stranger,
}


def _leaks(response: Response, actors: Actors) -> list[str]:
    """Which of the owner's secrets (ids, text, bytes) the response body carries."""
    o = actors.objects
    secrets = {
        "the message text": b"launch code",
        "the message id": o.message_id.encode(),
        "the upload id": o.upload_id.encode(),
        "the option id": o.option_id.encode(),
        "the owner's user id": actors.owner.user_id.encode(),
        "the upload's bytes": b"IHDR",
    }
    return [name for name, value in secrets.items() if value in response.body]


def _owner_view(actors: Actors) -> dict[str, Any]:
    """What the owner sees of the channel afterwards, to notice a change that 'failed'."""
    o, owner = actors.objects, actors.owner.client
    channel = call(owner, "GET", f"/v1/channels/{o.channel_id}")
    messages = call(owner, "GET", f"/v1/channels/{o.channel_id}/messages")
    poll = call(owner, "GET", f"/v1/polls/{o.poll_id}")
    return {
        "channel": channel.status,
        "name": channel.json().get("name") if channel.status == 200 else None,
        "messages": [
            (m.get("message_id"), m.get("text"), m.get("user_id"), m.get("reactions"))
            for m in (messages.json().get("messages", []) if messages.status == 200 else [])
        ],
        "votes": [opt.get("votes") for opt in poll.json().get("options", [])]
        if poll.status == 200
        else None,
    }


@pytest.mark.checklist("SEC-TENANT-ISOLATION")
@pytest.mark.parametrize("attacker", list(ATTACKERS))
@pytest.mark.parametrize("attempt", list(ATTEMPTS))
def test_others_objects_are_not_reachable_by_id(
    actors: Actors, evidence: EvidenceLog, attacker: str, attempt: str
) -> None:
    """Broken object-level authorization leaks conversations between tenants."""
    who = ATTACKERS[attacker](actors)
    spec = ATTEMPTS[attempt]
    before = _owner_view(actors) if spec.changes else None
    path = spec.path(actors.objects)
    response = call(who.client, spec.method, path, json=spec.body(actors.objects, who))
    evidence.request(response)
    leaked = _leaks(response, actors)
    refused = response.status in REFUSED and not leaked
    assert refused, (
        f"{spec.method} {path} by a {attacker} must be refused with 403 or 404 and reveal nothing "
        f"(got {response.status}{', revealing ' + ', '.join(leaked) if leaked else ''})"
    )
    if before is not None:
        after = _owner_view(actors)
        assert after == before, (
            f"{spec.method} {path} by a {attacker} answered {response.status} but changed the "
            f"owner's channel (before {before}, after {after})"
        )


@pytest.mark.checklist("SEC-TENANT-ISOLATION")
@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/v1/users/{user_id}", id="read-profile"),
        pytest.param("POST", "/v1/users/{user_id}/revoke", id="revoke-tokens"),
        pytest.param("DELETE", "/v1/users/{user_id}", id="erase-user"),
    ],
)
def test_another_apps_users_are_not_reachable(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog, method: str, path: str
) -> None:
    """One app's backend or users must not read, revoke or erase another app's users."""
    victim = actors.tenant.user("victim")
    url = path.format(user_id=victim.user_id)
    # A user of the other app reads profiles; the other app's backend revokes and erases.
    client = actors.stranger.client if method == "GET" else actors.other_tenant.client
    response = call(client, method, url)
    evidence.request(response)
    refused = response.status in REFUSED and victim.user_id.encode() not in response.body
    assert refused, (
        f"{method} {url} by another app must be refused with 403 or 404 (got {response.status})"
    )
    still = call(victim.client, "GET", "/v1/me")
    assert still.status == 200, (
        f"{method} {url} by another app answered {response.status} but the user's token stopped "
        f"working (GET /v1/me answered {still.status})"
    )


def _mint(client: ChatClient) -> Response:
    return call(client, "POST", "/v1/tokens", json={"user_id": "apikey-probe"})


@pytest.mark.checklist("SEC-APIKEY-ISSUED")
def test_each_app_has_its_own_key(actors: Actors, evidence: EvidenceLog) -> None:
    """Shared keys make it impossible to revoke one client without breaking all."""
    a, b = actors.tenant, actors.other_tenant
    distinct = a.api_key != b.api_key and a.key_id != b.key_id
    assert distinct, (
        f"apps {a.app_id} and {b.app_id} must get distinct API keys (got the same key id "
        f"{a.key_id})"
    )
    for tenant in (a, b):
        response = _mint(tenant.client)
        evidence.request(response)
        assert response.status == 201, (
            f"POST /v1/tokens with app {tenant.app_id}'s own key must answer 201 "
            f"(got {response.status})"
        )
    # A token minted with app B's key belongs to app B: it cannot see app A's objects.
    token = _mint(b.client).json()["access_token"]
    seen = call(b.base.as_user(token), "GET", f"/v1/channels/{actors.objects.channel_id}")
    evidence.request(seen)
    assert seen.status in REFUSED, (
        f"a token minted with app {b.app_id}'s key must not open app {a.app_id}'s channel "
        f"(got {seen.status})"
    )


BAD_KEYS = (
    "no key",
    "empty key",
    "unknown key",
    "right id, wrong secret",
    "the key id alone",
    "the admin key as an API key",
)


def _bad_key(case: str, api_key: str, admin_key: str) -> dict[str, str]:
    key_id, _, secret = api_key.partition(".")
    flipped = secret[:-1] + ("A" if secret[-1:] != "A" else "B")
    values = {
        "empty key": "",
        "unknown key": "ck_doesnotexist.c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
        "right id, wrong secret": f"{key_id}.{flipped}",
        "the key id alone": key_id,
        "the admin key as an API key": admin_key,
    }
    return {"X-API-Key": values[case]} if case in values else {}


@pytest.mark.checklist("SEC-APIKEY-ISSUED")
@pytest.mark.parametrize("case", BAD_KEYS)
def test_requests_without_a_valid_key_are_refused(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog, case: str
) -> None:
    """A backend endpoint that accepts a missing or wrong key lets anyone mint tokens."""
    headers = _bad_key(case, actors.tenant.api_key, target.admin_key)
    response = call(target.http, "POST", "/v1/tokens", json={"user_id": "x"}, headers=headers)
    evidence.request(response)
    assert response.status == 401, (
        f"POST /v1/tokens with {case} must be refused with 401 (got {response.status})"
    )

"""A small world for probes that act like users: an app, users with tokens, a channel, messages
sent over HTTP and received over the realtime WebSocket, all through the target's public edge."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from websockets.sync.client import ClientConnection

from preflight.client import ChatClient, Response, expect, polite
from preflight.probe.target import ProbeTarget
from preflight.wsclient import connect

RECV_TIMEOUT = 5.0


def call(
    client: ChatClient,
    method: str,
    path: str,
    *,
    json: Any = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """One request, with a 429 waited out (see polite)."""
    return polite(lambda: client.request(method, path, json=json, body=body, headers=headers))


def created(client: ChatClient, path: str, body: Any, what: str) -> dict[str, Any]:
    """The JSON of a 201 for a set-up step; anything else means the probe cannot proceed."""
    response = call(client, "POST", path, json=body)
    if response.status != 201:
        raise RuntimeError(f"setting up {what}: POST {path} answered {response}")
    result: dict[str, Any] = response.json()
    return result


@dataclass(frozen=True)
class Actor:
    """A user with a fresh token pair."""

    app_id: str
    user_id: str
    access_token: str
    refresh_token: str
    client: ChatClient  # authenticated as this user


@dataclass(frozen=True)
class Tenant:
    """An app of this probe session: its id, its key, and a client authenticated with it."""

    app_id: str
    api_key: str
    key_id: str
    client: ChatClient  # authenticated as the app's backend
    base: ChatClient  # no credentials

    @classmethod
    def create(cls, target: ProbeTarget, label: str = "probe") -> Tenant:
        admin = target.http.as_admin(target.admin_key)
        name = f"preflight-{label}-{secrets.token_hex(4)}"
        app = created(admin, "/v1/apps", {"name": name}, f"app {name}")
        return cls(
            app["app_id"],
            app["api_key"],
            app["key_id"],
            target.http.as_app(app["api_key"]),
            target.http,
        )

    def user(self, label: str = "probe") -> Actor:
        user_id = f"{label}-{secrets.token_hex(4)}"
        pair = created(self.client, "/v1/tokens", {"user_id": user_id}, f"a token for {user_id}")
        return Actor(
            self.app_id,
            user_id,
            pair["access_token"],
            pair["refresh_token"],
            self.base.as_user(pair["access_token"]),
        )

    def channel(self, owner: Actor, *members: Actor) -> str:
        """A private channel of `owner` with `members`; its id."""
        body = {
            "name": f"probe-{secrets.token_hex(3)}",
            "kind": "private",
            "member_ids": [m.user_id for m in members],
        }
        return str(created(owner.client, "/v1/channels", body, "a channel")["channel_id"])


def send(user: Actor, channel_id: str, text: str) -> dict[str, Any]:
    body = {"text": text, "client_msg_id": secrets.token_hex(8)}
    path = f"/v1/channels/{channel_id}/messages"
    created: dict[str, Any] = expect(polite(lambda: user.client.post(path, body)), 201)
    return created


class Socket:
    """JSON frames over one realtime connection."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    def send(self, frame: dict[str, Any]) -> None:
        self.conn.send(json.dumps(frame))

    def until(
        self, wanted: Callable[[dict[str, Any]], bool], timeout: float = RECV_TIMEOUT
    ) -> dict[str, Any] | None:
        """The first frame `wanted` accepts within `timeout`, or None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame: dict[str, Any] = json.loads(self.conn.recv(timeout=left))
            except TimeoutError:
                return None
            if wanted(frame):
                return frame
        return None

    def subscribe(self, channel_id: str) -> dict[str, Any] | None:
        self.send({"type": "subscribe", "channel_id": channel_id})
        return self.until(
            lambda f: f.get("type") in {"subscribed", "error"} and f.get("channel_id") == channel_id
        )


@contextmanager
def realtime(target: ProbeTarget, user: Actor) -> Iterator[Socket]:
    """An authenticated realtime socket through the edge (no Origin: a server-side client)."""
    with connect(target.ws_url, ssl=target.ssl_context(), open_timeout=10, close_timeout=5) as conn:
        socket = Socket(conn)
        socket.send({"type": "auth", "token": user.access_token})
        if socket.until(lambda f: f.get("type") in {"authenticated", "error"}) is None:
            raise TimeoutError(
                f"{target.ws_url}: no answer to the auth frame within {RECV_TIMEOUT} s"
            )
        yield socket

"""A small world for probes that act like users: an app, users with tokens, a channel, messages
sent over HTTP and received over the realtime WebSocket, all through the target's public edge."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from websockets.sync.client import ClientConnection, connect

from preflight.client import ChatClient, Response, expect
from preflight.probe_target import ProbeTarget

RECV_TIMEOUT = 5.0
RETRIES_ON_429 = 5


def polite(call: Callable[[], Response]) -> Response:
    """Make a request the way a well-behaved client does: on 429, wait the Retry-After delay and
    try again (a few times). Probes share one client address, and the edge's per-address limit
    is not what these probes judge; SEC-RATELIMIT's probes call the client directly."""
    response = call()
    for _ in range(RETRIES_ON_429):
        if response.status != 429:
            break
        time.sleep(min(float(response.headers.get("retry-after", "1") or 1), 5.0))
        response = call()
    return response


@dataclass(frozen=True)
class User:
    user_id: str
    access_token: str
    client: ChatClient


@dataclass(frozen=True)
class World:
    """One app of this probe session, and a way to add users to it."""

    target: ProbeTarget
    app_id: str
    app: ChatClient  # authenticated as the app's backend

    @classmethod
    def create(cls, target: ProbeTarget) -> World:
        admin = target.http.as_admin(target.admin_key)
        name = f"preflight-probe-{secrets.token_hex(4)}"
        created = expect(polite(lambda: admin.post("/v1/apps", {"name": name})), 201)
        return cls(target, created["app_id"], target.http.as_app(created["api_key"]))

    def user(self, prefix: str = "probe") -> User:
        user_id = f"{prefix}-{secrets.token_hex(4)}"
        tokens = expect(polite(lambda: self.app.post("/v1/tokens", {"user_id": user_id})), 201)
        return User(
            user_id, tokens["access_token"], self.target.http.as_user(tokens["access_token"])
        )

    def channel(self, owner: User, *members: User) -> str:
        body = {
            "name": f"probe-{secrets.token_hex(3)}",
            "kind": "private",
            "member_ids": [m.user_id for m in members],
        }
        created = expect(polite(lambda: owner.client.post("/v1/channels", body)), 201)
        return str(created["channel_id"])


def send(user: User, channel_id: str, text: str) -> dict[str, Any]:
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
def realtime(target: ProbeTarget, user: User) -> Iterator[Socket]:
    """An authenticated realtime socket through the edge (no Origin: a server-side client)."""
    with connect(target.ws_url, ssl=target.ssl_context(), open_timeout=10, close_timeout=5) as conn:
        socket = Socket(conn)
        socket.send({"type": "auth", "token": user.access_token})
        if socket.until(lambda f: f.get("type") in {"authenticated", "error"}) is None:
            raise TimeoutError(
                f"{target.ws_url}: no answer to the auth frame within {RECV_TIMEOUT} s"
            )
        yield socket

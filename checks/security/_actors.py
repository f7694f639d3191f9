"""The people and objects the auth, authorization and input probes act with, created through the
target's public API with the admin key: two apps (tenants), an owner and a member of a private
channel, a user of the same app who is not a member, and a user of the other app; the owner's
channel holds a message with an upload attached and a poll. Built once per session (the
`actors` fixture in checks/conftest.py), so ids in every probe come from real responses.

The edge limits requests per client address and the API per user and action; all probes share
one address, so `call` waits out an edge 429 (Retry-After) instead of judging it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection

from checks._chat import Actor, Tenant, created
from preflight.client import expect
from preflight.probe.target import ProbeTarget
from preflight.wsclient import connect

WS_TIMEOUT_S = 8.0

PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8ffff3f0005fe02fea7d6a4b80000000049454e44ae426082"
)


@dataclass(frozen=True)
class Objects:
    """What the owner made, with the ids the API answered."""

    channel_id: str
    message_id: str
    upload_id: str
    poll_id: str
    option_id: str


@dataclass(frozen=True)
class Actors:
    tenant: Tenant
    owner: Actor  # made the channel and everything in it
    member: Actor  # a member of the owner's channel
    outsider: Actor  # same app, not a member
    other_tenant: Tenant
    stranger: Actor  # a user of the other app
    objects: Objects

    @classmethod
    def create(cls, target: ProbeTarget) -> Actors:
        tenant = Tenant.create(target, "tenant-a")
        owner, member, outsider = (
            tenant.user("owner"),
            tenant.user("member"),
            tenant.user("outsider"),
        )
        other = Tenant.create(target, "tenant-b")
        stranger = other.user("stranger")
        channel = created(
            owner.client,
            "/v1/channels",
            {"name": "private-probe", "kind": "private", "member_ids": [member.user_id]},
            "the owner's private channel",
        )
        channel_id = str(channel["channel_id"])
        upload = owner.client.request(
            "POST", "/v1/uploads", body=PNG_1X1, headers={"Content-Type": "image/png"}
        )
        upload_id = str(expect(upload, 201)["upload_id"])
        message = created(
            owner.client,
            f"/v1/channels/{channel_id}/messages",
            {"text": "private: the launch code is 0000", "upload_ids": [upload_id]},
            "the owner's message",
        )
        poll = created(
            owner.client,
            f"/v1/channels/{channel_id}/polls",
            {"question": "private poll?", "options": ["yes", "no"]},
            "the owner's poll",
        )
        objects = Objects(
            channel_id,
            str(message["message_id"]),
            upload_id,
            str(poll["poll_id"]),
            str(poll["options"][0]["option_id"]),
        )
        return cls(tenant, owner, member, outsider, other, stranger, objects)


# -- realtime -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WsAnswer:
    """What the realtime endpoint did with a connection attempt."""

    accepted: bool  # the socket authenticated (an `authenticated` frame came back)
    what: str  # for messages: "refused at the handshake with 403", "closed with 4401 ...", ...
    close_code: int | None = None
    handshake_status: int | None = None


def ws_connect(
    target: ProbeTarget, origin: str | None = None, url: str | None = None, *, own: bool = False
) -> ClientConnection:
    """A realtime socket; `own`: from an address of its own where this machine can be many
    clients (ProbeTarget.own_client), for a probe that sends what the throttles count."""
    url = url or target.ws_url
    secure = url.startswith("wss://")
    clients, source = (target.clients, target.client_address()) if own else (None, None)
    return connect(
        url,
        ssl=target.ssl_context() if secure else None,
        source_address=(source, 0) if clients and source else None,
        via=clients.address if clients and source and secure else None,
        origin=origin,
        open_timeout=WS_TIMEOUT_S,
        close_timeout=2,
        compression=None,
        proxy=None,
        user_agent_header="preflight-probe",
    )


def ws_authenticate(
    target: ProbeTarget,
    token: str | None,
    origin: str | None = None,
    url: str | None = None,
    *,
    own: bool = False,
) -> WsAnswer:
    """Open a socket and send the auth frame with `token` (None: send nothing and wait). A
    handshake that times out or cannot connect twice raises: that decides nothing. `own`: from
    an address of its own (ws_connect)."""
    for attempt in (1, 2):
        try:
            conn = ws_connect(target, origin, url, own=own)
            break
        except InvalidStatus as exc:
            status = exc.response.status_code
            return WsAnswer(False, f"refused at the handshake with {status}", None, status)
        except InvalidHandshake as exc:
            return WsAnswer(False, f"refused at the handshake ({type(exc).__name__}: {exc})")
        except OSError:  # TimeoutError included: a busy machine, not an answer
            if attempt == 2:
                raise
    with conn:
        try:
            if token is not None:
                conn.send(json.dumps({"type": "auth", "token": token}))
            deadline = time.monotonic() + WS_TIMEOUT_S
            while (left := deadline - time.monotonic()) > 0:
                frame = json.loads(conn.recv(timeout=left))
                if isinstance(frame, dict) and frame.get("type") == "authenticated":
                    return WsAnswer(True, "accepted (an authenticated frame came back)")
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            reason = closed.rcvd.reason if closed.rcvd else ""
            return WsAnswer(False, f"closed with {code} {reason!r}".strip(), code)
        except TimeoutError:
            pass
        return WsAnswer(False, f"neither accepted nor closed within {WS_TIMEOUT_S} s")

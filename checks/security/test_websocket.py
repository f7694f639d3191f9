"""The realtime endpoint: wss only, a valid token before anything else, subscriptions only to the
user's channels, foreign origins refused, and RFC 6455 protocol violations closed with the right
codes while the server stays up. Violation frames are written by hand on a raw TLS socket (the
Autobahn suite cannot run here; see the reference catalogue, WS-04)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from urllib.parse import urlsplit

import pytest

from checks._chat import call
from checks.security._actors import WS_TIMEOUT_S, Actors, ws_authenticate, ws_connect
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

REFUSAL_CODES = (4401, 4403, 1008)  # the contract's 4401, or RFC 6455's policy violation
FOREIGN_ORIGINS = ("https://evil.example", "null", "http://127.0.0.1")
MAX_FRAME = 64 * 1024  # what the server documents; a larger message must be refused with 1009


# -- raw frames ---------------------------------------------------------------------------------


def frame(
    opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True, rsv: int = 0
) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    flag = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = bytes([first, flag | n])
    elif n < 1 << 16:
        head = bytes([first, flag | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, flag | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawSocket:
    """A WebSocket opened by hand over TLS, to send what no client library would."""

    def __init__(self, target: ProbeTarget) -> None:
        url = urlsplit(target.ws_url)
        host, port = url.hostname or "", url.port or 443
        context = target.ssl_context()
        context.set_alpn_protocols(["http/1.1"])
        plain = socket.create_connection((host, port), timeout=WS_TIMEOUT_S)
        self.sock = context.wrap_socket(plain, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {url.path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, self.buffer = data.partition(b"\r\n\r\n")
        self.status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, n: int) -> bool:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def next_frame(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next server frame; None at the end of the stream."""
        if not self._fill(2):
            return None
        n, offset = self.buffer[1] & 0x7F, 2
        if n == 126:
            if not self._fill(4):
                return None
            n, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif n == 127:
            if not self._fill(10):
                return None
            n, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
        if not self._fill(offset + n):
            return None
        opcode, payload = self.buffer[0] & 0x0F, self.buffer[offset : offset + n]
        self.buffer = self.buffer[offset + n :]
        return opcode, payload

    def outcome(self) -> str:
        """How the server answered: 'close <code>', 'end of stream', 'nothing within ..', or the
        first text frame it sent instead (it processed the frame as if it were valid)."""
        deadline = time.monotonic() + WS_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                got = self.next_frame()
                if got is None:
                    return "end of stream without a close frame"
                opcode, payload = got
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    return f"close {code}"
                if opcode == 0x1:
                    return f"processed as valid (answered {payload[:80].decode(errors='replace')})"
        except TimeoutError:
            pass
        except OSError as exc:
            return f"connection error ({exc})"
        return f"no close within {WS_TIMEOUT_S} s"

    def close(self) -> None:
        self.sock.close()


def authenticated_raw(target: ProbeTarget, token: str) -> RawSocket:
    raw = RawSocket(target)
    assert raw.status_line.split(" ")[1:2] == ["101"], (
        f"{target.ws_url} must upgrade a plain handshake (got {raw.status_line!r})"
    )
    raw.send(frame(0x1, json.dumps({"type": "auth", "token": token}).encode()))
    got = raw.next_frame()
    if got is None or b"authenticated" not in got[1]:
        raise RuntimeError(f"{target.ws_url}: a genuine token was not accepted ({got})")
    return raw


# -- SEC-WS-AUTH --------------------------------------------------------------------------------


@pytest.mark.checklist("SEC-WS-AUTH")
def test_plain_ws_is_not_served(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """A realtime socket over plain ws:// exposes tokens and messages on the wire."""
    url = target.http_url.replace("http://", "ws://", 1).rstrip("/") + "/v1/realtime"
    try:
        answer = ws_authenticate(target, None, url=url)
    except ConnectionRefusedError as exc:  # nothing listens for plain HTTP: refused too
        evidence.note(f"{url}: {exc}")
        return
    evidence.note(f"{url}: {answer.what}")
    assert answer.handshake_status is not None or (
        not answer.accepted and answer.close_code is None and "refused" in answer.what
    ), f"a WebSocket upgrade on {url} (plain ws://) must be refused (got {answer.what})"


@pytest.mark.checklist("SEC-WS-AUTH")
@pytest.mark.parametrize(
    "first",
    [
        pytest.param(None, id="no-frame"),
        pytest.param('{"type": "auth"}', id="auth-without-token"),
        pytest.param('{"type": "auth", "token": ""}', id="empty-token"),
        pytest.param('{"type": "subscribe", "channel_id": "x"}', id="subscribe-before-auth"),
        pytest.param("not json", id="not-json"),
    ],
)
def test_a_socket_without_a_token_is_closed(
    target: ProbeTarget, evidence: EvidenceLog, first: str | None
) -> None:
    """An unauthenticated realtime channel broadcasts private messages to anyone."""
    with ws_connect(target) as conn:
        if first is not None:
            conn.send(first)
        texts: list[str] = []
        code: int | None = None
        try:
            deadline = time.monotonic() + WS_TIMEOUT_S
            while (left := deadline - time.monotonic()) > 0:
                texts.append(str(conn.recv(timeout=left))[:100])
        except TimeoutError:
            pass
        except Exception as exc:  # websockets' ConnectionClosed*
            rcvd = getattr(exc, "rcvd", None)
            code = rcvd.code if rcvd is not None else None
    evidence.note(f"first frame {first!r}: frames {texts}, closed with {code}")
    closed = code in REFUSAL_CODES and not any("authenticated" in t for t in texts)
    assert closed, (
        f"{target.ws_url} must close a socket whose first frame is {first or 'missing'} with "
        f"4401 (got close {code}, frames {texts})"
    )


@pytest.mark.checklist("SEC-WS-AUTH")
@pytest.mark.parametrize("who", ["outsider", "stranger"])
def test_subscriptions_are_limited_to_the_users_channels(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog, who: str
) -> None:
    """Subscribing by id to someone else's channel must deliver nothing."""
    user = getattr(actors, who)
    channel_id = actors.objects.channel_id
    with ws_connect(target) as conn:
        conn.send(json.dumps({"type": "auth", "token": user.access_token}))
        conn.send(json.dumps({"type": "subscribe", "channel_id": channel_id, "after_seq": 0}))
        frames: list[dict[str, object]] = []
        deadline = time.monotonic() + WS_TIMEOUT_S
        try:
            while (left := deadline - time.monotonic()) > 0:
                frames.append(json.loads(conn.recv(timeout=left)))
                if frames[-1].get("type") == "error":  # anything leaking would come with it
                    deadline = min(deadline, time.monotonic() + 0.5)
        except TimeoutError:
            pass
    kinds = [str(f.get("type")) for f in frames]
    evidence.note(f"{who} subscribed to {channel_id} from seq 0: frames {kinds}")
    leaked = [f for f in frames if f.get("channel_id") == channel_id and f.get("type") != "error"]
    refused = "error" in kinds and not leaked
    assert refused, (
        f"a subscription by a {who} to another's channel must get an error frame and nothing "
        f"else (got {kinds})"
    )


VIOLATIONS = {
    # name: (frame, expected close code, RFC 6455 section)
    "an unmasked frame": (frame(0x1, b'{"type":"ping"}', mask=False), 1002, "5.1"),
    "a frame with reserved opcode 0x3": (frame(0x3, b"x"), 1002, "5.2"),
    "a frame with RSV1 set and no extension": (
        frame(0x1, b'{"type":"ping"}', rsv=0x40),
        1002,
        "5.2",
    ),
    "a control frame over 125 bytes": (frame(0x9, b"a" * 126), 1002, "5.5"),
    "a fragmented ping": (frame(0x9, b"a", fin=False), 1002, "5.5"),
    "invalid UTF-8 in a text frame": (frame(0x1, b'{"type":"\xff\xfe"}'), 1007, "8.1"),
    "an oversized message": (frame(0x1, b"a" * (MAX_FRAME + 1024)), 1009, "7.4.1"),
}


@pytest.mark.checklist("SEC-WS-AUTH")
@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_protocol_violations_close_the_socket(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog, violation: str
) -> None:
    """A server that tolerates malformed frames can be desynchronised or exhausted."""
    data, code, section = VIOLATIONS[violation]
    raw = authenticated_raw(target, actors.member.access_token)
    try:
        raw.send(data)
        got = raw.outcome()
    finally:
        raw.close()
    evidence.note(f"{violation} after auth: {got}")
    assert got == f"close {code}", (
        f"sending {violation} on {target.ws_url} must close the socket with {code} (RFC 6455 "
        f"section {section}) (got {got})"
    )
    live = call(target.http, "GET", "/v1/health/live")
    assert live.status == 200, f"the API must stay up after {violation} (live: {live.status})"


# -- SEC-WS-ORIGIN ------------------------------------------------------------------------------


@pytest.mark.checklist("SEC-WS-ORIGIN")
@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_foreign_origins_are_refused_at_the_handshake(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog, origin: str
) -> None:
    """Cross-site WebSocket hijacking lets other sites use a signed-in session."""
    answer = ws_authenticate(target, actors.member.access_token, origin=origin)
    evidence.note(f"Origin {origin}: {answer.what}")
    status = answer.handshake_status
    assert status is not None, (
        f"a WebSocket handshake on {target.ws_url} from Origin {origin} must be refused "
        f"before the upgrade (got {answer.what})"
    )
    assert 400 <= status < 500, (
        f"a WebSocket handshake on {target.ws_url} from Origin {origin} must be refused with a "
        f"4xx before the upgrade (got {answer.what})"
    )


@pytest.mark.checklist("SEC-WS-ORIGIN")
def test_the_deployments_own_origin_is_accepted(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog
) -> None:
    """Without a working baseline the refusals would prove nothing."""
    url = urlsplit(target.edge_url)
    origin = f"{url.scheme}://{url.netloc}"
    answer = ws_authenticate(target, actors.member.access_token, origin=origin)
    evidence.note(f"Origin {origin}: {answer.what}")
    assert answer.accepted, (
        f"a WebSocket handshake on {target.ws_url} from its own Origin {origin} must be accepted "
        f"(got {answer.what})"
    )

"""The realtime socket's flood limit: a client may send up to 50 frames per second (a burst of 100
on top), and a socket that keeps sending faster is closed with 1008 (policy violation), so one
client cannot keep a worker busy reading its frames. Frames are `ping`s, each answered with a
`pong`, read as they come so that the server never waits on this client."""

from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed

from checks._chat import Socket, Tenant, realtime
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

LIMIT_PER_S = 50  # the original's "50 req/s WebSocket", system/chatsdk/realtime.py FRAME_RATE
BELOW_PER_S, BELOW_S = 40, 3.0
ABOVE_PER_S, ABOVE_S = 100, 10.0  # the 100-frame burst is spent after about 2 s at this rate
POLICY_VIOLATION = 1008


def _paced(socket: Socket, per_s: int, seconds: float) -> tuple[int, int, int | None]:
    """Send pings at `per_s` for `seconds`, reading answers as they come: (sent, pongs, the close
    code if the server closed the socket)."""
    sent = pongs = 0
    start = time.monotonic()
    try:
        while sent < per_s * seconds:
            socket.send({"type": "ping"})
            sent += 1
            while True:
                try:
                    frame = json.loads(socket.conn.recv(timeout=0))
                except TimeoutError:
                    break
                pongs += frame.get("type") == "pong"
            time.sleep(max(0.0, start + sent / per_s - time.monotonic()))
    except ConnectionClosed as closed:
        return sent, pongs, closed.rcvd.code if closed.rcvd else None
    return sent, pongs, None


@pytest.mark.checklist("SEC-WS-FRAME-RATE")
def test_a_socket_sending_faster_than_50_frames_per_second_is_closed(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Without a frame limit one client floods a worker's event loop with frames to read."""
    user = Tenant.create(target, "wsrate").user()
    with realtime(target, user) as socket:
        sent, pongs, code = _paced(socket, BELOW_PER_S, BELOW_S)
        evidence.note(f"{BELOW_PER_S} frames/s for {BELOW_S:g} s: sent {sent}, close {code}")
        assert code is None, (
            f"a socket sending {BELOW_PER_S} frames/s, under the limit of {LIMIT_PER_S}, must stay "
            f"open (closed with {code} after {sent} frames)"
        )
        sent, pongs, code = _paced(socket, ABOVE_PER_S, ABOVE_S)
        evidence.note(f"{ABOVE_PER_S} frames/s: sent {sent}, {pongs} pongs, close {code}")
    assert code == POLICY_VIOLATION, (
        f"a socket sending {ABOVE_PER_S} frames/s must be closed with {POLICY_VIOLATION} "
        f"once past the limit of {LIMIT_PER_S}/s and its burst (sent {sent} frames in "
        f"{ABOVE_S:g} s; {'still open' if code is None else f'closed with {code}'})"
    )

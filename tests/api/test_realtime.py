"""GET /v1/realtime against the real stack: handshake and auth, membership, ordering and
backfill, fan-out across workers, revocation, a Redis outage, typing, and protocol abuse."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import http.client
import json
import re
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
)
from websockets.sync.client import ClientConnection

from checks.security.test_websocket import RawSocket, authenticated_raw
from checks.security.test_websocket import frame as raw_frame
from preflight.client import ChatClient, expect
from preflight.probe.target import ProbeTarget
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTarget
from preflight.wsclient import connect
from tests.api.conftest import AppCtx, UserCtx

RECV_TIMEOUT = 5.0


class Socket:
    """A test's view of one realtime connection: JSON frames in and out. Frames skipped while
    waiting for a particular one are kept, in order, for the next reads."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.pending: collections.deque[dict[str, Any]] = collections.deque()

    def send(self, frame: Any) -> None:
        self.conn.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    def _wire(self, timeout: float) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.conn.recv(timeout=timeout))
        return frame

    def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        return self.pending.popleft() if self.pending else self._wire(timeout)

    def until(
        self, wanted: Callable[[dict[str, Any]], bool], timeout: float = RECV_TIMEOUT
    ) -> dict[str, Any]:
        """The first frame that `wanted` accepts; the others stay pending."""
        __tracebackhide__ = True
        for frame in self.pending:
            if wanted(frame):
                self.pending.remove(frame)
                return frame
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = self._wire(left)
            except TimeoutError:
                break
            if wanted(frame):
                return frame
            self.pending.append(frame)
        seen = [f.get("type", "?") for f in self.pending]
        raise AssertionError(f"no wanted frame within {timeout} s (got only {seen})")

    def frames(self, seconds: float) -> list[dict[str, Any]]:
        """Everything pending or arriving within `seconds`."""
        out = list(self.pending)
        self.pending.clear()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self._wire(left))
            except TimeoutError:
                break
        return out

    def messages(self, channel_id: str, count: int, timeout: float = 10.0) -> list[int]:
        """The seqs of the next `count` message.new events of a channel, in arrival order."""
        __tracebackhide__ = True
        seqs: list[int] = []
        deadline = time.monotonic() + timeout
        while len(seqs) < count and (left := deadline - time.monotonic()) > 0:
            try:
                frame = self.recv(left)
            except TimeoutError:
                break
            if frame.get("type") == "message.new" and frame.get("channel_id") == channel_id:
                assert frame["data"]["seq"] == frame["seq"], f"seq mismatch in {frame}"
                seqs.append(frame["seq"])
        assert len(seqs) == count, f"{count} messages expected within {timeout} s (got {seqs})"
        return seqs

    def close_code(self, timeout: float = RECV_TIMEOUT) -> int | None:
        """The close code the server sends, reading (and discarding) frames until then."""
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.conn.recv(timeout=left)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        except TimeoutError:
            pass
        raise AssertionError(f"the server did not close the socket within {timeout} s")

    def subscribe(self, channel_id: str, after_seq: int | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "channel_id": channel_id}
        if after_seq is not None:
            frame["after_seq"] = after_seq
        self.send(frame)
        return self.until(
            lambda f: f.get("type") in {"subscribed", "error"} and f.get("channel_id") == channel_id
        )


def edge_socket_url(chat: ChatClient) -> str:
    return chat.ws_url


def worker_socket_url(stack: NativeTarget, index: int) -> str:
    return stack.worker_urls[index].replace("http://", "ws://", 1) + "/v1/realtime"


def _connect(
    url: str, context: ssl.SSLContext | None, origin: str | None, max_size: int | None
) -> ClientConnection:
    return connect(
        url,
        ssl=context,
        origin=origin,
        open_timeout=15,  # a busy 2-core machine (the suite runs in parallel)
        close_timeout=2,
        max_size=max_size,
    )


@contextlib.contextmanager
def open_socket(
    chat: ChatClient,
    token: str | None = None,
    *,
    url: str | None = None,
    origin: str | None = None,
    max_size: int | None = 2**20,
) -> Iterator[Socket]:
    """A connected socket (authenticated when a token is given), closed at the end."""
    url = url or edge_socket_url(chat)
    context: ssl.SSLContext | None = chat.ssl_context() if url.startswith("wss://") else None
    with _connect(url, context, origin, max_size) as conn:
        socket = Socket(conn)
        if token is not None:
            socket.send({"type": "auth", "token": token})
            assert socket.recv()["type"] == "authenticated"
        yield socket


class Direct:
    """Plain HTTP straight to one API worker (bypassing NGINX), as a user."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        self._token = token

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        self._conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        resp = self._conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None

    def close(self) -> None:
        self._conn.close()


def make_channel(owner: UserCtx, *members: UserCtx, kind: str = "private") -> str:
    body = {"name": "realtime", "kind": kind, "member_ids": [m.user_id for m in members]}
    created = expect(owner.client.post("/v1/channels", body), 201)
    return str(created["channel_id"])


def send(user: UserCtx, channel_id: str, text: str = "hello") -> int:
    sent = expect(user.client.post(f"/v1/channels/{channel_id}/messages", {"text": text}), 201)
    return int(sent["seq"])


@pytest.fixture
def pair(app: AppCtx) -> tuple[UserCtx, UserCtx, str]:
    """Two members of one private channel."""
    alice, bob = app.user(), app.user()
    return alice, bob, make_channel(alice, bob)


# -- handshake and authentication -------------------------------------------------------------


def test_authenticated_socket_answers_ping(chat: ChatClient, app: AppCtx) -> None:
    """Positive control for the auth cases: a valid token is accepted and the socket works."""
    user = app.user()
    with open_socket(chat, user.access_token) as socket:
        socket.send({"type": "ping"})
        assert socket.until(lambda f: True)["type"] == "pong"


def test_socket_without_auth_frame_is_closed_4401_after_5_s(chat: ChatClient) -> None:
    """A socket that never authenticates must not hold a server slot, even if it pings."""
    code: int | None = None
    with open_socket(chat) as socket:
        started = time.monotonic()
        with contextlib.suppress(ConnectionClosed):
            while time.monotonic() - started < 9:
                socket.conn.ping()  # control frames must not extend the deadline
                with contextlib.suppress(TimeoutError):
                    socket.conn.recv(timeout=1)
        waited = time.monotonic() - started
        rcvd = socket.conn.protocol.close_rcvd
        code = rcvd.code if rcvd is not None else None
    assert code == 4401, f"an unauthenticated socket must be closed with 4401 (got {code})"
    assert 4.0 <= waited <= 7.0, f"the auth deadline must be about 5 s (closed after {waited:.1f})"


def _expired_token(stack: NativeTarget, user: UserCtx) -> str:
    # The native target's signing secret: only an expired but otherwise valid token is a real
    # test of the expiry check.
    now = int(time.time())
    claims = {
        "iss": "chatsdk",
        "aud": "chatsdk-api",
        "sub": user.user_id,
        "app": user.app_id,
        "typ": "access",
        "ver": 1,
        "jti": "expired",
        "iat": now - 3600,
        "nbf": now - 3600,
        "exp": now - 1800,
    }
    return jwt.encode(claims, stack._jwt_secret, algorithm="HS256")


@pytest.mark.parametrize(
    "kind", ["garbage", "forged", "refresh", "expired", "revoked", "not_auth_frame"]
)
def test_bad_credentials_are_closed_4401(
    chat: ChatClient, app: AppCtx, stack: NativeTarget, kind: str
) -> None:
    """Only a valid, unexpired, unrevoked access token opens a realtime session."""
    user = app.user()
    frame: dict[str, Any] = {"type": "auth", "token": user.access_token}
    if kind == "garbage":
        frame["token"] = "not-a-jwt"
    elif kind == "forged":
        claims = jwt.decode(user.access_token, options={"verify_signature": False})
        frame["token"] = jwt.encode(claims, "x" * 48, algorithm="HS256")
    elif kind == "refresh":
        frame["token"] = user.refresh_token
    elif kind == "expired":
        frame["token"] = _expired_token(stack, user)
    elif kind == "revoked":
        expect(app.client.post(f"/v1/users/{user.user_id}/revoke"), 204)
    else:
        frame = {"type": "subscribe", "channel_id": "ch_x", "token": user.access_token}
    with open_socket(chat) as socket:
        socket.send(frame)
        code = socket.close_code()
    assert code == 4401, f"a socket authenticating with a {kind} token must close 4401 ({code})"


def test_foreign_origin_is_refused_at_the_handshake(chat: ChatClient, info: TargetInfo) -> None:
    """Cross-site WebSocket hijacking: a page elsewhere must not open a socket."""
    with pytest.raises(InvalidStatus) as refused, open_socket(chat, origin="https://evil.example"):
        pass
    status = refused.value.response.status_code
    assert status == 403, f"a foreign Origin must get 403 at the handshake (got {status})"


def test_allowed_origin_and_no_origin_are_accepted(
    chat: ChatClient, app: AppCtx, info: TargetInfo
) -> None:
    """Positive control: the edge's own origin, and server-side clients without an Origin."""
    user = app.user()
    for origin in (info.edge.url, None):
        with open_socket(chat, user.access_token, origin=origin) as socket:
            socket.send({"type": "ping"})
            assert socket.recv()["type"] == "pong"


def test_plain_get_is_told_to_upgrade(chat: ChatClient) -> None:
    resp = chat.get("/v1/realtime")
    assert resp.status == 426, f"GET /v1/realtime without an upgrade must answer 426 ({resp})"
    assert resp.error_code == "upgrade_required"


# -- membership, delivery, ordering -----------------------------------------------------------


def test_non_member_subscription_is_refused_and_gets_nothing(
    chat: ChatClient, app: AppCtx, other_app: AppCtx, pair: tuple[UserCtx, UserCtx, str]
) -> None:
    """Subscribing is authorization: a stranger (same app or other app) sees nothing."""
    alice, bob, channel = pair
    strangers = [app.user(), other_app.user()]
    with contextlib.ExitStack() as stack:
        member = stack.enter_context(open_socket(chat, bob.access_token))
        assert member.subscribe(channel)["type"] == "subscribed"
        sockets = [stack.enter_context(open_socket(chat, s.access_token)) for s in strangers]
        for socket in sockets:
            refused = socket.subscribe(channel, after_seq=0)
            assert (refused["type"], refused["code"]) == ("error", "not_found")
        seq = send(alice, channel, "secret")
        assert member.messages(channel, 1) == [seq]  # positive control
        for socket in sockets:
            leaked = [f for f in socket.frames(1.0) if f.get("channel_id") == channel]
            assert leaked == [], f"a non-member must receive nothing of the channel (got {leaked})"


def test_live_delivery_in_order(chat: ChatClient, pair: tuple[UserCtx, UserCtx, str]) -> None:
    alice, bob, channel = pair
    with open_socket(chat, bob.access_token) as socket:
        assert socket.subscribe(channel)["seq"] == 0
        sent = [send(alice, channel, f"m{i}") for i in range(10)]
        frame_seqs = socket.messages(channel, 10)
    assert frame_seqs == sent == list(range(1, 11)), f"live delivery out of order: {frame_seqs}"


def test_message_event_carries_the_message(
    chat: ChatClient, pair: tuple[UserCtx, UserCtx, str]
) -> None:
    alice, bob, channel = pair
    with open_socket(chat, bob.access_token) as socket:
        socket.subscribe(channel)
        send(alice, channel, "hi there")
        frame = socket.until(lambda f: f.get("type") == "message.new")
    assert (frame["channel_id"], frame["seq"]) == (channel, 1)
    assert (frame["data"]["text"], frame["data"]["user_id"]) == ("hi there", alice.user_id)


def test_backfill_after_disconnect_is_gap_free(chat: ChatClient, app: AppCtx) -> None:
    """A client that reconnects with its last seq gets exactly what it missed, in order."""
    reader = app.user()
    # Several senders: more than one backfill page within the per-user send rate limit.
    senders = [app.user() for _ in range(7)]
    channel = make_channel(senders[0], reader, *senders[1:])
    with open_socket(chat, reader.access_token) as socket:
        socket.subscribe(channel, after_seq=0)
        for i in range(3):
            send(senders[0], channel, f"before {i}")
        last = socket.messages(channel, 3)[-1]
    missed = [send(senders[i % 7], channel, f"while away {i}") for i in range(210)]
    with open_socket(chat, reader.access_token) as socket:
        socket.send({"type": "subscribe", "channel_id": channel, "after_seq": last})
        during = [send(senders[1], channel, f"during backfill {i}") for i in range(5)]
        seqs = socket.messages(channel, len(missed) + len(during), timeout=20)
        extra = [f for f in socket.frames(0.5) if f.get("type") == "message.new"]
    assert seqs == missed + during, "backfill plus live must be every seq once, in order"
    assert extra == [], f"no duplicates after the backfill (got {[f['seq'] for f in extra]})"


def test_subscribe_without_after_seq_gets_only_new_messages(
    chat: ChatClient, pair: tuple[UserCtx, UserCtx, str]
) -> None:
    alice, bob, channel = pair
    send(alice, channel, "old")
    with open_socket(chat, bob.access_token) as socket:
        assert socket.subscribe(channel)["seq"] == 1
        new = send(alice, channel, "new")
        assert socket.messages(channel, 1) == [new]


def test_cross_worker_fan_out(
    stack: NativeTarget, chat: ChatClient, pair: tuple[UserCtx, UserCtx, str]
) -> None:
    """Posted to worker A, received on a socket held by worker B, in both directions."""
    alice, bob, channel = pair
    for socket_worker, post_worker in ((1, 0), (0, 1)):
        direct = Direct(stack.worker_urls[post_worker], alice.access_token)
        try:
            with open_socket(
                chat, bob.access_token, url=worker_socket_url(stack, socket_worker)
            ) as socket:
                socket.subscribe(channel)
                status, body = direct.post(
                    f"/v1/channels/{channel}/messages", {"text": f"via {post_worker}"}
                )
                assert status == 201, f"direct POST to worker {post_worker} failed: {body}"
                assert socket.messages(channel, 1) == [body["seq"]]
        finally:
            direct.close()


def test_concurrent_senders_on_both_workers_arrive_gap_free(
    stack: NativeTarget, chat: ChatClient, app: AppCtx
) -> None:
    """Two drainers publish interleaved batches; every socket still sees 1..n once, in order."""
    reader = app.user()
    senders = [app.user() for _ in range(4)]
    channel = make_channel(senders[0], reader, *senders[1:])
    per_sender = 25

    def run(index: int) -> None:
        direct = Direct(stack.worker_urls[index % 2], senders[index].access_token)
        try:
            for i in range(per_sender):
                status, body = direct.post(f"/v1/channels/{channel}/messages", {"text": str(i)})
                assert status == 201, f"concurrent send failed: {status} {body}"
        finally:
            direct.close()

    with (
        open_socket(chat, reader.access_token, url=worker_socket_url(stack, 0)) as on_a,
        open_socket(chat, reader.access_token, url=worker_socket_url(stack, 1)) as on_b,
    ):
        on_a.subscribe(channel)
        on_b.subscribe(channel)
        with concurrent.futures.ThreadPoolExecutor(len(senders)) as pool:
            for done in [pool.submit(run, i) for i in range(len(senders))]:
                done.result(timeout=60)
        expected = list(range(1, len(senders) * per_sender + 1))
        for socket in (on_a, on_b):
            assert socket.messages(channel, len(expected), timeout=20) == expected
            assert [f for f in socket.frames(0.3) if f.get("type") == "message.new"] == []


def test_active_websocket_gauge_follows_sockets(
    stack: NativeTarget, chat: ChatClient, app: AppCtx
) -> None:
    def gauge() -> float:
        url = f"{stack.worker_urls[0]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310
            text = resp.read().decode()
        match = re.search(r"^active_websocket_connections (\S+)$", text, re.MULTILINE)
        assert match, "worker metrics must expose active_websocket_connections"
        return float(match.group(1))

    def settles(value: float) -> bool:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if gauge() == value:
                return True
            time.sleep(0.05)
        return False

    before = gauge()
    user = app.user()
    with open_socket(chat, user.access_token, url=worker_socket_url(stack, 0)):
        assert settles(before + 1), f"an open socket must count (gauge {gauge()}, was {before})"
    assert settles(before), f"a closed socket must not count (gauge {gauge()}, was {before})"


def test_typing_reaches_other_members_only(
    chat: ChatClient, app: AppCtx, pair: tuple[UserCtx, UserCtx, str]
) -> None:
    alice, bob, channel = pair
    stranger = app.user()
    with (
        open_socket(chat, alice.access_token) as typist,
        open_socket(chat, bob.access_token) as watcher,
        open_socket(chat, stranger.access_token) as outsider,
    ):
        typist.subscribe(channel)
        watcher.subscribe(channel)
        typist.send({"type": "typing", "channel_id": channel})
        frame = watcher.until(lambda f: f.get("type") == "typing")
        assert (frame["channel_id"], frame["data"]["user_id"]) == (channel, alice.user_id)
        # A non-member can neither send typing to the channel nor see it.
        outsider.send({"type": "typing", "channel_id": channel})
        refused = outsider.until(lambda f: f.get("type") == "error")
        assert refused["code"] == "not_found"
        assert [f for f in watcher.frames(0.7) if f.get("type") == "typing"] == []
        assert [f for f in typist.frames(0.3) if f.get("type") == "typing"] == []


def test_unsubscribe_stops_delivery(chat: ChatClient, pair: tuple[UserCtx, UserCtx, str]) -> None:
    alice, bob, channel = pair
    with open_socket(chat, bob.access_token) as socket:
        socket.subscribe(channel)
        socket.send({"type": "unsubscribe", "channel_id": channel})
        socket.until(lambda f: f.get("type") == "unsubscribed")
        send(alice, channel)
        assert [f for f in socket.frames(1.0) if f.get("type") == "message.new"] == []


def test_removed_member_stops_receiving(
    chat: ChatClient, pair: tuple[UserCtx, UserCtx, str]
) -> None:
    """A subscription ends with the membership it was granted on."""
    alice, bob, channel = pair
    with open_socket(chat, bob.access_token) as socket:
        socket.subscribe(channel)
        expect(alice.client.delete(f"/v1/channels/{channel}/members/{bob.user_id}"), 204)
        left = socket.until(lambda f: f.get("type") == "member.left")
        assert left["data"]["user_id"] == bob.user_id
        send(alice, channel, "after removal")
        assert [f for f in socket.frames(1.0) if f.get("type") == "message.new"] == []


# -- revocation -------------------------------------------------------------------------------


def test_revocation_closes_open_sockets_on_every_worker_4401(
    stack: NativeTarget, chat: ChatClient, app: AppCtx
) -> None:
    user, bystander = app.user(), app.user()
    with contextlib.ExitStack() as sockets:
        mine = [
            sockets.enter_context(open_socket(chat, user.access_token, url=url))
            for url in (edge_socket_url(chat), *(worker_socket_url(stack, i) for i in (0, 1)))
        ]
        other = sockets.enter_context(open_socket(chat, bystander.access_token))
        expect(app.client.post(f"/v1/users/{user.user_id}/revoke"), 204)
        started = time.monotonic()
        codes = [socket.close_code(timeout=5) for socket in mine]
        took = time.monotonic() - started
        assert codes == [4401, 4401, 4401], f"revoked sockets must close with 4401 (got {codes})"
        assert took < 5, f"revocation must close sockets within seconds (took {took:.1f} s)"
        other.send({"type": "ping"})  # positive control: other users are untouched
        assert other.recv()["type"] == "pong"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/health/ready", timeout=1) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except OSError:
        return False


def test_worker_shutdown_closes_sockets_1001(
    stack: NativeTarget, info: TargetInfo, chat: ChatClient, app: AppCtx
) -> None:
    """A draining worker says goodbye (1001), so clients reconnect elsewhere at once."""
    user = app.user()
    worker = info.drills.control["api-1"]
    try:
        with open_socket(chat, user.access_token, url=worker_socket_url(stack, 1)) as socket:
            worker.stop()
            code = socket.close_code(timeout=10)
        assert code == 1001, f"sockets of a stopping worker must close with 1001 (got {code})"
    finally:
        worker.start()
        deadline = time.monotonic() + 20
        while not _ready(stack.worker_urls[1]) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert _ready(stack.worker_urls[1]), "the worker must be ready again after its restart"


# -- a Redis outage ---------------------------------------------------------------------------


def test_redis_outage_loses_no_message(
    stack: NativeTarget, chat: ChatClient, info: TargetInfo, pair: tuple[UserCtx, UserCtx, str]
) -> None:
    """Writes go on while Redis is down, and every message reaches sockets once it is back."""
    alice, bob, channel = pair
    redis = info.drills.control["redis"]
    with open_socket(chat, bob.access_token) as socket:
        socket.subscribe(channel)
        first = send(alice, channel, "before")
        assert socket.messages(channel, 1) == [first]
        during: list[int] = []
        redis.stop()
        try:
            for i in range(3):
                resp = alice.client.post(f"/v1/channels/{channel}/messages", {"text": f"out {i}"})
                assert resp.status == 201, f"a send must not need Redis (got {resp})"
                during.append(resp.json()["seq"])
        finally:
            redis.start()
        after = send(alice, channel, "after")
        # The same socket, which stayed open, catches up without gaps or duplicates.
        assert socket.messages(channel, 4, timeout=20) == [*during, after]
        assert [f for f in socket.frames(0.5) if f.get("type") == "message.new"] == []
    # And a reconnecting client backfills the same messages.
    with open_socket(chat, bob.access_token) as socket:
        socket.subscribe(channel, after_seq=first)
        assert socket.messages(channel, 4) == [*during, after]


# -- a PostgreSQL outage at subscribe time ----------------------------------------------------


@contextlib.contextmanager
def postgres_down(stack: NativeTarget, info: TargetInfo) -> Iterator[Callable[[], None]]:
    """PostgreSQL stopped; the block may call the yielded function to start it early. On exit
    it runs again and every worker is ready before the next test."""
    postgres = info.drills.control["postgres"]
    started = False

    def start() -> None:
        nonlocal started
        if not started:
            started = True
            postgres.start()

    postgres.stop()
    try:
        yield start
    finally:
        start()
        deadline = time.monotonic() + 30
        while not all(map(_ready, stack.worker_urls)) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert all(map(_ready, stack.worker_urls)), "every worker must be ready after the restart"


def test_subscribe_through_a_short_database_outage_succeeds(
    stack: NativeTarget, chat: ChatClient, info: TargetInfo, pair: tuple[UserCtx, UserCtx, str]
) -> None:
    """Bob has never been checked as a member (no cached membership): the subscription waits
    for PostgreSQL instead of failing, and backfills what was sent before."""
    alice, bob, channel = pair
    first = send(alice, channel, "before the outage")
    with open_socket(chat, bob.access_token) as socket, postgres_down(stack, info) as start:
        socket.send({"type": "subscribe", "channel_id": channel, "after_seq": 0})
        time.sleep(2)
        start()
        frame = socket.until(
            lambda f: f.get("type") in {"subscribed", "error"} and f.get("channel_id") == channel,
            timeout=20,
        )
        assert frame["type"] == "subscribed", f"a 2 s outage must not fail a subscribe: {frame}"
        assert socket.messages(channel, 1) == [first]


def test_subscribe_through_a_long_database_outage_closes_1013(
    stack: NativeTarget, chat: ChatClient, info: TargetInfo, pair: tuple[UserCtx, UserCtx, str]
) -> None:
    """A subscription the server cannot check is never left silently missing on an open
    socket: the client is told to reconnect (1013) and resubscribe with its last seq."""
    _, bob, channel = pair
    with open_socket(chat, bob.access_token) as socket, postgres_down(stack, info):
        socket.send({"type": "subscribe", "channel_id": channel, "after_seq": 0})
        code = socket.close_code(timeout=20)
    assert code == 1013, f"a subscribe PostgreSQL could not answer must close 1013 (got {code})"


# -- protocol abuse ---------------------------------------------------------------------------


def test_oversized_frame_closes_1009(chat: ChatClient, app: AppCtx) -> None:
    user = app.user()
    with open_socket(chat, user.access_token) as socket:
        socket.send({"type": "ping", "pad": "x" * (70 * 1024)})
        assert socket.close_code() == 1009


def test_binary_frame_closes_1003(chat: ChatClient, app: AppCtx) -> None:
    user = app.user()
    with open_socket(chat, user.access_token) as socket:
        socket.send(b"\x00\x01binary")
        assert socket.close_code() == 1003


def test_malformed_frames_get_errors_then_close_1008(chat: ChatClient, app: AppCtx) -> None:
    user = app.user()
    with open_socket(chat, user.access_token) as socket:
        socket.send({"type": "no-such-type"})
        assert socket.recv()["code"] == "unknown_type"
        socket.send({"type": "subscribe", "channel_id": 7})
        assert socket.recv()["code"] == "invalid_input"
        socket.send("{not json")
        assert socket.recv()["code"] == "invalid_frame"
        for _ in range(4):
            socket.send("[]")
        assert socket.close_code() == 1008


@pytest.mark.parametrize("frame", ["text", "ping"])
def test_flooding_socket_is_closed_1008_and_others_are_served(
    chat: ChatClient, app: AppCtx, frame: str
) -> None:
    """Data frames and control frames alike: a flood closes the flooder, nobody else."""
    user, other = app.user(), app.user()
    with (
        open_socket(chat, user.access_token) as flooder,
        open_socket(chat, other.access_token) as bystander,
    ):
        with contextlib.suppress(ConnectionClosed):
            for i in range(400):
                if frame == "text":
                    flooder.send({"type": "ping"})
                else:
                    flooder.conn.ping(str(i))
        assert flooder.close_code() == 1008
        bystander.send({"type": "ping"})
        assert bystander.recv()["type"] == "pong"


PING = b'{"type":"ping"}'


@pytest.mark.parametrize("when", ["after-auth", "in-one-write-after-auth", "as-the-auth-frame"])
def test_unmasked_client_frame_closes_1002(info: TargetInfo, app: AppCtx, when: str) -> None:
    """RFC 6455 5.1: a server must close the connection on a client frame without a mask,
    never process it; masked frames before it in the same write are still served. Frames are
    written by hand on a raw TLS socket through the edge (the SEC-WS-AUTH probe's helpers)."""
    target = ProbeTarget(info)
    token = app.user().access_token
    auth = json.dumps({"type": "auth", "token": token}).encode()
    try:
        if when == "after-auth":
            raw = authenticated_raw(target, token)
            raw.send(raw_frame(0x1, PING, mask=False))
        elif when == "in-one-write-after-auth":
            raw = RawSocket(target)
            raw.send(raw_frame(0x1, auth) + raw_frame(0x1, PING, mask=False))
            got = raw.next_frame()
            assert got is not None, "the masked auth frame before the unmasked one is served"
            assert b'"authenticated"' in got[1], got
        else:
            raw = RawSocket(target)
            raw.send(raw_frame(0x1, auth, mask=False))
        try:
            outcome = raw.outcome()
        finally:
            raw.close()
    finally:
        target.close()
    assert outcome == "close 1002", f"an unmasked client frame ({when}) must close with 1002"


def test_server_is_healthy_after_abuse(chat: ChatClient, stack: NativeTarget) -> None:
    """Runs after the abuse cases above: every worker is still ready."""
    for url in stack.worker_urls:
        with urllib.request.urlopen(f"{url}/v1/health/ready", timeout=5) as resp:  # noqa: S310
            assert resp.status == 200, f"{url} must stay ready after protocol abuse"
    expect(chat.get("/v1/health/ready"), 200)

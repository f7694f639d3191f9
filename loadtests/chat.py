"""What the load users of one Locust process share: the profile, the app, the rooms, and the
WebSocket that every user holds.

Credentials come from the environment, never from the command line (a process list shows
arguments to every local user): PREFLIGHT_ADMIN_KEY creates the app this process loads, or
PREFLIGHT_API_KEY names an existing one; PREFLIGHT_CA_FILE is the CA that signed the edge's
certificate (unset: the system's trust store).
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.ssl
import websocket
import yaml
from locust.env import Environment
from sources import connect_from, edge_address

# PREFLIGHT_EDGE_ADDRESS (sources.py): where the edge is, when not at the URL's host and port.
EDGE_ADDRESS = edge_address()

RNG = random.Random()  # noqa: S311 - the task mix is a simulation, not security
PROFILES_FILE = Path(__file__).with_name("profiles.yaml")
ADMIN_KEY_ENV = "PREFLIGHT_ADMIN_KEY"
API_KEY_ENV = "PREFLIGHT_API_KEY"
CA_FILE_ENV = "PREFLIGHT_CA_FILE"

TOKEN_RENEW_S = 600.0  # access tokens live 15 min; renew well before
WS_TIMEOUT_S = 10.0
WS_IDLE_PING_S = 15.0  # an application ping when nothing arrived for this long
TEXT_PATTERN = re.compile(r"^load t=(\d+\.\d+) ")


@dataclass(frozen=True)
class Profile:
    name: str
    users: int
    spawn_rate: float
    hold_s: float
    personas: dict[str, int]
    sockets_per_user: int
    room_size: int
    wait_s: dict[str, tuple[float, float]]
    early_stop: dict[str, float]

    @property
    def ramp_s(self) -> float:
        return self.users / self.spawn_rate

    @classmethod
    def from_mapping(cls, name: str, data: dict[str, Any]) -> Profile:
        return cls(
            name=name,
            users=int(data["users"]),
            spawn_rate=float(data["spawn_rate"]),
            hold_s=float(data["hold_s"]),
            personas={k: int(v) for k, v in data["personas"].items()},
            sockets_per_user=int(data.get("sockets_per_user", 1)),
            room_size=int(data.get("room_size", 10)),
            wait_s={k: (float(v[0]), float(v[1])) for k, v in data["wait_s"].items()},
            early_stop={k: float(v) for k, v in data.get("early_stop", {}).items()},
        )


def load_profile(name: str, path: Path = PROFILES_FILE) -> Profile:
    profiles = yaml.safe_load(path.read_text())
    if name not in profiles:
        raise ValueError(f"profile {name!r} is not in {path} (it has {', '.join(profiles)})")
    return Profile.from_mapping(name, profiles[name])


def profile_of(environment: Environment) -> Profile:
    options = environment.parsed_options
    name = getattr(options, "load_profile", None) or "smoke"
    path = Path(getattr(options, "load_profiles", None) or PROFILES_FILE)
    cached = getattr(environment, "_preflight_profile", None)
    if isinstance(cached, Profile) and cached.name == name:
        return cached
    profile = load_profile(name, path)
    environment._preflight_profile = profile  # type: ignore[attr-defined]
    return profile


def ssl_context() -> gevent.ssl.SSLContext:
    return gevent.ssl.create_default_context(cafile=os.environ.get(CA_FILE_ENV) or None)


class SetupFailed(Exception):
    """The app, a token or a room could not be made; the user retries on its next task."""


Request = Callable[..., Any]  # FastHttpSession.request-like: (method, path, **kwargs) -> response


def checked(
    request: Request, method: str, path: str, name: str, expect: int, **kwargs: Any
) -> dict[str, Any]:
    """One request with catch_response: a status other than `expect` or a body that is not a
    JSON object is a failure with the reason; a 429 is a failure too (the limiter said no)."""
    with request(method, path, name=name, catch_response=True, **kwargs) as resp:
        if resp.status_code != expect:
            resp.failure(f"{method} {name}: expected {expect}, got {resp.status_code}")
            raise SetupFailed(f"{name}: HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            resp.failure(f"{method} {name}: the body is not JSON")
            raise SetupFailed(f"{name}: not JSON") from None
        if not isinstance(body, dict):
            resp.failure(f"{method} {name}: the body is not a JSON object")
            raise SetupFailed(f"{name}: not an object")
        resp.success()
        return body


@dataclass
class Session:
    """One chat user's identity and current access token."""

    user_id: str
    token: str = ""
    minted_at: float = 0.0

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stale(self) -> bool:
        return not self.token or time.monotonic() - self.minted_at > TOKEN_RENEW_S


@dataclass
class Room:
    owner: Session
    members: int = 1
    channel: gevent.event.AsyncResult = field(default_factory=gevent.event.AsyncResult)
    messages: deque[str] = field(default_factory=lambda: deque(maxlen=50))
    polls: deque[tuple[str, list[str]]] = field(default_factory=lambda: deque(maxlen=10))


class World:
    """Per process: one app (created with the admin key on first use) and rooms of room_size."""

    def __init__(self) -> None:
        self._lock = gevent.lock.Semaphore()
        self._api_key: str | None = os.environ.get(API_KEY_ENV) or None
        self.rooms: list[Room] = []
        self.prefix = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._serial = 0

    def new_user_id(self) -> str:
        self._serial += 1
        return f"load-{self.prefix}-{self._serial}"

    def api_key(self, request: Request) -> str:
        with self._lock:  # one app per process, whoever asks first creates it
            if self._api_key is None:
                admin = os.environ.get(ADMIN_KEY_ENV, "")
                body = checked(
                    request,
                    "POST",
                    "/v1/apps",
                    "setup: /v1/apps",
                    201,
                    json={"name": f"load {self.prefix}"},
                    headers={"X-Admin-Key": admin},
                )
                self._api_key = str(body["api_key"])
            return self._api_key

    def mint(self, request: Request, session: Session) -> None:
        body = checked(
            request,
            "POST",
            "/v1/tokens",
            "/v1/tokens",
            201,
            json={"user_id": session.user_id},
            headers={"X-API-Key": self.api_key(request)},
        )
        session.token = str(body["access_token"])
        session.minted_at = time.monotonic()

    def join(self, request: Request, session: Session, room_size: int) -> Room:
        """A seat in the newest room with space; its first member creates the channel."""
        with self._lock:
            room = self.rooms[-1] if self.rooms else None
            failed = room is not None and room.channel.ready() and not room.channel.successful()
            creator = room is None or room.members >= room_size or failed
            if creator:
                room = Room(owner=session)
                self.rooms.append(room)
            else:
                room.members += 1
        assert room is not None
        if creator:
            try:
                body = checked(
                    request,
                    "POST",
                    "/v1/channels",
                    "/v1/channels [create]",
                    201,
                    json={"name": f"room {len(self.rooms)}", "kind": "public"},
                    headers=session.auth,
                )
            except SetupFailed as exc:
                room.channel.set_exception(exc)
                raise
            room.channel.set(str(body["channel_id"]))
            return room
        channel_id = room.channel.get(timeout=60)
        checked(
            request,
            "POST",
            f"/v1/channels/{channel_id}/members",
            "/v1/channels/{id}/members",
            200,
            json={"user_ids": [session.user_id]},
            headers=room.owner.auth,
        )
        return room


WORLD = World()
OPEN_SOCKETS = [0]  # this process's open, subscribed WebSockets


def message_text(user_id: str) -> str:
    """The POST time travels in the text, so a receiver on the same clock computes the
    end-to-end delivery latency (POST start -> receipt on another member's socket)."""
    return f"load t={time.time():.6f} from {user_id}"


class RoomSocket:
    """One WebSocket of one user: connect through the edge, authenticate, subscribe to the
    user's room, then report every message another member posted as a `WS delivery` request
    whose response time is the end-to-end latency. Connects and drops are `WS` requests too."""

    def __init__(
        self,
        environment: Environment,
        host: str,
        session: Session,
        channel_id: str,
        renew: Callable[[], None],
        *,
        source: str | None = None,
    ) -> None:
        self.environment = environment
        self.source = source
        self.url = re.sub(r"^http", "ws", host.rstrip("/")) + "/v1/realtime"
        self.session = session
        self.channel_id = channel_id
        self.renew = renew
        self.stopping = False
        self.ws: websocket.WebSocket | None = None
        self.greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        self.stopping = True
        ws = self.ws
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:  # closing a socket the peer already dropped
                ws.shutdown()
        self.greenlet.join(timeout=3)
        self.greenlet.kill(block=False)

    def _fire(
        self, name: str, started: float, length: int = 0, exc: Exception | None = None
    ) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    def _run(self) -> None:
        backoff = 1.0
        while not self.stopping:
            started = time.perf_counter()
            try:
                ws = self._connect()
            except Exception as exc:
                if self.stopping:
                    return
                self._fire("connect", started, exc=exc)
                gevent.sleep(backoff + RNG.random())
                backoff = min(backoff * 2, 30.0)
                continue
            self._fire("connect", started)
            backoff = 1.0
            OPEN_SOCKETS[0] += 1
            try:
                self._receive(ws)
            except Exception as exc:
                if not self.stopping:
                    self._fire("disconnect", time.perf_counter(), exc=exc)
                    if getattr(exc, "status_code", None) == 4401 or "4401" in str(exc):
                        self.renew()
            finally:
                OPEN_SOCKETS[0] -= 1
                self.ws = None
                try:
                    ws.close(timeout=1)
                except Exception:  # already gone
                    ws.shutdown()

    def _connect(self) -> websocket.WebSocket:
        if self.session.stale():
            self.renew()
        # From the user's own address when spread (sources.py): connected and TLS-wrapped here.
        sock = None
        if self.source is not None:
            sock = connect_from(self.url, self.source, WS_TIMEOUT_S, ssl_context(), EDGE_ADDRESS)
        ws = websocket.create_connection(
            self.url,
            timeout=WS_TIMEOUT_S,
            sslopt={"context": ssl_context()},
            suppress_origin=True,  # a server-side client sends no Origin
            enable_multithread=False,
            socket=sock,
        )
        self.ws = ws
        try:
            ws.send(json.dumps({"type": "auth", "token": self.session.token}))
            self._expect(ws, "authenticated")
            ws.send(json.dumps({"type": "subscribe", "channel_id": self.channel_id}))
            self.last_seq = int(self._expect(ws, "subscribed").get("seq") or 0)
        except Exception:
            ws.shutdown()
            self.ws = None
            raise
        ws.settimeout(WS_IDLE_PING_S)
        return ws

    def _expect(self, ws: websocket.WebSocket, kind: str) -> dict[str, Any]:
        deadline = time.monotonic() + WS_TIMEOUT_S
        while time.monotonic() < deadline:
            frame = json.loads(ws.recv())
            if frame.get("type") == kind:
                return dict(frame)
            if frame.get("type") == "error":
                raise ConnectionError(f"{kind} refused: {frame.get('code')} {frame.get('message')}")
        raise TimeoutError(f"no {kind} frame within {WS_TIMEOUT_S:g} s")

    def _receive(self, ws: websocket.WebSocket) -> None:
        while not self.stopping:
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                ws.send(json.dumps({"type": "ping"}))
                continue
            if not raw:
                raise ConnectionError("the server closed the socket")
            received = time.time()
            frame = json.loads(raw)
            if frame.get("type") != "message.new":
                continue
            seq = int(frame.get("seq") or 0)
            if seq != self.last_seq + 1:
                exc = AssertionError(f"seq {seq} after {self.last_seq}: a gap or a duplicate")
                self._fire("order", time.perf_counter(), exc=exc)
            self.last_seq = max(self.last_seq, seq)
            data = frame.get("data") or {}
            match = TEXT_PATTERN.match(str(data.get("text") or ""))
            if match is None or data.get("user_id") == self.session.user_id:
                continue
            self.environment.events.request.fire(
                request_type="WS",
                name="delivery",
                response_time=max(0.0, (received - float(match.group(1))) * 1000),
                response_length=len(raw),
                exception=None,
                context={},
            )

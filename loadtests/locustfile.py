"""The chat system under load: personas (active, casual, lurker) over the real API, each holding
a WebSocket that measures end-to-end delivery latency.

    PREFLIGHT_ADMIN_KEY=... PREFLIGHT_CA_FILE=ca.pem \
        locust -f loadtests/locustfile.py --headless -H https://127.0.0.1:8443 --load-profile smoke

The profile (loadtests/profiles.yaml) sets users, ramp, hold, persona weights, room size and
waits; the shape below ramps to it and ends the run after the hold. See loadtests/README.md.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

import gevent
import recorder
from chat import (
    WORLD,
    Profile,
    RoomSocket,
    Session,
    SetupFailed,
    message_text,
    profile_of,
    ssl_context,
)
from locust import FastHttpUser, LoadTestShape, events, task
from locust.env import Environment
from sources import bind_http_client_pool, edge_address, pick_source, source_network

RNG = random.Random()  # noqa: S311 - the task mix is a simulation, not security
EMOJI = ("thumbsup", "tada", "eyes", "heart")
SOURCE_NET = source_network()  # PREFLIGHT_SOURCE_NET: one client address per user (sources.py)
EDGE_ADDRESS = edge_address()  # PREFLIGHT_EDGE_ADDRESS: the edge on the client network, if any


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--load-profile", default="smoke", help="profile name in --load-profiles")
    parser.add_argument(
        "--load-profiles", default="", help="profiles file (default: loadtests/profiles.yaml)"
    )
    parser.add_argument("--timeseries", default="", help="JSON lines of per-interval stats")
    parser.add_argument("--timeseries-interval", type=float, default=2.0)


@events.init.add_listener
def _init(environment: Environment, **_kw: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    profile = profile_of(environment)
    for persona, weight in profile.personas.items():
        PERSONAS[persona].weight = weight
    recorder.attach(environment, options.timeseries, options.timeseries_interval)


def persona_wait(persona: str) -> Any:
    def wait(user: ChatUser) -> float:
        low, high = profile_of(user.environment).wait_s[persona]
        return max(user.backoff_s(), RNG.uniform(low, high))

    return wait


class ChatUser(FastHttpUser):
    """A chat user: a token on start, a seat in a room, a socket per profile; tasks below."""

    abstract = True
    insecure = False
    network_timeout = 30.0
    connection_timeout = 10.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.session = Session(WORLD.new_user_id())
        self.source = pick_source(SOURCE_NET)
        if self.source is not None:
            bind_http_client_pool(self.client.client.clientpool, self.source, EDGE_ADDRESS)
        self.room: Any = None
        self.sockets: list[RoomSocket] = []
        self.retry_after = 0.0

    @staticmethod
    def ssl_context_factory() -> Any:
        return ssl_context()

    @property
    def profile(self) -> Profile:
        return profile_of(self.environment)

    def backoff_s(self) -> float:
        wait, self.retry_after = self.retry_after, 0.0
        return wait

    def on_start(self) -> None:
        self.ensure_ready()

    def on_stop(self) -> None:
        for sock in self.sockets:
            sock.stop()
        self.sockets.clear()

    def ensure_ready(self) -> bool:
        """Token, room and sockets; False (and retried on the next task) while setup fails."""
        try:
            if self.session.stale():
                WORLD.mint(self.client.request, self.session)
            if self.room is None:
                self.room = WORLD.join(self.client.request, self.session, self.profile.room_size)
        except (SetupFailed, gevent.Timeout) as exc:
            self.retry_after = 2.0 if isinstance(exc, SetupFailed) else 0.0
            return False
        while len(self.sockets) < self.profile.sockets_per_user:
            self.sockets.append(
                RoomSocket(
                    self.environment,
                    self.host or "",
                    self.session,
                    self.room.channel.get(),
                    self.renew,
                    source=self.source,
                )
            )
        return True

    def renew(self) -> None:
        try:
            WORLD.mint(self.client.request, self.session)
        except SetupFailed:
            self.retry_after = 2.0

    def call(
        self,
        method: str,
        path: str,
        name: str,
        expect: int,
        check: Callable[[dict[str, Any]], str] = lambda _body: "",
        **kwargs: Any,
    ) -> Any:
        """One API call as this user: catch_response, the expected status, a JSON object that
        `check` finds no fault with (it returns the fault); a 429 is a failure and the user waits
        Retry-After before its next task; a 401 renews the token."""
        with self.client.request(
            method, path, name=name, catch_response=True, headers=self.session.auth, **kwargs
        ) as resp:
            if resp.status_code == 429:
                retry = resp.headers.get("Retry-After") or "1"
                self.retry_after = float(retry) if retry.isdigit() else 1.0
                resp.failure(f"rate limited (429, Retry-After {retry})")
                return None
            if resp.status_code == 401:
                resp.failure("401: the access token was refused")
                self.session.token = ""
                return None
            if resp.status_code != expect:
                resp.failure(f"expected {expect}, got {resp.status_code}: {resp.text[:200]}")
                return None
            try:
                body = resp.json()
            except ValueError:
                resp.failure("the body is not JSON")
                return None
            fault = check(body) if isinstance(body, dict) else "the body is not a JSON object"
            if fault:
                resp.failure(fault)
                return None
            resp.success()
            return body

    # -- tasks -------------------------------------------------------------------------------

    def channel(self) -> str | None:
        if not self.ensure_ready():
            return None
        return str(self.room.channel.get())

    def send_message(self) -> None:
        channel = self.channel()
        if channel is None:
            return
        body = self.call(
            "POST",
            f"/v1/channels/{channel}/messages",
            "/v1/channels/{id}/messages [send]",
            201,
            json={"text": message_text(self.session.user_id), "client_msg_id": uuid.uuid4().hex},
            check=lambda body: "" if body.get("seq") else "the sent message has no seq",
        )
        if body is not None and body.get("message_id"):
            self.room.messages.append(str(body["message_id"]))

    def read_history(self) -> None:
        channel = self.channel()
        if channel is None:
            return
        self.call(
            "GET",
            f"/v1/channels/{channel}/messages?limit=50",
            "/v1/channels/{id}/messages",
            200,
            check=lambda body: (
                "" if isinstance(body.get("messages"), list) else "no messages list in the body"
            ),
        )

    def list_channels(self) -> None:
        if self.channel() is None:
            return
        self.call(
            "GET",
            "/v1/channels",
            "/v1/channels",
            200,
            check=lambda body: "" if body.get("channels") else "a room member sees no channel",
        )

    def react(self) -> None:
        channel = self.channel()
        if channel is None or not self.room.messages:
            return
        message = RNG.choice(self.room.messages)
        emoji = RNG.choice(EMOJI)
        self.call(
            "PUT",
            f"/v1/channels/{channel}/messages/{message}/reactions/{emoji}",
            "/v1/channels/{id}/messages/{mid}/reactions/{emoji}",
            200,
        )

    def vote(self) -> None:
        channel = self.channel()
        if channel is None:
            return
        if not self.room.polls or RNG.random() < 0.1:
            body = self.call(
                "POST",
                f"/v1/channels/{channel}/polls",
                "/v1/channels/{id}/polls",
                201,
                json={"question": "Lunch?", "options": ["pizza", "salad", "soup"]},
            )
            if body is not None and body.get("poll_id"):
                options = [str(o["option_id"]) for o in body.get("options", [])]
                self.room.polls.append((str(body["poll_id"]), options))
            return
        poll_id, options = RNG.choice(self.room.polls)
        self.call(
            "POST",
            f"/v1/polls/{poll_id}/votes",
            "/v1/polls/{id}/votes",
            200,
            json={"option_ids": [RNG.choice(options)]},
        )


class ActiveUser(ChatUser):
    """Talks: sends often, reads back, reacts, votes."""

    wait_time = persona_wait("active")

    @task(10)
    def send(self) -> None:
        self.send_message()

    @task(4)
    def history(self) -> None:
        self.read_history()

    @task(2)
    def channels(self) -> None:
        self.list_channels()

    @task(2)
    def reaction(self) -> None:
        self.react()

    @task(1)
    def poll(self) -> None:
        self.vote()


class CasualUser(ChatUser):
    """Reads mostly, sends now and then."""

    wait_time = persona_wait("casual")

    @task(2)
    def send(self) -> None:
        self.send_message()

    @task(5)
    def history(self) -> None:
        self.read_history()

    @task(3)
    def channels(self) -> None:
        self.list_channels()

    @task(1)
    def reaction(self) -> None:
        self.react()


class LurkerUser(ChatUser):
    """Holds a socket and watches; lists channels once in a while."""

    wait_time = persona_wait("lurker")

    @task
    def channels(self) -> None:
        self.list_channels()


PERSONAS: dict[str, type[ChatUser]] = {
    "active": ActiveUser,
    "casual": CasualUser,
    "lurker": LurkerUser,
}


class ProfileShape(LoadTestShape):
    """Ramp to the profile's users at its spawn rate, hold for hold_s, then end the run."""

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        profile = profile_of(self.runner.environment)
        if self.get_run_time() >= profile.ramp_s + profile.hold_s:
            return None
        return profile.users, profile.spawn_rate

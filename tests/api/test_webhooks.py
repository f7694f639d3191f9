"""Webhooks through NGINX and the real outbox: signed deliveries to a local receiver, retries
with exponential backoff, the delivery log, and disabling after 10 consecutive failures.

The test stack runs with the default CHATSDK_WEBHOOK_BACKOFF_BASE (1 s): the timing assertions
below assume it."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from preflight.client import expect
from tests.api.conftest import AppCtx, UserCtx


@dataclass(frozen=True)
class Received:
    at: float
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread, answering POSTs with `status_for(n)`, where n
    counts the requests received before this one."""

    def __init__(self, status_for: Callable[[int], int] = lambda _n: 200) -> None:
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._answer()

            def do_GET(self) -> None:  # what a followed redirect would become
                self._answer()

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    n = len(receiver.requests)
                    receiver.requests.append(
                        Received(
                            time.monotonic(),
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                        )
                    )
                status = status_for(n)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.url)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def wait_for(self, n: int, timeout: float) -> list[Received]:
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(
            f"the receiver must get {n} webhook requests within {timeout:g} s (got {self.count()})"
        )


def signature_ok(secret: str, received: Received) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, received.headers.get("x-chatsdk-signature", ""))


def create_webhook(app: AppCtx, url: str, events: list[str]) -> Any:
    return expect(app.client.post("/v1/webhooks", {"url": url, "events": events}), 201)


def delivery_log(app: AppCtx, webhook_id: str) -> Any:
    return expect(app.client.get(f"/v1/webhooks/{webhook_id}/deliveries"), 200)


def wait_log(
    app: AppCtx, webhook_id: str, done: Callable[[Any], bool], timeout: float, what: str
) -> Any:
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    log = delivery_log(app, webhook_id)
    while not done(log):
        if time.monotonic() > deadline:
            raise AssertionError(f"the delivery log must show {what} within {timeout:g} s: {log}")
        time.sleep(0.1)
        log = delivery_log(app, webhook_id)
    return log


def channel_with(owner: UserCtx, *members: UserCtx) -> str:
    body = {"name": "hooked", "kind": "private", "member_ids": [m.user_id for m in members]}
    channel_id: str = expect(owner.client.post("/v1/channels", body), 201)["channel_id"]
    return channel_id


def send(user: UserCtx, channel_id: str, text: str) -> Any:
    return expect(user.client.post(f"/v1/channels/{channel_id}/messages", {"text": text}), 201)


def test_message_new_is_delivered_signed_and_logged(app: AppCtx) -> None:
    with Receiver() as rx:
        hook = create_webhook(app, rx.url, ["message.new"])
        assert hook["secret"].startswith("whsec_")
        assert hook["events"] == ["message.new"]
        owner, member = app.user(), app.user()
        channel_id = channel_with(owner, member)
        first = send(owner, channel_id, "hello, hooks")
        # read.updated is not subscribed: it must not be delivered.
        member.client.post(f"/v1/channels/{channel_id}/read", {"seq": first["seq"]})
        send(member, channel_id, "second")
        got = rx.wait_for(2, 10)

        bodies = []
        for received in got:
            assert signature_ok(hook["secret"], received), "the signature must verify"
            assert not signature_ok("whsec_wrong", received), "a wrong secret must not verify"
            body = received.json()
            assert received.headers["x-chatsdk-event-id"] == body["id"]
            assert abs(int(received.headers["x-chatsdk-timestamp"]) - time.time()) < 120
            assert received.headers["content-type"].startswith("application/json")
            bodies.append(body)
        bodies.sort(key=lambda b: b["seq"])
        assert [b["type"] for b in bodies] == ["message.new", "message.new"]
        assert [b["data"]["text"] for b in bodies] == ["hello, hooks", "second"]
        assert {b["app_id"] for b in bodies} == {app.app_id}
        assert {b["channel_id"] for b in bodies} == {channel_id}
        assert {"id", "type", "app_id", "channel_id", "seq", "data", "created_at"} <= set(bodies[0])

        log = wait_log(
            app,
            hook["webhook_id"],
            lambda log: all(d["status"] == "delivered" for d in log["deliveries"]),
            5,
            "every delivery delivered",
        )
        assert len(log["deliveries"]) == 2
        for d in log["deliveries"]:
            assert d["event_type"] == "message.new"
            assert d["attempts"] == 1
            assert d["last_status"] == 200
            assert d["delivered_at"] is not None
        assert log["webhook"]["disabled_at"] is None
        assert rx.count() == 2, "an unsubscribed event type must not be delivered"


def test_webhook_endpoints_check_the_app_and_the_input(app: AppCtx, other_app: AppCtx) -> None:
    hook = create_webhook(app, "https://example.com/hook", ["*"])
    path = f"/v1/webhooks/{hook['webhook_id']}/deliveries"
    assert app.client.get(path).status == 200
    assert other_app.client.get(path).status == 404, "another app must not see the log"
    assert app.base.get(path).status == 401
    user = app.user()
    assert user.client.get(path).status == 401, "a user token is not an app key"
    for bad in (
        {"url": "ftp://example.com/x", "events": ["*"]},
        {"url": "https://user:pw@example.com/x", "events": ["*"]},
        {"url": "https://example.com/x", "events": ["user.revoked"]},
        {"url": "https://example.com/x", "events": []},
        {"url": "https://example.com/x", "events": ["*"], "secret": "mine"},
    ):
        resp = app.client.post("/v1/webhooks", bad)
        assert resp.status == 400, f"{bad} must be refused with 400 (got {resp})"
    assert app.base.post("/v1/webhooks", {"url": "https://e.com", "events": ["*"]}).status == 401


def test_failed_deliveries_are_retried_with_growing_backoff(app: AppCtx) -> None:
    # 500, 500, then 204: three attempts of one event.
    with Receiver(lambda n: 500 if n < 2 else 204) as rx:
        hook = create_webhook(app, rx.url, ["*"])
        owner = app.user()
        send(owner, channel_with(owner), "retry me")
        got = rx.wait_for(3, 15)
        assert len({r.headers["x-chatsdk-event-id"] for r in got}) == 1, "one event, retried"
        assert [r.headers["x-chatsdk-delivery-attempt"] for r in got] == ["1", "2", "3"]
        for received in got:
            assert signature_ok(hook["secret"], received)
        first_gap, second_gap = got[1].at - got[0].at, got[2].at - got[1].at
        # base 1 s: ~1 s then ~2 s (+-20 % jitter), never an immediate hammering.
        assert first_gap >= 0.5, f"the first retry came too soon ({first_gap:.2f} s)"
        assert second_gap >= 1.0, f"the second retry came too soon ({second_gap:.2f} s)"
        log = wait_log(
            app,
            hook["webhook_id"],
            # The delivery and the webhook's failure count are two writes: wait for both.
            lambda log: (
                log["deliveries"][0]["status"] == "delivered"
                and log["webhook"]["consecutive_failures"] == 0
            ),
            5,
            "the delivery delivered and the failure count reset",
        )
        (delivery,) = log["deliveries"]
        assert delivery["attempts"] == 3
        assert delivery["last_status"] == 204
        assert log["webhook"]["consecutive_failures"] == 0, "a success resets the failure count"


def test_a_webhook_is_disabled_after_10_consecutive_failures(app: AppCtx) -> None:
    with Receiver(lambda _n: 500) as rx:
        hook = create_webhook(app, rx.url, ["message.new"])
        owner = app.user()
        channel_id = channel_with(owner)
        for i in range(4):
            send(owner, channel_id, f"doomed {i}")
        rx.wait_for(4, 10)
        # Positive control: 4 failures (retries come >= 0.8 s later) do not disable it. The
        # receiver sees a request before the API records its failure: wait for the record.
        early = wait_log(
            app,
            hook["webhook_id"],
            lambda log: log["webhook"]["consecutive_failures"] >= 4,
            5,
            "4 failures recorded",
        )
        assert early["webhook"]["disabled_at"] is None
        assert 4 <= early["webhook"]["consecutive_failures"] < 10

        log = wait_log(
            app,
            hook["webhook_id"],
            lambda log: log["webhook"]["disabled_at"] is not None,
            15,
            "the webhook disabled",
        )
        assert log["webhook"]["consecutive_failures"] >= 10
        assert rx.count() >= 10
        for d in log["deliveries"]:
            assert d["status"] == "failed", d
            assert d["last_status"] == 500
            assert d["last_error"]

        # Disabled: new events are neither logged nor sent.
        seen = rx.count()
        send(owner, channel_id, "after disabling")
        time.sleep(1.5)
        assert len(delivery_log(app, hook["webhook_id"])["deliveries"]) == 4
        assert rx.count() == seen


@pytest.mark.parametrize("status", [301, 302])
def test_redirects_are_not_followed(app: AppCtx, status: int) -> None:
    """A redirect could point the signed request anywhere; it counts as a failure."""
    with Receiver(lambda _n: status) as rx:
        hook = create_webhook(app, rx.url, ["message.new"])
        owner = app.user()
        send(owner, channel_with(owner), "redirected")
        rx.wait_for(1, 10)
        log = wait_log(
            app,
            hook["webhook_id"],
            lambda log: log["deliveries"] and log["deliveries"][0]["attempts"] >= 1,
            5,
            "one attempt",
        )
        (delivery,) = log["deliveries"]
        assert delivery["status"] == "pending"
        assert delivery["last_status"] == status
        assert rx.count() == 1, "the redirect target must not be requested"

"""Webhooks end to end: a receiver on this machine, where the system's workers reach it
(ProbeTarget.callback_host), registered through the API, gets
each event signed with the webhook's secret, gets it again after answering 500, and gets it only
once after answering 2xx."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from checks._chat import Tenant, call, created
from preflight.evidence import EvidenceLog
from preflight.polling import until
from preflight.probe.target import ProbeTarget

SIGNATURE = "x-chatsdk-signature"
EVENT_ID = "x-chatsdk-event-id"
EVENTS = 2  # messages sent; the first delivery of the first one is answered 500
ARRIVAL_S = 20.0  # the first retry comes after about 1 s (backoff base) plus the send loop
QUIET_S = 3.0  # after every event got its 2xx, nothing may arrive again for this long


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def event_id(self) -> str:
        return self.headers.get(EVENT_ID) or str(json.loads(self.body).get("id"))


class Receiver:
    """An HTTP server on `host` that answers the first POST with 500 and the rest with 200."""

    def __init__(self, host: str) -> None:
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = 500 if not receiver.received else 200
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append(Received(headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)


@contextmanager
def receiver(host: str) -> Iterator[Receiver]:
    r = Receiver(host)
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        r.thread.join(timeout=5)


@pytest.mark.checklist("TST-WEBHOOKS")
def test_webhooks_are_signed_retried_and_not_sent_twice(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Lost or unsigned webhooks break integrations or let attackers forge events."""
    host = target.callback_host
    if host is None:
        pytest.skip(
            f"target {target.name} runs elsewhere and names no address of this machine that its "
            "workers reach; run this probe where the API can call back"
        )
    tenant = Tenant.create(target, "webhooks")
    user = tenant.user("hooked")
    channel = created(
        user.client, "/v1/channels", {"name": "hooks", "kind": "private"}, "a channel"
    )["channel_id"]
    with receiver(host) as hook:
        made = created(
            tenant.client, "/v1/webhooks", {"url": hook.url, "events": ["message.new"]}, "a webhook"
        )
        secret = str(made["secret"])
        for n in range(EVENTS):
            created(
                user.client, f"/v1/channels/{channel}/messages", {"text": f"hook {n}"}, "a message"
            )

        def answered_each() -> bool:
            return len({r.event_id for r in hook.snapshot() if r.answered == 200}) >= EVENTS

        until(answered_each, ARRIVAL_S)
        time.sleep(QUIET_S)
        got = hook.snapshot()
    evidence.figure("deliveries received", len(got))
    for r in got:
        evidence.note(f"{r.event_id}: answered {r.answered}, signature {SIGNATURE in r.headers}")
    ids = list(dict.fromkeys(r.event_id for r in got))
    assert len(ids) == EVENTS, (
        f"{EVENTS} message.new events must each reach the webhook within {ARRIVAL_S:g} s "
        f"(got {len(ids)} distinct events in {len(got)} deliveries)"
    )
    for r in got:
        expected = "sha256=" + hmac.new(secret.encode(), r.body, hashlib.sha256).hexdigest()
        given = r.headers.get(SIGNATURE, "")
        assert hmac.compare_digest(given, expected), (
            f"delivery of {r.event_id} must carry {SIGNATURE} = HMAC-SHA256 of the body with the "
            f"webhook's secret (got {given or 'no signature'})"
        )
    first = got[0]
    retried = [r for r in got[1:] if r.event_id == first.event_id]
    same = bool(retried) and json.loads(retried[0].body) == json.loads(first.body)
    assert same, (
        f"event {first.event_id}, answered 500, must be delivered again with the same body "
        f"(got {len(retried)} retries)"
    )
    twice = {
        i: n for i in ids if (n := sum(r.event_id == i and r.answered == 200 for r in got)) > 1
    }
    assert not twice, (
        f"an event acknowledged with 2xx must not be delivered again (got {twice} deliveries)"
    )
    log = call(tenant.client, "GET", f"/v1/webhooks/{made['webhook_id']}/deliveries")
    evidence.request(log)
    assert log.status == 200, f"the delivery log must be readable by the app ({log})"

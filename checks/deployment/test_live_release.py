"""After a deploy: the release that runs is the one shipped, healthy on every worker, and a user
can do the basic things through the public edge, in real time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from checks._chat import Tenant, realtime, send
from preflight.client import expect, polite
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

DELIVERY_BUDGET_S = 2.0
HEARTBEAT_WAIT_S = 25.0  # the API pings every open socket every 20 s


def _is_message(frame: dict[str, Any], message_id: str) -> bool:
    return frame.get("type") == "message.new" and frame["data"]["message_id"] == message_id


@pytest.mark.checklist("DEP-VERSION-LIVE")
def test_every_worker_runs_the_release(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Mixed or unexpected versions behind one edge give users different behaviour per request."""
    versions = {w: str(r["version"]) for w, r in target.metrics.runtime(evidence).items()}
    # The release the target says it serves: the version of the API document its edge serves.
    document = expect(polite(lambda: target.http.get("/v1/openapi.json")), 200)
    release = str(document["info"]["version"])
    evidence.note(f"the edge's API document is of release {release}")
    wrong = {w: v for w, v in versions.items() if v != release}
    assert not wrong, f"every worker must report release {release} (got {wrong})"


@pytest.mark.checklist("DEP-MIGRATIONS-APPLIED")
def test_the_schema_is_at_the_releases_newest_migration(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Code that expects a newer schema than the database has fails on the first such query."""
    for worker, report in target.metrics.runtime(evidence).items():
        migrations = report["migrations"]
        assert migrations["state"] == "ok", (
            f"migrations of worker {worker} must be applied (got {migrations['state']})"
        )
        # What the worker's release expects against what its database has applied.
        missing = sorted(set(migrations["shipped"]) - set(migrations["applied"]))
        assert not missing, (
            f"the database behind worker {worker} must have every migration of the release "
            f"(missing {missing})"
        )


@pytest.mark.checklist("DEP-HEALTH-PASSING")
def test_readiness_passes_on_every_worker(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """A worker that is not ready but still receives traffic fails a share of all requests."""
    reports = target.metrics.runtime(evidence)
    for worker, report in reports.items():
        down = [n for n, d in report["dependencies"].items() if not d["up"]]
        assert not down, f"worker {worker} must have every dependency up (down: {down})"
    failures = []
    for _ in range(len(reports) * 4):
        response = polite(lambda: target.http.get("/v1/health/ready"))
        if response.status != 200:
            failures.append(response.status)
    assert not failures, f"/v1/health/ready must answer 200 on every worker (got {failures})"


@pytest.mark.checklist("DEP-SERVICES-RUNNING")
def test_every_component_answers(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """A component that is not running turns into errors only when a request needs it."""
    reports = target.metrics.runtime(evidence)
    assert reports, "at least one API worker must answer through the edge"
    for worker, report in reports.items():
        for name, dependency in report["dependencies"].items():
            assert dependency["up"], f"{name} must be running and answer worker {worker}"


@pytest.mark.checklist("DEP-HEALTH-200")
@pytest.mark.parametrize("path", ["/v1/health/live", "/v1/health/ready"])
def test_public_health_endpoints_answer_200(
    target: ProbeTarget, evidence: EvidenceLog, path: str
) -> None:
    """Load balancers and monitors judge the service by these endpoints."""
    response = polite(lambda: target.http.get(path))
    evidence.request(response)
    assert response.status == 200, (
        f"GET {target.edge_url}{path} must answer 200 (got {response.status})"
    )


@pytest.mark.checklist("DEP-SMOKE")
def test_a_user_sends_reads_back_and_receives_in_real_time(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """If the simplest journey fails after a deploy, every user is affected."""
    world = Tenant.create(target)
    alice, bob = world.user("alice"), world.user("bob")
    channel = world.channel(alice, bob)
    with realtime(target, bob) as socket:
        subscribed = socket.subscribe(channel)
        kind = subscribed and subscribed["type"]
        assert kind == "subscribed", f"a member must be able to subscribe (got {subscribed})"
        sent = send(alice, channel, "preflight smoke test")
        received = socket.until(
            lambda f: (
                f.get("type") == "message.new" and f["data"]["message_id"] == sent["message_id"]
            )
        )
    assert received, f"the message {sent['message_id']} must reach the other member's socket"
    page = polite(lambda: bob.client.get(f"/v1/channels/{channel}/messages"))
    evidence.request(page)
    texts = [m["text"] for m in page.json()["messages"]]
    assert "preflight smoke test" in texts, (
        f"the other member must read the message back (got {texts})"
    )


@pytest.mark.checklist("DEP-REALTIME")
def test_a_message_is_delivered_over_websocket_within_2_s(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Chat that arrives seconds late is not real time; users resend and duplicate."""
    world = Tenant.create(target)
    alice, bob = world.user("alice"), world.user("bob")
    channel = world.channel(alice, bob)
    delays = []
    with realtime(target, bob) as socket:
        socket.subscribe(channel)
        for n in range(5):
            start = time.monotonic()
            sent = send(alice, channel, f"realtime {n}")
            wanted = str(sent["message_id"])
            frame = socket.until(lambda f: _is_message(f, wanted), DELIVERY_BUDGET_S * 2)  # noqa: B023
            assert frame, f"message {n} must be delivered over the WebSocket (it was not)"
            delays.append(time.monotonic() - start)
    evidence.figure("worst delivery", round(max(delays) * 1000, 1), "ms")
    assert max(delays) <= DELIVERY_BUDGET_S, (
        f"delivery from POST to socket must take <= {DELIVERY_BUDGET_S} s "
        f"(worst {max(delays):.2f} s)"
    )


@pytest.mark.checklist("DEP-WS-CONNECT")
def test_a_websocket_upgrades_and_is_kept_alive_by_heartbeats(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A socket that idles out behind the edge drops users silently until they reload."""
    user = Tenant.create(target).user()
    waited, answered = asyncio.run(_idle_until_server_ping(target, user.access_token))
    if waited <= HEARTBEAT_WAIT_S:
        evidence.figure("server heartbeat after idling", round(waited, 1), "s")
    assert waited <= HEARTBEAT_WAIT_S, (
        f"the server must ping an idle socket within {HEARTBEAT_WAIT_S} s (none came"
        + ("; the socket was closed first)" if not answered else ")")
    )
    assert answered, "the socket must still answer a frame after idling (it did not)"


async def _idle_until_server_ping(target: ProbeTarget, token: str) -> tuple[float, bool]:
    """Seconds until the first server ping on an idle, authenticated socket (inf if none), and
    whether the socket answers a frame afterwards. autoping=False shows the pings to us."""
    timeout = aiohttp.ClientTimeout(total=HEARTBEAT_WAIT_S + 20)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(target.ws_url, ssl=target.ssl_context(), autoping=False) as ws,
    ):
        await ws.send_json({"type": "auth", "token": token})
        start = time.monotonic()
        waited = float("inf")
        while (left := HEARTBEAT_WAIT_S - (time.monotonic() - start)) > 0:
            try:
                message = await ws.receive(timeout=left)
            except TimeoutError:
                break
            if message.type is aiohttp.WSMsgType.PING:
                waited = time.monotonic() - start
                await ws.pong(message.data)
                break
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return waited, False
        await ws.send_json({"type": "ping"})
        try:
            reply = await ws.receive(timeout=5)
        except TimeoutError:
            return waited, False
        return waited, reply.type is aiohttp.WSMsgType.TEXT and '"pong"' in reply.data

"""Realtime fan-out across API workers: a socket held by one worker receives what any other
worker accepted."""

from __future__ import annotations

import pytest

from checks._chat import Tenant, realtime, send
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

MESSAGES = 12


@pytest.mark.checklist("PERF-WS-AFFINITY")
def test_a_socket_receives_messages_sent_through_every_worker(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """With hidden affinity, users on one worker miss what is sent through the others."""
    reached = target.metrics.runtime(evidence)
    world = Tenant.create(target)
    alice, bob = world.user("alice"), world.user("bob")
    channel = world.channel(alice, bob)
    with realtime(target, bob) as socket:
        socket.subscribe(channel)
        # The edge balances the sends over the workers (the sample above shows which answer);
        # the socket stays on one of them.
        sent = [send(alice, channel, f"spread {n}")["message_id"] for n in range(MESSAGES)]
        got = set()
        for _ in sent:
            frame = socket.until(lambda f: f.get("type") == "message.new")
            if frame is None:
                break
            got.add(frame["data"]["message_id"])
    evidence.figure("messages received", len(got))
    missing = [m for m in sent if m not in got]
    assert not missing, (
        f"a socket must receive every message sent through any of the {len(reached)} workers "
        f"(missing {len(missing)} of {MESSAGES})"
    )

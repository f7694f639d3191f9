"""The API's per-user limits: a user's bucket lets the documented burst through, refuses the
next request with 429 and an integer Retry-After, leaves other users alone, and lets the user
back in once the Retry-After has passed."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from checks._chat import Tenant, call, created
from preflight.client import Response
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

REPO = Path(__file__).resolve().parents[2]
# Where the thresholds are documented (the API contract); the probe reads them from there, so a
# change of a limit that is not documented (or documented wrongly) shows up here.
DOCS = REPO / "system" / "chatsdk" / "API.md"
DOCUMENTED = re.compile(r"`send_message`\s+(\d+)/s\s+with\s+a\s+burst\s+of\s+(\d+)")
# Requests are paced below the edge's per-address rate, so the 429 that ends the burst is the
# API's per-user one, not the edge's.
SENDERS = 8
EXTRA = 40  # sends beyond the burst: more than the bucket refills while they are in flight
SLACK = 3  # requests in flight while a token came back
ROUND = 16  # sends per later round
DECIDE_WITHIN_S = 30.0


def documented_limit() -> tuple[float, int]:
    match = DOCUMENTED.search(DOCS.read_text())
    if match is None:
        raise RuntimeError(f"{DOCS} no longer documents the send_message rate and burst")
    return float(match[1]), int(match[2])


@pytest.mark.checklist("TST-RATELIMIT")
def test_the_message_limit_triggers_at_its_documented_threshold_and_resets(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Limits that trigger too early block users; too late, they protect nothing."""
    rate, burst = documented_limit()
    evidence.note(f"documented in {DOCS.name}: send_message {rate:g}/s, burst {burst}")
    tenant = Tenant.create(target, "ratelimit")
    sender, bystander = tenant.user("sender"), tenant.user("bystander")
    channel = created(
        sender.client,
        "/v1/channels",
        {"name": "ratelimit", "kind": "private", "member_ids": [bystander.user_id]},
        "a channel",
    )["channel_id"]
    path = f"/v1/channels/{channel}/messages"
    # From SENDERS connections at once, as fast as they go, in rounds until the limiter answers
    # 429 or lets through more than the documented burst and refill allow: a busy machine can
    # send the first round slower than the bucket refills, never every round for long.
    started = time.monotonic()
    responses: list[Response] = []
    with ThreadPoolExecutor(SENDERS) as pool:
        while True:
            first = len(responses)
            responses += pool.map(
                lambda n: sender.client.post(path, {"text": f"burst {n}"}),
                range(first, first + (burst + EXTRA if not first else ROUND)),
            )
            elapsed = time.monotonic() - started
            allowed = sum(r.status == 201 for r in responses)
            ceiling = burst + int(rate * elapsed) + SLACK + SENDERS
            if any(r.status != 201 for r in responses) or allowed > ceiling:
                break
            if elapsed > DECIDE_WITHIN_S:
                pytest.skip(
                    f"could not send faster than the documented refill of {rate:g}/s from "
                    f"{SENDERS} connections ({allowed} messages in {elapsed:.1f} s): the limit "
                    "cannot be judged on a machine this busy"
                )
    unexpected = [r for r in responses if r.status not in (201, 429)]
    assert not unexpected, f"POST {path} must answer 201 or 429 (got {unexpected[0]})"
    refused = next((r for r in responses if r.status == 429), None)
    evidence.figure("messages allowed", allowed)
    evidence.figure("messages refused with 429", len(responses) - allowed)
    evidence.figure("seconds for the whole burst", round(elapsed, 3), "s")
    assert refused is not None, (
        f"POST {path} must be refused with 429 after the documented burst of {burst} at "
        f"{rate:g}/s (got {allowed} messages through in {elapsed:.1f} s, more than the "
        f"{ceiling} the burst and the refill allow)"
    )
    evidence.request(refused)
    assert burst <= allowed <= ceiling, (
        f"the send_message limit must let {burst} to {ceiling} messages through in "
        f"{elapsed:.1f} s (documented: burst {burst}, {rate:g}/s) (got {allowed})"
    )
    retry_after = refused.headers.get("retry-after", "")
    integral = retry_after.isdigit() and int(retry_after) >= 1
    assert integral, (
        f"a 429 from POST {path} must carry an integer Retry-After of at least 1 "
        f"(got {retry_after or 'none'})"
    )
    other = call(bystander.client, "POST", path, json={"text": "not limited"})
    assert other.status == 201, (
        f"another user must not be limited by the sender's bucket (got {other.status})"
    )
    time.sleep(int(retry_after) + 0.2)
    again = sender.client.post(path, {"text": "after the wait"})
    evidence.request(again)
    assert again.status == 201, (
        f"POST {path} after waiting the Retry-After of {retry_after} s must answer 201 "
        f"(got {again.status})"
    )

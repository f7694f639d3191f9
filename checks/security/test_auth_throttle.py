"""Repeated authentication failures from one client are throttled: a client that keeps sending
wrong credentials, slower than the edge's general per-address rate, gets 429 with Retry-After
long before it could guess anything (the catalogue's AUTH-01: 20 failures a minute)."""

from __future__ import annotations

import http.client
import ipaddress
import json
import secrets
import time

import pytest

from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

ATTEMPTS = 30  # wrong credentials sent in all; throttling must start before the last one
PACE_PER_S = 15.0  # far below any general per-address limit, so a 429 is the auth throttle
TIMEOUT_S = 10.0


def _source_address(target: ProbeTarget) -> tuple[str, int] | None:
    """A loopback address of its own for this probe when the edge is on loopback: the throttle
    (and the edge's per-address budget) of 127.0.0.1, which the other probes share, stays
    untouched, and an earlier probe's failures do not count here."""
    host = target.edge_address[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return (
        (f"127.{secrets.randbelow(250) + 2}.{secrets.randbelow(250) + 2}.7", 0)
        if loopback
        else None
    )


@pytest.mark.checklist("SEC-AUTH-THROTTLE")
@pytest.mark.parametrize(
    ("kind", "header"),
    [
        pytest.param("API key", "X-API-Key", id="api-key"),
        pytest.param("bearer token", "Authorization", id="bearer-token"),
    ],
)
def test_repeated_auth_failures_are_throttled(
    target: ProbeTarget, evidence: EvidenceLog, kind: str, header: str
) -> None:
    """Unthrottled authentication allows password and token guessing at full speed."""
    host, port = target.edge_address
    source = _source_address(target)
    evidence.note(f"client address: {source[0] if source else 'this machine'}")
    conn = http.client.HTTPSConnection(
        host, port, context=target.ssl_context(), timeout=TIMEOUT_S, source_address=source
    )
    path = "/v1/tokens" if header == "X-API-Key" else "/v1/me"
    method = "POST" if header == "X-API-Key" else "GET"
    statuses: list[int] = []
    retry_after = ""
    started = time.monotonic()
    try:
        for n in range(ATTEMPTS):
            time.sleep(max(0.0, started + n / PACE_PER_S - time.monotonic()))
            guess = secrets.token_urlsafe(32)
            value = (
                f"ck_key_{secrets.token_hex(10)}.{guess}"
                if header == "X-API-Key"
                else (f"Bearer eyJhbGciOiJIUzI1NiJ9.e30.{guess}")
            )
            body = json.dumps({"user_id": "guess"}).encode() if method == "POST" else None
            conn.request(
                method, path, body=body, headers={header: value, "Content-Type": "application/json"}
            )
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            if response.status == 429:
                retry_after = response.getheader("Retry-After") or ""
                break
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    evidence.figure("wrong credentials sent", len(statuses))
    evidence.note(f"{len(statuses)} wrong {kind}s in {elapsed:.1f} s: statuses {statuses}")
    assert statuses[-1] == 429, (
        f"{ATTEMPTS} wrong {kind}s from one client in {elapsed:.0f} s must be throttled with 429 "
        f"(got {', '.join(sorted({str(s) for s in statuses}))} to all of them)"
    )
    assert retry_after.isdigit(), (
        f"the 429 for repeated wrong {kind}s must carry an integer Retry-After "
        f"(got {retry_after or 'none'})"
    )

"""Repeated authentication failures from one client are throttled: a client that keeps sending
wrong credentials, slower than the edge's general per-address rate, gets 429 with Retry-After
long before it could guess anything (the catalogue's AUTH-01: 20 failures a minute). The
throttle is on the guesser, not on the service: the credential's holder, from an address of its
own, still gets in. And spreading the guesses over many addresses, one each, does not escape it:
the key or user under attack is throttled as well."""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
import pytest

from checks._chat import Tenant
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

ATTEMPTS = 30  # wrong credentials sent in all; throttling must start before the last one
SPREAD_ATTEMPTS = 40  # wrong credentials for one key or user, each from an address of its own
PACE_PER_S = 15.0  # far below any general per-address limit, so a 429 is the auth throttle
TIMEOUT_S = 10.0
KINDS = [
    pytest.param("API key", "X-API-Key", id="api-key"),
    pytest.param("bearer token", "Authorization", id="bearer-token"),
]


def _source_address(target: ProbeTarget) -> tuple[str, int] | None:
    """An address of its own for each client of this probe, where this machine can be many
    clients of the edge (ProbeTarget.clients): the throttle (and the edge's per-address budget)
    of the address the other probes share stays untouched, and an earlier probe's failures do
    not count here."""
    address = target.client_address()
    return (address, 0) if address else None


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str


class _EdgeConnection(http.client.HTTPSConnection):
    """HTTPS to the edge by way of `via` (its address where this machine can be many clients),
    from `source_address`, with TLS verified for the edge's own name and that name sent as Host."""

    def __init__(
        self,
        target: ProbeTarget,
        via: tuple[str, int],
        source: tuple[str, int] | None,
    ) -> None:
        host, port = target.edge_address
        super().__init__(host, port, timeout=TIMEOUT_S)
        self.via = via
        self.source = source
        self.tls = target.ssl_context()

    def connect(self) -> None:
        sock = socket.create_connection(self.via, self.timeout, self.source)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


class Client:
    """One client of the edge, from one address (an address of its own where this machine can
    be many clients)."""

    def __init__(self, target: ProbeTarget, source: tuple[str, int] | None) -> None:
        clients = target.clients
        self.source = source
        via = clients.address if clients is not None and source else target.edge_address
        self.conn = _EdgeConnection(target, via, source)

    def send(self, header: str, value: str) -> Answer:
        """POST /v1/tokens with an API key, or GET /v1/me with a bearer token."""
        api_key = header == "X-API-Key"
        method, path = ("POST", "/v1/tokens") if api_key else ("GET", "/v1/me")
        body = json.dumps({"user_id": "guess"}).encode() if api_key else None
        self.conn.request(
            method, path, body=body, headers={header: value, "Content-Type": "application/json"}
        )
        response = self.conn.getresponse()
        response.read()
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
        return Answer(response.status, response.getheader("Retry-After") or "")

    def close(self) -> None:
        self.conn.close()


def _once(target: ProbeTarget, source: tuple[str, int] | None, header: str, value: str) -> Answer:
    client = Client(target, source)
    try:
        return client.send(header, value)
    finally:
        client.close()


def _random_guess(header: str) -> str:
    guess = secrets.token_urlsafe(32)
    if header == "X-API-Key":
        return f"ck_key_{secrets.token_hex(10)}.{guess}"
    return f"Bearer eyJhbGciOiJIUzI1NiJ9.e30.{guess}"


def _genuine(tenant: Tenant, header: str) -> tuple[str, Callable[[], str]]:
    """A credential of `tenant` that works, and a maker of wrong ones for the same key or user:
    the key's id with a wrong secret, or the user's own claims signed with a wrong secret."""
    if header == "X-API-Key":
        return tenant.api_key, lambda: f"ck_{tenant.key_id}.{secrets.token_urlsafe(32)}"
    user = tenant.user("throttle")
    claims = jwt.decode(user.access_token, options={"verify_signature": False})

    def forged() -> str:
        return f"Bearer {jwt.encode(claims, secrets.token_urlsafe(48), algorithm='HS256')}"

    return f"Bearer {user.access_token}", forged


def _paced(n: int, started: float) -> None:
    time.sleep(max(0.0, started + n / PACE_PER_S - time.monotonic()))


def _assert_throttled(answers: list[Answer], what: str, elapsed: float) -> None:
    __tracebackhide__ = True
    statuses = [a.status for a in answers]
    assert statuses[-1] == 429, (
        f"{what} in {elapsed:.0f} s must be throttled with 429 "
        f"(got {', '.join(sorted({str(s) for s in statuses}))} to all of them)"
    )
    retry_after = answers[-1].retry_after
    assert retry_after.isdigit(), (
        f"the 429 for {what} must carry an integer Retry-After (got {retry_after or 'none'})"
    )


def _assert_not_locked_out(
    target: ProbeTarget, evidence: EvidenceLog, header: str, genuine: str, kind: str
) -> None:
    """The holder of the credential, from an address of its own, is served."""
    __tracebackhide__ = True
    elsewhere = _source_address(target)
    if elsewhere is None:
        pytest.skip(
            f"throttled, but whether the holder is locked out needs a second client address, "
            f"and only one reaches target {target.name} from here (it gives no client network)"
        )
    answer = _once(target, elsewhere, header, genuine)
    evidence.note(f"a genuine {kind} from {elsewhere[0]}: {answer.status}")
    assert answer.status in (200, 201), (
        f"a genuine {kind} from another address must still be served while the guesser is "
        f"throttled (got {answer.status}): the throttle must not lock the legitimate user out"
    )


@pytest.mark.checklist("SEC-AUTH-THROTTLE")
@pytest.mark.parametrize(("kind", "header"), KINDS)
def test_repeated_auth_failures_are_throttled(
    target: ProbeTarget, evidence: EvidenceLog, kind: str, header: str
) -> None:
    """Unthrottled authentication allows password and token guessing at full speed."""
    tenant = Tenant.create(target, "throttle")
    genuine, _ = _genuine(tenant, header)
    source = _source_address(target)
    evidence.note(f"client address: {source[0] if source else 'this machine'}")
    client = Client(target, source)
    answers: list[Answer] = []
    started = time.monotonic()
    try:
        for n in range(ATTEMPTS):
            _paced(n, started)
            answers.append(client.send(header, _random_guess(header)))
            if answers[-1].status == 429:
                break
    finally:
        client.close()
    elapsed = time.monotonic() - started
    evidence.figure("wrong credentials sent", len(answers))
    evidence.note(
        f"{len(answers)} wrong {kind}s in {elapsed:.1f} s: statuses {[a.status for a in answers]}"
    )
    _assert_throttled(answers, f"{ATTEMPTS} wrong {kind}s from one client", elapsed)
    _assert_not_locked_out(target, evidence, header, genuine, kind)


@pytest.mark.checklist("SEC-AUTH-THROTTLE")
@pytest.mark.parametrize(("kind", "header"), KINDS)
def test_guessing_one_credential_from_many_addresses_is_throttled(
    target: ProbeTarget, evidence: EvidenceLog, kind: str, header: str
) -> None:
    """A per-address throttle alone lets a botnet guess one key or token, one try per address."""
    if target.clients is None:
        pytest.skip(
            f"needs many client addresses, and only one reaches target {target.name} from here "
            "(it gives no client network)"
        )
    tenant = Tenant.create(target, "throttle-spread")
    genuine, wrong = _genuine(tenant, header)
    answers: list[Answer] = []
    started = time.monotonic()
    for n in range(SPREAD_ATTEMPTS):
        _paced(n, started)
        answers.append(_once(target, _source_address(target), header, wrong()))
        if answers[-1].status == 429:
            break
    elapsed = time.monotonic() - started
    evidence.figure("wrong credentials for one key or user", len(answers))
    evidence.note(
        f"{len(answers)} wrong {kind}s for one {'key' if header == 'X-API-Key' else 'user'}, "
        f"each from its own address, in {elapsed:.1f} s: statuses {[a.status for a in answers]}"
    )
    _assert_throttled(
        answers,
        f"{SPREAD_ATTEMPTS} wrong {kind}s for one credential from as many addresses",
        elapsed,
    )
    _assert_not_locked_out(target, evidence, header, genuine, kind)

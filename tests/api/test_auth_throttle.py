"""Throttling of failed authentication (chatsdk/auththrottle.py), through the edge: per client
address and per credential, 429 with Retry-After, the legitimate user elsewhere unaffected, the
PostgreSQL fallback while Redis is down, the metric and the audit record.

Each test speaks from loopback addresses of its own (127.a.b.c: the edge sees them as distinct
clients and tells the API in X-Real-IP), so no test's failures count against another's, nor
against 127.0.0.1, which the rest of the suite uses. The stack runs with the default limits."""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from chatsdk.dependencies import REDIS_RETRY_SECONDS
from websockets.exceptions import ConnectionClosed

from preflight.client import ChatClient, expect
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTarget
from preflight.wsclient import connect
from tests.api.conftest import AppCtx
from tests.api.test_auth import db_fetch
from tests.api.test_metrics_and_logs import api_log_lines, samples, scrape
from tests.api.test_realtime import _expired_token, _ready

BURST = 25  # CHATSDK_AUTH_FAILURE_BURST: failures per address in 10 s
BURST_WINDOW_S = 10
PER_CREDENTIAL = 30  # CHATSDK_AUTH_FAILURES_PER_CREDENTIAL: failures per key or user in 10 min
KINDS = ("api-key", "bearer-token")


def fresh_address() -> str:
    return "127." + ".".join(str(secrets.randbelow(250) + 2) for _ in range(3))


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    code: str | None


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


def call_from(chat: ChatClient, source: str, call: Call) -> Answer:
    """One request through the edge from the loopback address `source`."""
    url = urlsplit(chat.base_url)
    conn = http.client.HTTPSConnection(
        url.hostname or "",
        url.port,
        context=chat.ssl_context(),
        timeout=10,
        source_address=(source, 0),
    )
    try:
        data = json.dumps(call.body).encode() if call.body is not None else None
        headers = {**call.headers, "Content-Type": "application/json"}
        conn.request(call.method, call.path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            code = json.loads(raw)["error"]["code"] if raw else None
        except (ValueError, KeyError, TypeError):
            code = None
        return Answer(resp.status, resp.getheader("Retry-After"), code)
    finally:
        conn.close()


def mint_with(api_key: str, **headers: str) -> Call:
    return Call("POST", "/v1/tokens", {"X-API-Key": api_key, **headers}, {"user_id": "probe"})


def me_with(token: str | None) -> Call:
    return Call("GET", "/v1/me", {"Authorization": f"Bearer {token}"} if token else {})


def wrong_api_key(key_id: str | None = None) -> str:
    return f"ck_{key_id or 'key_' + secrets.token_hex(10)}.{secrets.token_urlsafe(32)}"


def forged_token(app: AppCtx, user_id: str) -> str:
    """The user's own claims, signed with a secret the attacker guessed wrong."""
    now = int(time.time())
    claims = {
        "iss": "chatsdk",
        "aud": "chatsdk-api",
        "sub": user_id,
        "app": app.app_id,
        "typ": "access",
        "ver": 1,
        "jti": secrets.token_hex(16),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, secrets.token_urlsafe(48), algorithm="HS256")


def guess(chat: ChatClient, source: str, kind: str, credential: str | None = None) -> Answer:
    """One wrong credential of `kind` from `source` (a random one unless given)."""
    if kind == "api-key":
        return call_from(chat, source, mint_with(credential or wrong_api_key()))
    token = credential or f"eyJhbGciOiJIUzI1NiJ9.e30.{secrets.token_urlsafe(32)}"
    return call_from(chat, source, me_with(token))


def genuine(app: AppCtx, source: str, kind: str, token: str | None = None) -> Answer:
    """The app's own key (POST /v1/tokens) or a user's own token (GET /v1/me) from `source`."""
    if kind == "api-key":
        return call_from(app.base, source, mint_with(app.api_key))
    assert token is not None
    return call_from(app.base, source, me_with(token))


def until_throttled(chat: ChatClient, source: str, kind: str, attempts: int = 40) -> list[Answer]:
    answers: list[Answer] = []
    for _ in range(attempts):
        answers.append(guess(chat, source, kind))
        if answers[-1].status == 429:
            break
    return answers


def assert_throttled_after_burst(answers: list[Answer]) -> None:
    __tracebackhide__ = True
    statuses = [a.status for a in answers]
    assert statuses[:BURST] == [401] * BURST, f"the first {BURST} failures are 401s: {statuses}"
    assert statuses[BURST:] == [429], f"attempt {BURST + 1} must get 429: {statuses}"
    last = answers[-1]
    assert last.code == "rate_limited", last
    assert last.retry_after is not None, last
    assert last.retry_after.isdigit(), last
    assert 1 <= int(last.retry_after) <= BURST_WINDOW_S, last


# -- per client address ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_repeated_failures_from_one_address_get_429_with_retry_after(
    chat: ChatClient, kind: str
) -> None:
    answers = until_throttled(chat, fresh_address(), kind)
    assert_throttled_after_burst(answers)


@pytest.mark.parametrize("kind", KINDS)
def test_the_legitimate_user_at_another_address_is_not_locked_out(
    chat: ChatClient, app: AppCtx, kind: str
) -> None:
    token = app.user().access_token if kind == "bearer-token" else None
    attacker = fresh_address()
    assert_throttled_after_burst(until_throttled(chat, attacker, kind))
    ok = 201 if kind == "api-key" else 200
    assert genuine(app, fresh_address(), kind, token).status == ok
    # The throttled address gets no verdict at all, not even for a genuine credential.
    assert genuine(app, attacker, kind, token).status == 429


def test_forwarding_headers_written_by_the_client_do_not_escape_the_throttle(
    chat: ChatClient,
) -> None:
    """The edge overwrites X-Real-IP and X-Forwarded-For with the TCP peer: a client that
    writes a new address into them on every attempt is still one client."""
    source = fresh_address()
    answers = []
    for _ in range(BURST + 1):
        spoofed = fresh_address()
        call = mint_with(
            wrong_api_key(),
            **{"X-Real-IP": spoofed, "X-Forwarded-For": f"{spoofed}, {fresh_address()}"},
        )
        answers.append(call_from(chat, source, call))
    assert_throttled_after_burst(answers)


def test_failures_on_the_realtime_socket_count_and_a_throttled_address_is_closed_4429(
    chat: ChatClient, app: AppCtx
) -> None:
    user = app.user()
    source = fresh_address()
    codes = [ws_auth_close_code(chat, source, forged_token(app, user.user_id))]
    while codes[-1] == 4401 and len(codes) <= BURST:
        codes.append(ws_auth_close_code(chat, source, forged_token(app, user.user_id)))
    assert codes == [4401] * BURST + [4429], codes
    # Over HTTP too: the address is throttled whatever it authenticates on.
    assert guess(chat, source, "bearer-token").status == 429


def ws_auth_close_code(chat: ChatClient, source: str, token: str) -> int | None:
    """The close code after an auth frame with `token` on a socket from `source`."""
    with connect(
        chat.ws_url, ssl=chat.ssl_context(), source_address=(source, 0), open_timeout=10
    ) as conn:
        conn.send(json.dumps({"type": "auth", "token": token}))
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            while True:
                conn.recv(timeout=5)
        rcvd = conn.protocol.close_rcvd
        return rcvd.code if rcvd is not None else None


# -- per credential, from many addresses -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_failures_against_one_credential_from_many_addresses_throttle_it(
    chat: ChatClient, app: AppCtx, kind: str
) -> None:
    """One guess from each of many addresses stays under every address's limit; the key (or
    the user) under attack is throttled, and its holder still gets in from elsewhere."""
    victim = app.user()
    attackers = [fresh_address() for _ in range(PER_CREDENTIAL + 1)]
    answers = [
        guess(
            chat,
            source,
            kind,
            wrong_api_key(app.key_id) if kind == "api-key" else forged_token(app, victim.user_id),
        )
        for source in attackers
    ]
    statuses = [a.status for a in answers]
    assert statuses == [401] * PER_CREDENTIAL + [429], statuses
    assert answers[-1].retry_after is not None
    assert answers[-1].retry_after.isdigit()
    # An address that has failed for this credential gets no verdict while it is throttled...
    assert genuine(app, attackers[0], kind, victim.access_token).status == 429
    # ...and the holder, from an address of its own, gets in.
    ok = 201 if kind == "api-key" else 200
    assert genuine(app, fresh_address(), kind, victim.access_token).status == ok


def test_expired_revoked_and_missing_credentials_do_not_count(
    chat: ChatClient, app: AppCtx, stack: NativeTarget
) -> None:
    """Only credentials that do not verify are guesses: a client whose token expired, or that
    sends none, is never throttled for it."""
    source = fresh_address()
    expired = _expired_token(stack, app.user())
    revoked = app.user()
    expect(app.client.post(f"/v1/users/{revoked.user_id}/revoke"), 204)
    for _ in range(BURST + 5):
        assert guess(chat, source, "bearer-token", expired).status == 401
        assert guess(chat, source, "bearer-token", revoked.access_token).status == 401
        assert call_from(chat, source, me_with(None)).status == 401


# -- Redis down: PostgreSQL keeps the windows ----------------------------------------------------


def settle(stack: NativeTarget) -> None:
    """Wait until every worker is ready (Redis answers its PING) and past the throttle's
    one-second breaker: right after a Redis outage a worker may still count in PostgreSQL while
    another counts in Redis, and exact counts would be split between them."""
    deadline = time.monotonic() + 20
    while not all(_ready(url) for url in stack.worker_urls):
        assert time.monotonic() < deadline, "the workers did not become ready again"
        time.sleep(0.2)
    time.sleep(REDIS_RETRY_SECONDS + 0.2)


@pytest.fixture(scope="module", autouse=True)
def settled(stack: NativeTarget) -> None:
    """Tests of other modules stop Redis too (test_ratelimit.py, test_realtime.py)."""
    settle(stack)


@contextlib.contextmanager
def redis_down(stack: NativeTarget) -> Iterator[None]:
    assert stack.info is not None
    control = stack.info.drills.control["redis"]
    control.stop()
    try:
        yield
    finally:
        control.start()
        settle(stack)


def test_with_redis_down_the_throttle_holds_across_workers_in_postgresql(
    chat: ChatClient, app: AppCtx, stack: NativeTarget, info: TargetInfo
) -> None:
    """Per-worker memory would let each of the two workers take a burst of its own; the
    PostgreSQL fallback keeps one window for the whole deployment."""
    attacker = fresh_address()
    with redis_down(stack):
        answers = until_throttled(chat, attacker, "api-key")
        other = genuine(app, fresh_address(), "api-key")
        rows = db_fetch(info, "SELECT count(*) AS n FROM auth_failures")
    assert_throttled_after_burst(answers)
    assert other.status == 201, "the legitimate user elsewhere gets in while Redis is down"
    assert rows[0]["n"] >= BURST, "the failures are kept in PostgreSQL while Redis is down"


# -- what operators see ------------------------------------------------------------------------


def throttled_count(stack: NativeTarget, scope: str, credential: str) -> float:
    return sum(
        value
        for url in stack.worker_urls
        for name, labels, value in samples(scrape(url))
        if name == "auth_throttled_total" and labels == {"scope": scope, "credential": credential}
    )


def audit_records(stack: NativeTarget, subject: str) -> list[dict[str, Any]]:
    records = []
    for line in api_log_lines(stack):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "audit" and record.get("subject") == subject:
                records.append(record)
    return records


def test_throttled_attempts_are_counted_and_a_new_throttle_is_audited(
    chat: ChatClient, stack: NativeTarget
) -> None:
    before = throttled_count(stack, "address", "api_key")
    source = fresh_address()
    assert_throttled_after_burst(until_throttled(chat, source, "api-key"))
    for _ in range(2):
        assert guess(chat, source, "api-key").status == 429
    assert throttled_count(stack, "address", "api_key") - before == 3
    deadline = time.monotonic() + 5
    while not (records := audit_records(stack, source)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(records) == 1, f"one audit record when the address became throttled: {records}"
    record = records[0]
    assert record["action"] == "auth.throttled"
    assert record["outcome"] == "throttled"
    assert record["scope"] == "address"
    assert record["actor"] == f"client:{source}"

"""Malformed input of every kind gets a 4xx with the contract's JSON error, never a 5xx or a stack
trace, and the server stays healthy afterwards."""

from __future__ import annotations

import json
import re

import pytest

from checks._chat import call
from checks.security._actors import Actors
from preflight.client import ChatClient, Response
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

LEAKS = re.compile(
    r"Traceback \(most recent call last\)|File \"/[^\"]+\", line \d+|\.py\", line|"
    r"RecursionError|JSONDecodeError|UnicodeDecodeError|asyncpg\.|aiohttp\.|/site-packages/"
)
JSON = {"Content-Type": "application/json"}


def _deep(depth: int) -> bytes:
    return b'{"name":' + b"[" * depth + b"]" * depth + b"}"


# name: (method, path, body, extra headers)
CASES: dict[str, tuple[str, str, bytes, dict[str, str]]] = {
    "truncated JSON": ("POST", "/v1/channels", b'{"name": "x", "kind":', JSON),
    "not JSON at all": ("POST", "/v1/channels", b"name=x&kind=public", JSON),
    "a JSON array": ("POST", "/v1/channels", b'["name", "kind"]', JSON),
    "JSON null": ("POST", "/v1/channels", b"null", JSON),
    "10000 levels of nesting": ("POST", "/v1/channels", _deep(10_000), JSON),
    "invalid UTF-8": ("POST", "/v1/channels", b'{"name": "\xff\xfe\xfd", "kind": "public"}', JSON),
    "a lone surrogate": ("POST", "/v1/channels", b'{"name": "\\ud800", "kind": "public"}', JSON),
    "a 5000-digit number": (
        "POST",
        "/v1/channels/{channel}/read",
        b'{"seq": ' + b"9" * 5000 + b"}",
        JSON,
    ),
    "a float where an integer goes": (
        "POST",
        "/v1/channels/{channel}/read",
        b'{"seq": 1e308}',
        JSON,
    ),
    "wrong types": ("POST", "/v1/channels", b'{"name": ["x"], "kind": 7}', JSON),
    "an unknown field": (
        "POST",
        "/v1/channels",
        b'{"name": "x", "kind": "public", "is_admin": true}',
        JSON,
    ),
    "a 2 MB JSON body": ("POST", "/v1/channels", b'{"name": "' + b"a" * 2_000_000 + b'"}', JSON),
    "a 64 KB header": ("GET", "/v1/me", b"", {"X-Filler": "a" * 65536}),
    "a wrong content type": (
        "POST",
        "/v1/channels",
        b'{"name": "x"}',
        {"Content-Type": "text/xml"},
    ),
    "a NUL in a string": ("POST", "/v1/channels", b'{"name": "a\\u0000b", "kind": "public"}', JSON),
    "a bad path id": ("GET", "/v1/channels/%00%ff..%2f", b"", {}),
    "a bad query value": ("GET", "/v1/channels/{channel}/messages?limit=-1&after_seq=x", b"", {}),
}


def structured(response: Response) -> bool:
    try:
        error = json.loads(response.body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and bool(error.get("code")) and bool(error.get("message"))


def send(
    client: ChatClient, method: str, path: str, body: bytes, headers: dict[str, str]
) -> Response:
    return call(client, method, path, body=body or None, headers=headers)


@pytest.mark.checklist("TST-ERRORS")
@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_gets_a_structured_4xx(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog, case: str
) -> None:
    """500s on bad input hide bugs, and stack traces leak internals."""
    method, path, body, headers = CASES[case]
    path = path.format(channel=actors.objects.channel_id)
    response = send(actors.owner.client, method, path, body, headers)
    evidence.request(response)
    what = f"{method} {path.split('?')[0]} with {case}"
    leak = LEAKS.search(response.body.decode(errors="replace"))
    assert not leak, f"{what} must not reveal internals (got {leak[0]!r} in the body)"
    assert 400 <= response.status < 500, (
        f"{what} must be refused with a 4xx (got {response.status})"
    )
    ctype = response.headers.get("content-type", "none")
    assert structured(response), (
        f"{what} must answer the contract's JSON error {{error: {{code, message}}}} (got "
        f"{ctype} {response.body[:120]!r})"
    )


# Sent again right before the health check (the cases above may run in any order, or not at all).
NASTIEST = ("10000 levels of nesting", "invalid UTF-8", "a 5000-digit number", "a 64 KB header")


def ready_answer(target: ProbeTarget) -> Response:
    return call(target.http, "GET", "/v1/health/ready")


@pytest.mark.checklist("TST-ERRORS")
def test_the_server_stays_healthy_after_malformed_input(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog
) -> None:
    """Bad input that takes a worker down is a denial of service."""
    for case in NASTIEST:
        method, path, body, headers = CASES[case]
        path = path.format(channel=actors.objects.channel_id)
        send(actors.owner.client, method, path, body, headers)
    ready = ready_answer(target)
    evidence.request(ready)
    assert ready.status == 200, (
        f"GET /v1/health/ready after every kind of malformed input must answer 200 "
        f"(got {ready.status})"
    )
    me = call(actors.owner.client, "GET", "/v1/me")
    assert me.status == 200, f"GET /v1/me after malformed input must still answer 200 ({me})"

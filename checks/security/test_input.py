"""Injection: SQL payloads in path, query and body are data (stored and returned verbatim,
refused as invalid, never executed or answered with a database error), and HTML in messages,
channel names and profiles comes back as JSON data, never as markup."""

from __future__ import annotations

import json
import re
import secrets
from urllib.parse import quote

import pytest

from checks._chat import call
from checks.security._actors import Actors
from preflight.client import Response
from preflight.evidence import EvidenceLog

SQL_PAYLOADS = (
    "' OR '1'='1",
    "'; DROP TABLE messages; --",
    '" OR ""="',
    "1; SELECT pg_sleep(0)--",
    "' UNION SELECT id, text, NULL FROM messages--",
    "\\'; TRUNCATE channels CASCADE; --",
    "$1 $$ ' ) ; --",
)
# What a database error looks like when it reaches the client.
SQL_ERRORS = re.compile(
    r"(?i)syntax error at or near|unterminated quoted string|sqlstate|asyncpg|psycopg|"
    r"pg_catalog|relation \"|column \"|postgres(?:ql)? error|invalid input syntax"
)
XSS_PAYLOADS = (
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    '"><svg/onload=alert(1)>',
    "javascript:alert(1)",
    "<iframe srcdoc='<script>alert(1)</script>'></iframe>",
)


def no_server_or_sql_error(response: Response, what: str) -> None:
    __tracebackhide__ = True
    assert response.status < 500, (
        f"{what} must be answered as data or refused with a 4xx (got {response.status})"
    )
    leaked = SQL_ERRORS.search(response.body.decode(errors="replace"))
    assert not leaked, f"{what} must not reveal a database error (got {leaked[0]!r} in the body)"


@pytest.mark.checklist("SEC-SQLI")
@pytest.mark.parametrize("payload", SQL_PAYLOADS)
def test_sql_in_bodies_is_stored_as_data(
    actors: Actors, evidence: EvidenceLog, payload: str
) -> None:
    """SQL injection exposes or destroys the entire database."""
    owner, channel = actors.owner.client, actors.objects.channel_id
    posted = call(owner, "POST", f"/v1/channels/{channel}/messages", json={"text": payload})
    evidence.request(posted)
    no_server_or_sql_error(posted, f"a message text of {payload!r}")
    assert posted.status == 201, f"a message text of {payload!r} must be stored (got {posted})"
    message_id = posted.json()["message_id"]
    page = call(owner, "GET", f"/v1/channels/{channel}/messages?limit=200")
    texts = {m["message_id"]: m["text"] for m in page.json().get("messages", [])}
    assert texts.get(message_id) == payload, (
        f"a message text of {payload!r} must be returned verbatim (got {texts.get(message_id)!r})"
    )
    assert actors.objects.message_id in texts, (
        f"after a message text of {payload!r} the channel's earlier messages must still be there"
    )
    renamed = call(owner, "PATCH", "/v1/me", json={"name": payload[:200]})
    no_server_or_sql_error(renamed, f"a profile name of {payload!r}")


@pytest.mark.checklist("SEC-SQLI")
@pytest.mark.parametrize("payload", SQL_PAYLOADS)
def test_sql_in_paths_and_queries_is_refused_or_not_found(
    actors: Actors, evidence: EvidenceLog, payload: str
) -> None:
    """An id or a query parameter spliced into SQL turns a lookup into a dump."""
    o = actors.objects
    # The outsider may see nothing of the channel: a payload that widens the WHERE clause would
    # hand them the owner's messages.
    attempts = [
        f"/v1/channels/{quote(o.channel_id + payload, safe='')}/messages",
        f"/v1/channels/{o.channel_id}/messages?after_seq={quote(payload, safe='')}",
        f"/v1/channels/{o.channel_id}/messages?limit={quote('1 ' + payload, safe='')}",
        f"/v1/polls/{quote(o.poll_id + payload, safe='')}",
        f"/v1/users/{quote(actors.owner.user_id + payload, safe='')}",
    ]
    for path in attempts:
        response = call(actors.outsider.client, "GET", path)
        evidence.request(response)
        no_server_or_sql_error(response, f"GET {path}")
        refused = response.status >= 400 and b"launch code" not in response.body
        assert refused, f"GET {path} by a non-member must be refused (got {response.status})"
    minted = call(actors.tenant.client, "POST", "/v1/tokens", json={"user_id": payload})
    evidence.request(minted)
    no_server_or_sql_error(minted, f"a user id of {payload!r}")


def is_json(response: Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip() == "application/json"


@pytest.mark.checklist("SEC-XSS-STORED")
@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_html_in_messages_comes_back_as_json_data(
    actors: Actors, evidence: EvidenceLog, payload: str
) -> None:
    """Stored script in messages would run in every reader's client."""
    owner, channel = actors.owner.client, actors.objects.channel_id
    client_msg_id = secrets.token_hex(8)
    posted = call(
        owner,
        "POST",
        f"/v1/channels/{channel}/messages",
        json={"text": payload, "client_msg_id": client_msg_id},
    )
    assert posted.status == 201, f"a message with markup must be accepted as text ({posted})"
    page = call(actors.member.client, "GET", f"/v1/channels/{channel}/messages?limit=200")
    evidence.request(page)
    ctype = page.headers.get("content-type", "none")
    assert is_json(page), (
        f"messages with markup must be served as application/json (got Content-Type {ctype})"
    )
    nosniff = page.headers.get("x-content-type-options", "").lower()
    assert nosniff == "nosniff", (
        f"messages with markup must be served with X-Content-Type-Options nosniff (got "
        f"{nosniff or 'none'})"
    )
    texts = [m["text"] for m in page.json()["messages"] if m.get("client_msg_id") == client_msg_id]
    assert texts == [payload], (
        f"a message text of {payload!r} must come back verbatim as data (got {texts})"
    )


@pytest.mark.checklist("SEC-XSS-STORED")
@pytest.mark.parametrize(
    "where",
    ["channel name", "profile name", "error message"],
)
def test_html_elsewhere_comes_back_as_json_data(
    actors: Actors, evidence: EvidenceLog, where: str
) -> None:
    """Names and error messages reach readers' screens just like messages."""
    payload = XSS_PAYLOADS[1]
    if where == "channel name":
        made = call(
            actors.owner.client, "POST", "/v1/channels", json={"name": payload, "kind": "public"}
        )
        assert made.status == 201, f"a channel name with markup must be accepted ({made})"
        response = call(actors.owner.client, "GET", f"/v1/channels/{made.json()['channel_id']}")
        value = response.json().get("name")
    elif where == "profile name":
        call(actors.member.client, "PATCH", "/v1/me", json={"name": payload})
        response = call(actors.member.client, "GET", "/v1/me")
        value = response.json().get("name")
    else:
        response = call(actors.owner.client, "GET", f"/v1/channels/{quote(payload, safe='')}")
        value = payload if payload.encode() not in response.body else "reflected raw"
    evidence.request(response)
    ctype = response.headers.get("content-type", "none")
    assert is_json(response), f"a {where} with markup must be served as JSON (got {ctype})"
    assert value == payload, f"a {where} of {payload!r} must come back as data (got {value!r})"
    json.loads(response.body)  # the whole body is JSON, not HTML around it

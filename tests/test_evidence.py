"""Evidence entries and their redaction: no secret reaches a stored entry, nothing else is lost."""

from __future__ import annotations

import base64
import json

import pytest

from preflight.client import Response
from preflight.evidence import (
    ATTACHMENT_LIMIT,
    BODY_LIMIT,
    REDACTED,
    EvidenceLog,
    Redactor,
    secrets_of_url,
)
from tests.records import png

ADMIN_KEY = "adm_9f8e7d6c5b4a39281706"
PG_PASSWORD = "pg/pw+with spaces&more"
DSN = "postgresql://chat:pg%2Fpw%2Bwith%20spaces%26more@127.0.0.1:5432/chat"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyMSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor([ADMIN_KEY, *secrets_of_url(DSN)])


def stored(entry: object) -> str:
    return json.dumps(entry)


def test_dsn_password_is_found_raw_and_decoded() -> None:
    assert set(secrets_of_url(DSN)) == {"pg%2Fpw%2Bwith%20spaces%26more", PG_PASSWORD}
    assert secrets_of_url("redis://127.0.0.1:6379/0") == []
    assert secrets_of_url(None) == []


@pytest.mark.parametrize(
    "text",
    [
        f"the admin key is {ADMIN_KEY}.",
        f"dsn={DSN}",
        f"password: {PG_PASSWORD}",
        f"Authorization: Bearer {JWT}",
        f"token {JWT} in prose",
        "GET /v1/export?user=u1&access_token=opaque-value-123 HTTP/1.1",
        "https://x.example/cb?api_key=opaque-value-123&page=2",
        '{"api_key": "opaque-value-123", "key_id": "k1"}',
        "redis://:opaque-value-123@127.0.0.1:6379/0",
        "Cookie: session=opaque-value-123",
    ],
)
def test_secrets_are_redacted_from_text(redactor: Redactor, text: str) -> None:
    out = redactor.text(text)
    for secret in (ADMIN_KEY, PG_PASSWORD, "pg%2Fpw", JWT, "eyJ", "opaque-value-123"):
        assert secret not in out, f"{secret!r} survived in {out!r}"
    assert REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        '{"key_id": "k1", "token_type": "bearer", "keys": 3}',
        "https://127.0.0.1:8443/v1/channels?limit=50&cursor=abc",
        "max-age=63072000; includeSubDomains",
        "a short password 'pw' is not hidden, it is a finding",
    ],
)
def test_ordinary_text_is_left_alone(redactor: Redactor, text: str) -> None:
    assert redactor.text(text) == text


def test_credential_headers_are_redacted_by_name(redactor: Redactor) -> None:
    headers = {
        "Authorization": "Bearer opaque",
        "Cookie": "sid=1",
        "Set-Cookie": "sid=2; HttpOnly",
        "X-Api-Key": "app-key",
        "X-Admin-Key": "whatever",
        "WWW-Authenticate": "Bearer",
        "Content-Type": "application/json",
        "X-Echo": f"echo {ADMIN_KEY}",
    }
    out = redactor.headers(headers)
    assert out["Authorization"] == out["Cookie"] == out["Set-Cookie"] == REDACTED
    assert out["X-Api-Key"] == out["X-Admin-Key"] == REDACTED
    assert out["WWW-Authenticate"] == "Bearer"
    assert out["Content-Type"] == "application/json"
    assert out["X-Echo"] == f"echo {REDACTED}"


def test_request_entry_from_a_response_redacts_a_secret_in_the_body(redactor: Redactor) -> None:
    body = json.dumps({"app_id": "a1", "echo": ADMIN_KEY, "access_token": JWT}).encode()
    response = Response(200, {"content-type": "application/json"}, body, "POST", "/v1/apps")
    log = EvidenceLog(redactor, lambda: "https://127.0.0.1:8443")
    entry = log.request(response, request_headers={"X-Admin-Key": ADMIN_KEY})
    assert entry["url"] == "https://127.0.0.1:8443/v1/apps"
    assert entry["method"] == "POST"
    assert entry["status"] == 200
    assert entry["body_bytes"] == len(body)
    assert '"app_id": "a1"' in entry["body"]
    assert ADMIN_KEY not in stored(entry)
    assert JWT not in stored(entry)
    assert entry["request_headers"] == {"X-Admin-Key": REDACTED}
    assert log.snapshot() == (entry,)


def test_body_excerpt_is_cut_after_redaction(redactor: Redactor) -> None:
    # The secret straddles the excerpt's end: cutting first would keep its first half.
    body = "x" * (BODY_LIMIT - 5) + ADMIN_KEY + "y" * 10_000
    entry = EvidenceLog(redactor).request(method="GET", url="/big", status=200, body=body)
    assert ADMIN_KEY[:5] not in entry["body"]
    assert len(entry["body"]) <= BODY_LIMIT + 40
    assert entry["body"].endswith(f"[{len(body)} bytes in all]")


def test_notes_attachments_and_urls_are_redacted(redactor: Redactor) -> None:
    log = EvidenceLog(redactor)
    note = log.note(f"connected with {DSN}")
    text = log.attach("log.txt", f"line 1\nadmin={ADMIN_KEY}\n")
    binary = log.attach("blob.bin", b"\xff\xfe" + ADMIN_KEY.encode(), "application/octet-stream")
    request = log.request(method="GET", url=f"https://h/x?token={ADMIN_KEY}&n=1")
    assert note["text"] == f"connected with postgresql://chat:{REDACTED}@127.0.0.1:5432/chat"
    assert text == {
        "kind": "attachment",
        "name": "log.txt",
        "media_type": "text/plain",
        "encoding": "text",
        "content": f"line 1\nadmin={REDACTED}\n",
    }
    assert binary["encoding"] == "base64"
    assert ADMIN_KEY.encode() not in base64.b64decode(binary["content"])
    assert request["url"] == f"https://h/x?token={REDACTED}&n=1"


def test_figures_must_be_finite_numbers() -> None:
    log = EvidenceLog(Redactor())
    assert log.figure("p95", 12.5, "ms") == {
        "kind": "figure",
        "name": "p95",
        "value": 12.5,
        "unit": "ms",
    }
    for bad in (float("nan"), True, "12"):
        with pytest.raises(TypeError, match="must be a finite number"):
            log.figure("p95", bad, "ms")  # type: ignore[arg-type]


def test_a_request_entry_names_method_and_url() -> None:
    with pytest.raises(TypeError, match="needs method and url"):
        EvidenceLog(Redactor()).request(status=200)


def test_entries_are_bounded() -> None:
    log = EvidenceLog(Redactor())
    for i in range(250):
        log.note(f"n{i}")
    kept = log.snapshot()
    assert len(kept) == 201
    assert kept[-1] == {"kind": "note", "text": "50 more entries were not kept"}


def test_images_are_kept_whole_or_refused() -> None:
    """A screenshot is stored byte for byte (a cut image is unreadable), so one over the limit
    or one that is not what its media type says is refused with the fix."""
    log = EvidenceLog(Redactor())
    shot = png(400, 300, (9, 105, 218))
    entry = log.attach("screenshot: the chat", shot, "image/png")
    assert entry["encoding"] == "base64"
    assert base64.b64decode(entry["content"]) == shot
    with pytest.raises(ValueError, match="is not a image/jpeg image"):
        log.attach("mislabelled", shot, "image/jpeg")
    with pytest.raises(ValueError, match="is not a image/png image"):
        log.attach("text", "hello", "image/png")
    big = b"\xff\xd8\xff" + bytes(ATTACHMENT_LIMIT)
    with pytest.raises(ValueError, match="downscale it or lower its JPEG quality"):
        log.attach("huge", big, "image/jpeg")
    assert log.snapshot() == (entry,)

"""Uploads through NGINX: stored with their sha256, typed by content (never by the client's
claim), served only to the uploader and members of channels where they were attached, always as
an attachment with nosniff; hostile filenames stay data; oversized bodies are refused."""

from __future__ import annotations

import hashlib
import http.client
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from preflight.client import Response, expect
from preflight.targets.native import NativeTarget
from tests.api.conftest import AppCtx, UserCtx

MAX_UPLOAD = 100 * 1024 * 1024
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
    b"\x00\x00\x00IEND\xaeB`\x82"
)
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
KEY = re.compile(r"[0-9a-f]{32}")


def upload_raw(
    user: UserCtx, data: bytes, content_type: str = "application/octet-stream", **query: str
) -> Response:
    return user.client.request(
        "POST", "/v1/uploads", body=data, headers={"Content-Type": content_type}, query=query
    )


def upload_multipart(
    user: UserCtx, data: bytes, filename: str, claimed_type: str = "image/png"
) -> Response:
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {claimed_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return user.client.request(
        "POST",
        "/v1/uploads",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


def make_channel(owner: UserCtx, *members: UserCtx) -> str:
    body = {"name": "files", "kind": "private", "member_ids": [m.user_id for m in members]}
    channel_id: str = expect(owner.client.post("/v1/channels", body), 201)["channel_id"]
    return channel_id


def attach(user: UserCtx, channel_id: str, upload_id: str) -> Any:
    body = {"text": "see attached", "upload_ids": [upload_id]}
    return expect(user.client.post(f"/v1/channels/{channel_id}/messages", body), 201)


@pytest.fixture(scope="module")
def upload_dir(stack: NativeTarget) -> Path:
    assert stack.dir is not None
    return stack.dir / "uploads"


def stored_files(upload_dir: Path) -> list[Path]:
    return [p for p in upload_dir.rglob("*") if p.is_file()]


def assert_served_as_attachment(resp: Response, data: bytes) -> None:
    __tracebackhide__ = True
    assert resp.status == 200, f"download must answer 200 (got {resp})"
    assert resp.body == data, "downloaded bytes must equal the uploaded bytes"
    assert resp.headers["content-disposition"].startswith("attachment"), resp.headers
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "no-store" in resp.headers["cache-control"]
    assert resp.headers["content-length"] == str(len(data))
    assert resp.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'


# --- storing ----------------------------------------------------------------------------------


def test_raw_upload_records_size_sha256_and_sniffed_type(app: AppCtx) -> None:
    user = app.user()
    created = expect(upload_raw(user, PNG, "text/html", filename="dot.png"), 201)
    assert created["upload_id"].startswith("up_")
    assert created["size"] == len(PNG)
    assert created["sha256"] == hashlib.sha256(PNG).hexdigest()
    # The claim (text/html) is ignored: the bytes are a PNG.
    assert created["content_type"] == "image/png"
    assert created["filename"] == "dot.png"
    resp = user.client.get(f"/v1/uploads/{created['upload_id']}")
    assert_served_as_attachment(resp, PNG)
    assert resp.headers["content-type"] == "image/png"


def test_multipart_upload_is_stored_like_a_raw_one(app: AppCtx) -> None:
    user = app.user()
    data = "plain text, ünïcödé\n".encode() * 50
    created = expect(upload_multipart(user, data, "notes.txt", "application/pdf"), 201)
    assert created["sha256"] == hashlib.sha256(data).hexdigest()
    assert created["size"] == len(data)
    assert created["content_type"] == "text/plain"
    assert created["filename"] == "notes.txt"
    resp = user.client.get(f"/v1/uploads/{created['upload_id']}")
    assert_served_as_attachment(resp, data)
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"


def test_a_multipart_body_with_two_files_is_refused(app: AppCtx, upload_dir: Path) -> None:
    user = app.user()
    before = set(stored_files(upload_dir))
    boundary = "b0undary"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\naaa\r\n'
    )
    body = (part + part + f"--{boundary}--\r\n").encode()
    resp = user.client.request(
        "POST",
        "/v1/uploads",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status == 400, f"two file parts must be refused with 400 (got {resp})"
    assert set(stored_files(upload_dir)) == before, "a refused upload must leave no file behind"


def test_an_empty_upload_is_refused(app: AppCtx) -> None:
    resp = upload_raw(app.user(), b"")
    assert resp.status == 400, f"an empty upload must be refused (got {resp})"


def test_uploading_needs_a_user_token(app: AppCtx) -> None:
    resp = app.base.request("POST", "/v1/uploads", body=PNG, headers={"Content-Type": "image/png"})
    assert resp.status == 401, f"an anonymous upload must be refused with 401 (got {resp})"


@pytest.mark.parametrize(
    ("data", "claimed", "name"),
    [(HTML, "image/png", "evil.png"), (SVG, "image/svg+xml", "logo.svg")],
    ids=["html-as-png", "svg-with-script"],
)
def test_markup_is_never_labelled_an_image_nor_rendered(
    app: AppCtx, data: bytes, claimed: str, name: str
) -> None:
    """Stored XSS through an upload: HTML or SVG claimed as an image must not render inline."""
    user = app.user()
    created = expect(upload_multipart(user, data, name, claimed), 201)
    assert not created["content_type"].startswith("image/"), created
    assert created["content_type"] in {"application/octet-stream", "text/html"}, created
    resp = user.client.get(f"/v1/uploads/{created['upload_id']}")
    assert_served_as_attachment(resp, data)
    assert not resp.headers["content-type"].startswith(("image/", "text/html")), resp.headers


@pytest.mark.parametrize(
    ("raw_name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("re\x00port\r\n.pdf", "report.pdf"),
        ("x" * 1000 + ".txt", "x" * 251 + ".txt"),
    ],
    ids=["dot-dot-slash", "backslashes", "nul-and-crlf", "very-long"],
)
def test_hostile_filenames_are_data_and_the_key_is_generated(
    app: AppCtx, upload_dir: Path, raw_name: str, expected: str
) -> None:
    user = app.user()
    before = set(stored_files(upload_dir))
    data = f"payload {uuid.uuid4()}".encode()
    created = expect(upload_raw(user, data, filename=raw_name), 201)
    assert created["filename"] == expected
    new = set(stored_files(upload_dir)) - before
    assert len(new) == 1, f"one new stored file expected (got {sorted(map(str, new))})"
    (path,) = new
    assert KEY.fullmatch(path.name), f"stored file name must be a generated key (got {path.name})"
    assert path.read_bytes() == data
    resp = user.client.get(f"/v1/uploads/{created['upload_id']}")
    disposition = resp.headers["content-disposition"]
    assert disposition.startswith("attachment")
    assert f"filename*=UTF-8''{quote(expected, safe='')}" in disposition
    assert not any(c in disposition for c in "\r\n\x00"), disposition


# --- who may download -------------------------------------------------------------------------


def test_only_the_uploader_and_members_where_attached_can_download(
    app: AppCtx, other_app: AppCtx
) -> None:
    uploader, member, outsider = app.user(), app.user(), app.user()
    foreigner = other_app.user()
    created = expect(upload_raw(uploader, PNG), 201)
    path = f"/v1/uploads/{created['upload_id']}"

    # Not attached anywhere yet: the uploader only.
    assert uploader.client.get(path).status == 200
    for who in (member, outsider, foreigner):
        resp = who.client.get(path)
        assert resp.status == 404, f"{who.user_id} must not see an unattached upload ({resp})"
        assert resp.body != PNG

    channel_id = make_channel(uploader, member)
    attach(uploader, channel_id, created["upload_id"])
    assert_served_as_attachment(member.client.get(path), PNG)
    for who in (outsider, foreigner):
        resp = who.client.get(path)
        assert resp.status == 404, f"{who.user_id} is no member and must get 404 ({resp})"
    # An anonymous request gets 401, never the bytes.
    assert app.base.get(path).status == 401


def test_a_member_cannot_attach_someone_elses_upload(app: AppCtx) -> None:
    """Otherwise any member could exfiltrate any upload id into a channel they can read."""
    uploader, thief = app.user(), app.user()
    created = expect(upload_raw(uploader, PNG), 201)
    channel_id = make_channel(thief)
    body = {"text": "mine now", "upload_ids": [created["upload_id"]]}
    resp = thief.client.post(f"/v1/channels/{channel_id}/messages", body)
    assert resp.status == 409, f"attaching another user's upload must fail (got {resp})"
    assert thief.client.get(f"/v1/uploads/{created['upload_id']}").status == 404


def test_a_bad_upload_id_is_400_and_an_unknown_one_404(app: AppCtx) -> None:
    user = app.user()
    assert user.client.get("/v1/uploads/up_doesnotexist").status == 404
    assert user.client.get("/v1/uploads/%2e%2e%2fetc").status in {400, 404}


# --- size limits ------------------------------------------------------------------------------


def test_the_edge_refuses_a_body_over_100_mb_from_its_length(chat: Any, app: AppCtx) -> None:
    """Only the declared length is sent: the refusal must come before any body is read."""
    user = app.user()
    url = urlsplit(chat.base_url)
    conn = http.client.HTTPSConnection(
        url.hostname or "", url.port or 443, context=chat.ssl_context(), timeout=10
    )
    try:
        conn.putrequest("POST", "/v1/uploads")
        conn.putheader("Authorization", f"Bearer {user.access_token}")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(MAX_UPLOAD + 1))
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 413, f"an over-limit upload must get 413 (got {resp.status})"
    finally:
        conn.close()


def test_the_api_itself_caps_a_chunked_body(
    stack: NativeTarget, app: AppCtx, upload_dir: Path
) -> None:
    """Behind the edge, the API still stops at 100 MiB when no length was declared, and keeps
    nothing of it."""
    user = app.user()
    worker = urlsplit(stack.worker_urls[0])
    before = set(stored_files(upload_dir))
    conn = http.client.HTTPConnection(worker.hostname or "", worker.port or 80, timeout=30)
    chunk = b"\0" * (1024 * 1024)
    try:
        conn.putrequest("POST", "/v1/uploads")
        conn.putheader("Authorization", f"Bearer {user.access_token}")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for _ in range(MAX_UPLOAD // len(chunk) + 2):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the API may answer and close before we finish sending
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 413, f"a chunked body over the cap must get 413 (got {resp.status})"
    finally:
        conn.close()
    assert set(stored_files(upload_dir)) == before, "nothing of a refused upload may be kept"

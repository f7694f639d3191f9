"""Uploads: a body over the documented limit is refused with 413 before it is sent, markup
disguised as an image is never served so that a browser would render it, and hostile filenames
never become paths or headers."""

from __future__ import annotations

import re
import secrets
import socket
import unicodedata
from urllib.parse import unquote, urlsplit

import pytest

from checks._chat import call
from checks.security._actors import Actors
from preflight.client import Response
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

LIMIT_BYTES = 100 * 1024 * 1024  # system/chatsdk/API.md: over 100 MB, 413 from the edge
TIMEOUT_S = 10.0
# Types a browser renders or executes when a response is opened inline.
RENDERED_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
)
DISGUISED = {
    "html as png": (
        b"<!doctype html><html><script>alert(document.domain)</script></html>",
        "x.png",
    ),
    "svg as png": (
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        "x.png",
    ),
    "script as jpeg": (b"<script>alert(1)</script>", "x.jpg"),
    "html named .html": (b"<html><body onload=alert(1)></body></html>", "page.html"),
}
HOSTILE_NAMES = {
    "path traversal": "../../../../etc/passwd",
    "encoded traversal": "..%2f..%2f..%2fetc%2fpasswd",
    "windows traversal": "..\\..\\windows\\win.ini",
    "right-to-left override": "invoice\u202egnp.exe",
    "300 characters": "a" * 296 + ".png",
    "header injection": 'x.png"; filename=evil.html',
    "dot file": ".htaccess",
}
GENERATED_ID = re.compile(r"[A-Za-z0-9_-]{8,128}")


def multipart(content: bytes, filename: str, content_type: str) -> tuple[bytes, str]:
    boundary = "preflight" + secrets.token_hex(8)
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def upload(actors: Actors, content: bytes, filename: str, content_type: str) -> Response:
    body, ctype = multipart(content, filename, content_type)
    return call(
        actors.owner.client, "POST", "/v1/uploads", body=body, headers={"Content-Type": ctype}
    )


@pytest.mark.checklist("SEC-UPLOAD-LIMITS")
def test_an_upload_over_the_limit_is_refused_before_it_is_sent(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog
) -> None:
    """Unrestricted uploads allow storage exhaustion."""
    host, port = target.edge_address
    context = target.ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    size = LIMIT_BYTES + 1
    head = (
        f"POST /v1/uploads HTTP/1.1\r\nHost: {urlsplit(target.edge_url).netloc}\r\n"
        f"Authorization: Bearer {actors.owner.access_token}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    with (
        socket.create_connection((host, port), timeout=TIMEOUT_S) as plain,
        context.wrap_socket(plain, server_hostname=host) as tls,
    ):
        # Only the headers and one chunk: a limit enforced from Content-Length answers now.
        tls.sendall(head + b"\x89PNG\r\n\x1a\n" + b"\0" * 65536)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
    status_line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    evidence.request(
        method="POST", url=target.edge_url + "/v1/uploads", status=None, body=answer[:2048]
    )
    evidence.note(f"declared {size} bytes, sent 64 KiB: {status_line or 'no answer'}")
    assert status_line.split(" ")[1:2] == ["413"], (
        f"an upload declaring {size} bytes (over {LIMIT_BYTES}) must be refused with 413 before "
        f"its body is sent (got {status_line or f'no answer within {TIMEOUT_S} s'})"
    )


@pytest.mark.checklist("SEC-UPLOAD-LIMITS")
@pytest.mark.parametrize("case", list(DISGUISED))
def test_markup_disguised_as_an_image_is_never_served_inline(
    actors: Actors, evidence: EvidenceLog, case: str
) -> None:
    """An upload rendered in the API's origin is stored cross-site scripting."""
    content, filename = DISGUISED[case]
    claimed = "text/html" if filename.endswith(".html") else "image/png"
    stored = upload(actors, content, filename, claimed)
    evidence.request(stored)
    if stored.status in (400, 415):
        return  # refused outright: nothing to serve
    assert stored.status == 201, f"an upload of {case} must be stored or refused (got {stored})"
    upload_id = stored.json()["upload_id"]
    served = call(actors.owner.client, "GET", f"/v1/uploads/{upload_id}")
    evidence.request(served)
    ctype = served.headers.get("content-type", "").split(";")[0].strip().lower()
    disposition = served.headers.get("content-disposition", "")
    nosniff = served.headers.get("x-content-type-options", "").lower()
    assert disposition.lower().startswith("attachment"), (
        f"an upload of {case} must be served as an attachment (got Content-Disposition "
        f"{disposition or 'none'})"
    )
    assert nosniff == "nosniff", f"an upload of {case} must be served with nosniff"
    inert = ctype not in RENDERED_TYPES and not ctype.startswith("image/")
    assert inert, f"an upload of {case} must not be served as {ctype} (it is markup, not an image)"


@pytest.mark.checklist("SEC-UPLOAD-LIMITS")
@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_hostile_filenames_are_stored_under_generated_ids(
    actors: Actors, evidence: EvidenceLog, case: str
) -> None:
    """A client-chosen filename used as a path or header writes anywhere or splits headers."""
    name = HOSTILE_NAMES[case]
    stored = upload(actors, b"plain text\n", name, "text/plain")
    evidence.request(stored)
    if stored.status == 400:
        return  # refused outright
    assert stored.status == 201, f"an upload named {name!r} must be stored or refused ({stored})"
    upload_id = str(stored.json()["upload_id"])
    generated = bool(GENERATED_ID.fullmatch(upload_id)) and "passwd" not in upload_id
    assert generated, f"an upload named {name!r} must get a generated id (got {upload_id!r})"
    served = call(actors.owner.client, "GET", f"/v1/uploads/{upload_id}")
    disposition = served.headers.get("content-disposition", "")
    evidence.request(served)
    names = re.findall(r"filename\*?=(?:UTF-8'')?\"?([^\";]*)", disposition)
    decoded = [unquote(n) for n in names]
    bad = [
        n
        for n in decoded
        if "/" in n
        or "\\" in n
        or n.startswith(".")
        or len(n) > 255
        or any(unicodedata.category(c) in ("Cc", "Cf") for c in n)
        or n.lower().endswith(".html")
    ]
    plain = served.status == 200 and disposition.count("filename=") <= 1 and not bad
    assert plain, (
        f"the download of an upload named {name!r} must name a plain file (got "
        f"Content-Disposition {disposition!r})"
    )

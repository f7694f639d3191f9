"""What the edge does with plain HTTP: browsers are sent to HTTPS, the API is never served."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest

from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

TIMEOUT_S = 10.0
PERMANENT_REDIRECTS = (301, 308)
REDIRECTS = (301, 302, 303, 307, 308)


@pytest.mark.checklist("SEC-HTTP-REDIRECT")
@pytest.mark.parametrize(
    ("method", "path", "must_redirect"),
    [
        # A browser typing the bare host name: it must land on HTTPS.
        pytest.param("GET", "/", True, id="browser-get"),
        # API clients may be redirected or refused; a redirected POST has already sent its
        # credentials in clear text, so refusing is the better answer there.
        pytest.param("GET", "/v1/health/ready", False, id="api-get"),
        pytest.param("POST", "/v1/channels", False, id="api-post"),
    ],
)
def test_plain_http_is_redirected_or_refused(
    target: ProbeTarget, evidence: EvidenceLog, method: str, path: str, must_redirect: bool
) -> None:
    """Serving content over plain HTTP exposes tokens and messages."""
    base = target.http_url  # skips when the target has no plain-HTTP port
    url = base.rstrip("/") + path
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=TIMEOUT_S)
    try:
        body = b"{}" if method == "POST" else None
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        content = response.read()
    finally:
        conn.close()
    headers = {k.lower(): v for k, v in response.getheaders()}
    evidence.request(method=method, url=url, status=response.status, headers=headers, body=content)
    location = headers.get("location", "")
    got = f"{response.status}{f' to {location}' if location else ''}"
    redirected = location.startswith("https://") and response.status in REDIRECTS
    if must_redirect:
        redirected = redirected and response.status in PERMANENT_REDIRECTS
        assert redirected, (
            f"plain-HTTP {method} {url} must be redirected to https:// with 301 or 308 (got {got})"
        )
    else:
        assert redirected or 400 <= response.status < 500, (
            f"plain-HTTP {method} {url} must be redirected to https:// or refused with a 4xx, "
            f"never served (got {got})"
        )

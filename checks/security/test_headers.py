"""Security headers on every kind of HTTPS response of the edge: proxied successes and errors,
the WebSocket location, downloads, static files, the web client's page, and what the edge
answers itself (404, 405, 413, 429)."""

from __future__ import annotations

import re

import pytest

from checks.security._actors import Actors
from checks.security._edge import (
    FLOOD_PATH,
    MAX_BODY_BYTES,
    plain_flood,
    raw_exchange,
    request_head,
)
from preflight.client import Response
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

ONE_YEAR_S = 31_536_000
# Each kind of response is answered by a different part of the stack, and headers tend to go
# missing on the paths nobody looked at (nginx drops add_header from error pages without
# `always`, a location with its own add_header loses the inherited ones).
ENDPOINTS = [
    pytest.param("api-200", id="api-200"),
    pytest.param("api-401", id="api-401"),
    pytest.param("api-404", id="api-404"),
    pytest.param("websocket-426", id="websocket-426"),
    pytest.param("edge-404", id="edge-404"),
    pytest.param("edge-405", id="edge-405"),
    pytest.param("edge-413", id="edge-413"),
    pytest.param("edge-429", id="edge-429"),
    pytest.param("download", id="download"),
    pytest.param("static", id="static"),
    pytest.param("web-client", id="web-client"),
]
SIMPLE_GETS = {
    "api-200": "/v1/health/ready",
    "api-401": "/v1/channels",
    "api-404": "/v1/no-such-resource",
    "websocket-426": "/v1/realtime",
    "edge-404": "/",
    "static": "/.well-known/security.txt",
    "web-client": "/app/",
}
# Sources that let a script, object or frame come from anywhere (or from the page itself).
PERMISSIVE_SOURCES = ("*", "'unsafe-inline'", "'unsafe-eval'", "data:", "blob:", "http:", "https:")
STRICT_REFERRER_POLICIES = frozenset(
    {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}
)
REFERRER_POLICIES = STRICT_REFERRER_POLICIES | {
    "no-referrer-when-downgrade",
    "origin",
    "origin-when-cross-origin",
    "unsafe-url",
}
VERSION = re.compile(r"\d+\.\d+|/\s*\d")
BANNER_HEADERS = ("x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-generator")


def fetch(
    target: ProbeTarget, evidence: EvidenceLog, kind: str, request: pytest.FixtureRequest
) -> tuple[str, Response]:
    """The URL and the response of one kind; skips when the target cannot be made to give it."""
    if kind in SIMPLE_GETS:
        path = SIMPLE_GETS[kind]
        response = target.http.get(path)
    elif kind == "edge-405":
        path = "/"
        response = raw_exchange(target, request_head(target, "TRACE", path)).as_response(
            "TRACE", path
        )
    elif kind == "edge-413":
        path = "/v1/uploads"
        head = request_head(
            target,
            "POST",
            path,
            {"Content-Length": str(MAX_BODY_BYTES + 1), "Expect": "100-continue"},
        )
        response = raw_exchange(target, head, method="POST").as_response("POST", path)
        if response.status != 413:
            pytest.skip(f"the edge did not refuse a body over the limit (got {response.status})")
    elif kind == "edge-429":
        path = FLOOD_PATH
        limited = plain_flood(target).first(429)
        if limited is None:
            pytest.skip(f"a flood of {path} got no 429 to judge (SEC-RATELIMIT judges that)")
        response = limited
    else:  # download: an upload, fetched back by its owner
        actors: Actors = request.getfixturevalue("actors")
        path = f"/v1/uploads/{actors.objects.upload_id}"
        response = actors.owner.client.get(path)
    evidence.request(response)
    return target.edge_url + path, response


def header(response: Response, url: str, name: str) -> str:
    """The header's value; fails the probe when it is missing."""
    __tracebackhide__ = True
    value = response.headers.get(name.lower())
    assert value is not None, f"{name} on {url} must be sent (got no {name} header)"
    return value.strip()


def csp_directives(policy: str) -> dict[str, list[str]]:
    """CSP directive name -> sources; the first occurrence of a directive wins (CSP3 4.2.1)."""
    directives: dict[str, list[str]] = {}
    for part in policy.split(",", maxsplit=1)[0].split(";"):
        tokens = part.split()
        if tokens:
            directives.setdefault(tokens[0].lower(), [t.lower() for t in tokens[1:]])
    return directives


def require_restrictive(
    url: str, policy: str, what: str, directive: str, sources: list[str] | None
) -> None:
    __tracebackhide__ = True
    assert sources is not None, (
        f"CSP on {url} must restrict {what} with {directive} or default-src (got {policy!r})"
    )
    loose = [s for s in sources if s in PERMISSIVE_SOURCES]
    assert not loose, f"CSP on {url} must not allow {what} from {', '.join(loose)} (got {policy!r})"


@pytest.mark.checklist("SEC-HDR-HSTS")
@pytest.mark.parametrize("path", ENDPOINTS)
def test_hsts_is_at_least_one_year(
    target: ProbeTarget, evidence: EvidenceLog, path: str, request: pytest.FixtureRequest
) -> None:
    """Without HSTS a first plain-HTTP request can be intercepted and downgraded."""
    url, response = fetch(target, evidence, path, request)
    hsts = header(response, url, "Strict-Transport-Security")
    match = re.search(r"(?i)(?:^|;)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:;|$)", hsts)
    assert match, f"HSTS on {url} must carry a numeric max-age (got {hsts!r})"
    max_age = int(match[1])
    evidence.figure("hsts_max_age", max_age, "s")
    assert max_age >= ONE_YEAR_S, f"HSTS max-age on {url} must be >= {ONE_YEAR_S} (got {max_age})"


@pytest.mark.checklist("SEC-HDR-NOSNIFF")
@pytest.mark.parametrize("path", ENDPOINTS)
def test_nosniff_is_sent(
    target: ProbeTarget, evidence: EvidenceLog, path: str, request: pytest.FixtureRequest
) -> None:
    """MIME sniffing can turn uploaded content into executable script."""
    url, response = fetch(target, evidence, path, request)
    value = header(response, url, "X-Content-Type-Options")
    assert value.lower() == "nosniff", (
        f"X-Content-Type-Options on {url} must be nosniff (got {value!r})"
    )


@pytest.mark.checklist("SEC-HDR-CSP")
@pytest.mark.parametrize("path", ENDPOINTS)
def test_csp_restricts_scripts_objects_and_framing(
    target: ProbeTarget, evidence: EvidenceLog, path: str, request: pytest.FixtureRequest
) -> None:
    """Without CSP one injection becomes script execution in users' sessions."""
    url, response = fetch(target, evidence, path, request)
    policy = header(response, url, "Content-Security-Policy")
    directives = csp_directives(policy)
    default = directives.get("default-src")
    require_restrictive(url, policy, "scripts", "script-src", directives.get("script-src", default))
    objects = directives.get("object-src", default)
    assert objects == ["'none'"], (
        f"CSP on {url} must set object-src (or default-src) to 'none' (got {policy!r})"
    )
    require_restrictive(
        url, policy, "framing", "frame-ancestors", directives.get("frame-ancestors")
    )


@pytest.mark.checklist("SEC-HDR-FRAME")
@pytest.mark.parametrize("path", ENDPOINTS)
def test_framing_is_denied(
    target: ProbeTarget, evidence: EvidenceLog, path: str, request: pytest.FixtureRequest
) -> None:
    """Framable pages allow clickjacking."""
    url, response = fetch(target, evidence, path, request)
    xfo = response.headers.get("x-frame-options", "").strip().upper()
    ancestors = csp_directives(response.headers.get("content-security-policy", "")).get(
        "frame-ancestors"
    )
    denied_by_csp = ancestors in (["'none'"], ["'self'"])
    assert xfo in ("DENY", "SAMEORIGIN") or denied_by_csp, (
        f"framing of {url} must be denied by X-Frame-Options DENY or SAMEORIGIN, or CSP "
        f"frame-ancestors 'none' or 'self' (got X-Frame-Options {xfo or 'none'}, "
        f"frame-ancestors {' '.join(ancestors) if ancestors else 'none'})"
    )


@pytest.mark.checklist("SEC-HDR-REFERRER")
@pytest.mark.parametrize("path", ENDPOINTS)
def test_referrer_policy_is_strict(
    target: ProbeTarget, evidence: EvidenceLog, path: str, request: pytest.FixtureRequest
) -> None:
    """Full referrers leak channel ids and tokens in URLs to third parties."""
    url, response = fetch(target, evidence, path, request)
    value = header(response, url, "Referrer-Policy")
    # Browsers apply the last policy in the list that they understand.
    known = [p for p in (t.strip().lower() for t in value.split(",")) if p in REFERRER_POLICIES]
    effective = known[-1] if known else None
    assert effective in STRICT_REFERRER_POLICIES, (
        f"Referrer-Policy on {url} must be strict-origin-when-cross-origin or stricter "
        f"(got {value!r})"
    )


@pytest.mark.checklist("SEC-SERVER-TOKENS")
@pytest.mark.parametrize("path", ENDPOINTS)
def test_no_software_versions_are_revealed(
    target: ProbeTarget, evidence: EvidenceLog, path: str, request: pytest.FixtureRequest
) -> None:
    """Version banners help attackers pick exploits."""
    url, response = fetch(target, evidence, path, request)
    server = response.headers.get("server", "")
    assert not VERSION.search(server), (
        f"the Server header on {url} must not reveal a version (got {server!r})"
    )
    banners = {name: response.headers[name] for name in BANNER_HEADERS if name in response.headers}
    assert not banners, f"{url} must not send software banners (got {banners})"

"""The web client's Content-Security-Policy and the API's, side by side. The client under /app/
needs its own scripts, styles and a connection to the API on its origin; that relaxation must
stay in its location: everywhere else nothing may load (default-src 'none'). And the client's
own policy allows its origin only: no inline code, no eval, no other origin, no framing."""

from __future__ import annotations

import pytest

from checks.security.test_headers import csp_directives
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget
from preflight.probe.web import WEB_PATH

# Every kind of content a policy can allow; outside the web client each must be 'none'.
FETCH_DIRECTIVES = (
    "script-src",
    "style-src",
    "img-src",
    "connect-src",
    "font-src",
    "frame-src",
    "worker-src",
    "media-src",
    "manifest-src",
    "object-src",
)
OUTSIDE = [
    pytest.param("/v1/health/ready", id="api-200"),
    pytest.param("/v1/channels", id="api-401"),
    pytest.param("/v1/no-such-resource", id="api-404"),
    pytest.param("/v1/realtime", id="websocket-426"),
    pytest.param("/", id="edge-404"),
    pytest.param("/.well-known/security.txt", id="security-txt"),
    pytest.param(WEB_PATH + "no-such-file", id="next-to-the-web-client"),
]
# What the web client may allow, per directive (default-src itself must be 'none').
CLIENT_ALLOWED = {
    "script-src": {"'self'"},
    "style-src": {"'self'"},
    "img-src": {"'self'", "data:", "blob:"},
    "font-src": {"'self'"},
    "manifest-src": {"'self'"},
}


def _policy(target: ProbeTarget, evidence: EvidenceLog, path: str) -> tuple[str, str]:
    __tracebackhide__ = True
    response = target.http.get(path)
    evidence.request(response)
    url = target.edge_url + path
    policy = response.headers.get("content-security-policy", "")
    assert policy, f"{url} must send a Content-Security-Policy (got none)"
    return url, policy


@pytest.mark.checklist("SEC-HDR-CSP")
@pytest.mark.parametrize("path", OUTSIDE)
def test_the_api_policy_stays_strict_outside_the_web_client(
    target: ProbeTarget, evidence: EvidenceLog, path: str
) -> None:
    """A policy relaxed for the web client must not spread to responses that load nothing."""
    url, policy = _policy(target, evidence, path)
    directives = csp_directives(policy)
    default = directives.get("default-src")
    loose = {
        name: " ".join(sources or ["(unset)"])
        for name in FETCH_DIRECTIVES
        if (sources := directives.get(name, default)) != ["'none'"]
    }
    assert not loose, (
        f"CSP on {url} must allow nothing to load outside the web client ('none' for every "
        f"fetch directive; got {', '.join(f'{k} {v}' for k, v in loose.items())} in {policy!r})"
    )


@pytest.mark.checklist("SEC-HDR-CSP")
def test_the_web_clients_policy_allows_only_its_own_origin(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Inline script, eval or a foreign origin turn one injection into script in users' sessions."""
    client = target.web.client(evidence)
    host = target.edge_url.split("://", 1)[1].rstrip("/").lower()
    allowed = {**CLIENT_ALLOWED, "connect-src": {"'self'", f"wss://{host}", f"https://{host}"}}
    problems = []
    for path in (WEB_PATH, *client.assets[:1]):
        url, policy = _policy(target, evidence, path)
        directives = csp_directives(policy)
        default = directives.get("default-src")
        if default != ["'none'"]:
            problems.append(f"default-src is {' '.join(default or ['(unset)'])} on {url}")
        for name in FETCH_DIRECTIVES:
            sources = set(directives.get(name, default) or [])
            extra = sources - allowed.get(name, {"'none'"}) - {"'none'"}
            if extra:
                problems.append(f"{name} allows {' '.join(sorted(extra))} on {url}")
        for name, fine in (
            ("frame-ancestors", {"'none'", "'self'"}),
            ("base-uri", {"'none'", "'self'"}),
        ):
            sources = set(directives.get(name) or [])
            if not sources or sources - fine:
                problems.append(f"{name} is {' '.join(sorted(sources)) or '(unset)'} on {url}")
    assert not problems, (
        f"the web client's CSP must allow its own origin only, with no inline code, no eval and "
        f"no framing (not so: {'; '.join(problems[:4])})"
    )

"""The edge's HTTP surface: methods nobody needs, files that must never be served, internal
endpoints, and requests whose framing two parsers could read differently (smuggling)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest

from checks.security._edge import (
    RawReply,
    listeners,
    raw_exchange,
    request_head,
    socket_owners,
    target_processes,
)
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget


def _exchange(
    target: ProbeTarget,
    evidence: EvidenceLog,
    head: str,
    body: bytes,
    method: str,
    *,
    check_closed: bool = False,
) -> RawReply:
    reply = raw_exchange(target, head, body, method=method, check_closed=check_closed)
    evidence.request(reply.as_response(method, head.split(" ", 2)[1]))
    return reply


@pytest.mark.checklist("SEC-PORTS-CLOSED")
@pytest.mark.parametrize("method", ["TRACE", "TRACK", "CONNECT", "PROPFIND", "FOO"])
@pytest.mark.parametrize("path", ["/", "/v1/health/ready"])
def test_unneeded_methods_are_refused(
    target: ProbeTarget, evidence: EvidenceLog, method: str, path: str
) -> None:
    """TRACE echoes credentials back; unknown methods reach code nobody tested."""
    target_path = "localhost:443" if method == "CONNECT" else path
    reply = _exchange(target, evidence, request_head(target, method, target_path), b"", method)
    echoed = b"authorization" in reply.body.lower() or b"trace " in reply.body.lower()[:10]
    refused = 400 <= reply.status < 500 and not echoed
    assert refused, (
        f"{method} {target.edge_url}{path} must be refused with a 4xx (got {reply.status}"
        f"{', echoing the request' if echoed else ''})"
    )


@pytest.mark.checklist("SEC-PORTS-CLOSED")
@pytest.mark.parametrize(
    "path",
    [
        "/.git/HEAD",
        "/.git/config",
        "/.env",
        "/v1/.env",
        "/metrics",
        "/v1/metrics",
        "/server-status",
    ],
)
def test_internal_files_and_endpoints_are_not_served(
    target: ProbeTarget, evidence: EvidenceLog, path: str
) -> None:
    """Source control, environment files and metrics leak secrets and internals."""
    response = target.http.get(path)
    evidence.request(response)
    assert response.status in (401, 403, 404), (
        f"{target.edge_url}{path} must not be served from outside (got {response.status})"
    )


@pytest.mark.checklist("SEC-PORTS-CLOSED")
@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param(
            {"Content-Length": "4", "Transfer-Encoding": "chunked"}, b"0\r\n\r\n", id="cl-and-te"
        ),
        pytest.param({"Content-Length": "2\r\nContent-Length: 3"}, b"{}", id="duplicate-cl"),
        # RFC 9112 6.1: an unknown transfer coding may also be answered 501.
        pytest.param({"Transfer-Encoding": "xchunked"}, b"0\r\n\r\n", id="unknown-te"),
    ],
)
def test_ambiguous_framing_is_refused(
    target: ProbeTarget, evidence: EvidenceLog, headers: dict[str, str], body: bytes
) -> None:
    """A request two parsers frame differently smuggles a second request past the edge."""
    head = request_head(
        target, "POST", "/v1/channels", {"Content-Type": "application/json", **headers}
    )
    reply = _exchange(target, evidence, head, body, "POST", check_closed=True)
    framing = ", ".join(f"{k}: {v}" for k, v in headers.items()).replace("\r\n", ", ")
    assert reply.status in (400, 501), (
        f"POST {target.edge_url}/v1/channels with {framing} must be refused with 400 or 501 "
        f"(got {reply.status})"
    )
    assert reply.closed, (
        f"the edge must close the connection after refusing {framing} (it kept it open)"
    )


@pytest.mark.checklist("SEC-PORTS-CLOSED")
def test_only_the_edge_listens_beyond_loopback(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Every extra open port is attack surface that nobody monitors."""
    edge_ports = {target.edge_address[1]}
    if target.info.edge.http_url:
        edge_ports.add(urlsplit(target.info.edge.http_url).port or 80)
    exposed = []
    for component, address, port in _listeners(target):
        evidence.note(f"the target listens on {address}:{port} ({component})")
        if not ipaddress.ip_address(address).is_loopback and port not in edge_ports:
            exposed.append(f"{address}:{port} ({component})")
    assert not exposed, (
        f"only the edge ports {sorted(edge_ports)} may listen beyond loopback on the target host "
        f"(got {', '.join(sorted(exposed))})"
    )


def _listeners(target: ProbeTarget) -> list[tuple[str, str, int]]:
    """(component, address, port) the target's host accepts connections on: as the target
    says (Drills.listeners), else the listening sockets of the processes of an edge on this
    host (skips when the edge runs elsewhere)."""
    if target.info.drills.listeners is not None:
        return list(target.info.drills.listeners())
    pids = target_processes(target)
    owners = socket_owners()
    return [
        (f"pid {min(pids & owners.get(listener.inode, set()))}", listener.address, listener.port)
        for listener in listeners()
        if pids & owners.get(listener.inode, set())
    ]

"""The API workers' own /metrics: RED metrics on every worker, hidden from the public edge,
clean for promtool, and business counters that move under traffic these probes send."""

from __future__ import annotations

import secrets

import pytest

from checks._chat import Tenant, realtime, send
from checks.monitoring._monitoring import (
    POLL_S,
    WAIT_S,
    last_lines,
    run,
    tool,
)
from preflight.client import expect
from preflight.evidence import EvidenceLog
from preflight.polling import until
from preflight.probe.metrics import families, samples, scrape, scrape_ok
from preflight.probe.target import ProbeTarget

# Request count (with the status that tells errors apart) and the latency histogram.
RED_FAMILIES = {"http_requests_total": "counter", "http_request_duration_seconds": "histogram"}
EDGE_METRICS_PATHS = ("/metrics", "/v1/metrics")


def reaches(target: ProbeTarget, value: float, name: str, **labels: str) -> bool:
    """Whether the workers' sum of a metric (see total) reaches `value` within WAIT_S."""
    return until(lambda: target.metrics.total(name, **labels) >= value, WAIT_S, interval=POLL_S)


@pytest.mark.checklist("MON-METRICS-ENDPOINT")
def test_each_worker_exposes_red_metrics_and_the_edge_does_not(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Without RED metrics nobody sees latency or errors; public metrics leak internals."""
    # A 401 answered by the API, so the error side of the counter has a series.
    evidence.request(target.http.get("/v1/channels"))
    for url in target.metrics.urls:
        status, ctype, text = scrape(url)
        assert status == 200, f"GET {url} must answer 200 (got {status})"
        assert ctype.startswith("text/plain"), (
            f"{url} must use the Prometheus text format (got Content-Type {ctype!r})"
        )
        kinds = families(text)
        for name, kind in RED_FAMILIES.items():
            assert kinds.get(name) == kind, (
                f"{url} must expose {name} as a {kind} (got {kinds.get(name) or 'nothing'})"
            )
        statuses = {
            s.labels.get("status") for s in samples(text) if s.name == "http_requests_total"
        }
        assert statuses - {None}, (
            f"http_requests_total on {url} must carry a status label to count errors "
            f"(got series without one)"
        )
        evidence.note(f"{url}: statuses seen {sorted(s for s in statuses if s)}")
    for path in EDGE_METRICS_PATHS:
        response = target.http.get(path)
        evidence.request(response)
        leaked = response.status == 200 or b"# TYPE" in response.body
        assert not leaked, (
            f"{target.edge_url}{path} must not serve metrics from the public edge "
            f"(got {response.status} with {len(response.body)} bytes)"
        )


@pytest.mark.checklist("MON-METRICS-ENDPOINT")
def test_scraped_metrics_pass_promtool_check_metrics(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Badly named or typed metrics mislead every query built on them."""
    promtool = tool("promtool")
    for url in target.metrics.urls:
        code, out = run([promtool, "check", "metrics"], stdin=scrape_ok(url))
        evidence.attach(f"promtool check metrics {url}", out or "clean", "text/plain")
        clean = code == 0 and not out
        assert clean, (
            f"promtool check metrics on {url} must be clean (got exit {code}: {last_lines(out)})"
        )


UPLOADS = {"name": "http_requests_total", "method": "POST", "route": "/v1/uploads", "status": "201"}


@pytest.mark.checklist("MON-BUSINESS-METRICS")
def test_business_metrics_move_under_traffic(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Technical metrics can look healthy while users cannot chat."""
    world = Tenant.create(target)
    alice, bob = world.user("alice"), world.user("bob")
    channel = world.channel(alice, bob)

    sent = target.metrics.total("messages_sent_total")
    send(alice, channel, f"business metrics {secrets.token_hex(4)}")
    moved = reaches(target, sent + 1, "messages_sent_total")
    assert moved, f"messages_sent_total must grow after a message is sent (stayed at {sent:g})"

    sockets = target.metrics.total("active_websocket_connections")
    with realtime(target, bob):
        opened = reaches(target, sockets + 1, "active_websocket_connections")
        assert opened, (
            f"active_websocket_connections must count an open socket (stayed at {sockets:g})"
        )

    name, labels = UPLOADS["name"], {k: v for k, v in UPLOADS.items() if k != "name"}
    uploads = target.metrics.total(name, **labels)
    response = alice.client.request(
        "POST", "/v1/uploads", body=b"probe upload\n", headers={"Content-Type": "text/plain"}
    )
    evidence.request(response)
    expect(response, 201)
    counted = reaches(target, uploads + 1, name, **labels)
    assert counted, (
        f"uploads ({name} with {labels}) must grow after an upload (stayed at {uploads:g})"
    )
    evidence.figure("messages sent before", sent)
    evidence.figure("sockets before", sockets)
    evidence.figure("uploads before", uploads)


@pytest.mark.checklist("DEP-METRICS-FLOWING")
def test_request_metrics_grow_with_traffic(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """A deploy that breaks instrumentation blinds monitoring."""
    before = target.metrics.total("http_requests_total")
    sent = 10
    for _ in range(sent):
        expect(target.http.get("/v1/health/live"), 200)
    grew = reaches(target, before + sent, "http_requests_total")
    after = target.metrics.total("http_requests_total")
    evidence.figure("requests counted", after - before)
    assert grew, (
        f"http_requests_total over all workers must grow by at least {sent} after {sent} requests "
        f"through the edge (grew by {after - before:g})"
    )

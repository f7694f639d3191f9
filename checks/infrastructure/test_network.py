"""The network path to the system: the public name, the edge certificate, the balancing over
the API workers, and which ports answer from outside."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

import pytest

from checks.security._edge import (
    deployment_certificate,
    files_of_dump,
    host_addresses,
    is_local_address,
    live_config,
    parse,
    verified_handshake,
)
from preflight.client import polite
from preflight.evidence import EvidenceLog
from preflight.polling import until
from preflight.probe.target import ProbeTarget

CONNECT_TIMEOUT_S = 2.0
# Requests sent while a worker is down; each one must still be answered by another worker.
REQUESTS_WITH_A_DEAD_WORKER = 12
RESTART_TIMEOUT_S = 30.0


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@pytest.mark.checklist("INF-NET-DNS")
def test_the_public_name_resolves_and_answers_over_https(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Users cannot reach a service whose name does not resolve to it."""
    host, port = target.edge_address
    if _is_ip_literal(host):
        pytest.skip(
            f"the target's edge URL names the IP address {host}, not a host name, so there is "
            "no DNS record to judge; give edge_url with the public name to decide this item"
        )
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise AssertionError(f"the edge's name {host} must resolve (got {exc.strerror})") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    evidence.note(f"{host} resolves to {', '.join(addresses)}")
    if all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        pytest.skip(
            f"the target's edge URL names {host}, which resolves to this machine's loopback "
            f"only ({', '.join(addresses)}): no public DNS record to judge; give edge_url with "
            "the public name to decide this item"
        )
    response = target.http.get("/v1/health/live")
    evidence.request(response)
    assert response.status == 200, (
        f"https://{host}:{port}/v1/health/live must answer 200 through the name (got "
        f"{response.status})"
    )


@pytest.mark.checklist("INF-NET-CERT")
def test_the_certificate_chains_matches_and_is_current(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """An invalid certificate blocks clients or trains users to click through warnings."""
    deployment_certificate(target)
    host, port = target.edge_address
    edge = target.info.edge
    trust = (
        f"the root of the ACME CA the run started, {edge.ca_file}"
        if edge.run_ca
        else f"the CA the target declares, {edge.ca_file}"
        if edge.ca_file
        else "this machine's system trust store"
    )
    try:
        served = verified_handshake(target)
    except ssl.SSLCertVerificationError as exc:
        raise AssertionError(
            f"the certificate of {host}:{port} must chain to {trust}, match {host} and be "
            f"current (got {exc.verify_message or exc.reason})"
        ) from None
    certificate = served.certificate
    evidence.note(
        f"{certificate.subject.rfc4514_string()} issued by {certificate.issuer.rfc4514_string()}, "
        f"valid {certificate.not_valid_before_utc:%Y-%m-%d} to "
        f"{certificate.not_valid_after_utc:%Y-%m-%d}, verified against {trust} for {host}"
    )
    now = dt.datetime.now(dt.UTC)
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    assert start <= now < end, (
        f"the certificate of {host}:{port} must be valid now (got {start:%Y-%m-%d} to "
        f"{end:%Y-%m-%d})"
    )
    if edge.run_ca:
        pytest.skip(
            f"the certificate of {host}:{port} matches {host} and is current, but its chain "
            "verifies only to the root of the ACME CA this run started (pebble), not to a root "
            "clients trust: run against the real edge (a target file with its ca_file, or none "
            "for the system trust store) to decide this item"
        )


def _expected_workers(target: ProbeTarget) -> int | None:
    """How many API workers the target runs: those it gives an address of (the containers
    target's realtime replicas serve behind the edge too), else its api-* components, else the
    edge's upstream."""
    if target.info.drills.worker_urls:
        return len(target.info.drills.worker_urls)
    controlled = [name for name in target.info.drills.control if name.startswith("api-")]
    if controlled:
        return len(controlled)
    if not is_local_address(target.edge_address[0]):
        return None
    files = files_of_dump(live_config(target))
    tree = parse(files, next(iter(files)))
    servers = [
        server
        for http in tree
        if http.name == "http"
        for upstream in http.children("upstream")
        for server in upstream.children("server")
    ]
    return len(servers) or None


@pytest.mark.checklist("INF-NET-LB")
def test_requests_are_spread_over_every_worker(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Without balancing, one worker takes all traffic and its failure is an outage."""
    seen = target.metrics.runtime(evidence)
    expected = _expected_workers(target)
    evidence.note(f"workers answering through the edge: {sorted(seen)}; expected {expected}")
    assert len(seen) >= 2, (
        f"requests through {target.edge_url} must be spread over more than one API worker "
        f"(got only {sorted(seen)})"
    )
    if expected is not None:
        assert len(seen) == expected, (
            f"requests through {target.edge_url} must reach all {expected} API workers "
            f"(got {len(seen)}: {sorted(seen)})"
        )


@pytest.mark.checklist("INF-NET-LB")
def test_a_dead_worker_is_dropped(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """A dead worker that still gets requests turns into errors for clients."""
    api = sorted(name for name in target.info.drills.control if name.startswith("api-"))
    worker = api[0] if api else "api-0"
    control = target.control(worker)  # skips when the target gives no control over it
    behind_the_edge = _workers_through_the_edge(target)
    statuses: list[int] = []
    control.stop()
    try:
        for _ in range(REQUESTS_WITH_A_DEAD_WORKER):
            statuses.append(polite(lambda: target.http.get("/v1/health/ready")).status)
    finally:
        control.start()
        # Until the edge reaches every worker it reached before (its passive health check may
        # keep a restarted worker out for a while), so later probes find the target whole.
        until(
            lambda: behind_the_edge <= _workers_through_the_edge(target),
            RESTART_TIMEOUT_S,
            interval=0.5,
        )
    evidence.note(f"with {worker} stopped, {len(statuses)} GETs of /v1/health/ready: {statuses}")
    failed = [s for s in statuses if s != 200]
    assert not failed, (
        f"with one worker stopped, every request through {target.edge_url} must be answered by "
        f"another worker (got {statuses})"
    )


def _workers_through_the_edge(target: ProbeTarget, samples: int = 12) -> set[str]:
    """The worker ids that answer `samples` runtime requests through the edge."""
    admin = target.http.as_admin(target.admin_key)
    seen: set[str] = set()
    for _ in range(samples):
        response = polite(lambda: admin.get("/v1/admin/runtime"))
        if response.status == 200:
            seen.add(str(response.json().get("worker_id")))
    return seen


@pytest.mark.checklist("INF-NET-FIREWALL")
def test_internal_services_do_not_answer_from_outside(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """An exposed database or Redis port is a direct path to the data."""
    host, _port = target.edge_address
    if is_local_address(host):
        # The target runs on this host: "outside" is any of its non-loopback addresses.
        outside = sorted(host_addresses())
    else:
        outside = sorted(
            {str(i[4][0]) for i in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
        )
    if not outside:
        pytest.skip("the target host has no address beyond loopback to probe from outside")
    internal = {name: port for name, port in _internal_ports(target).items() if port}
    if not internal:
        pytest.skip("the target names no internal service (database, Redis, workers) to probe")
    evidence.note(
        f"probed {', '.join(f'{n} port {p}' for n, p in internal.items())} at {', '.join(outside)}"
    )
    answered = [
        f"{name} at {address}:{port}"
        for name, port in internal.items()
        for address in outside
        if _answers(address, port)
    ]
    assert not answered, (
        f"only the edge may answer from outside the target host (got {', '.join(answered)})"
    )


def _internal_ports(target: ProbeTarget) -> dict[str, int | None]:
    ports: dict[str, int | None] = {}
    if target.info.stores.postgres_dsn:
        ports["PostgreSQL"] = urlsplit(target.info.stores.postgres_dsn).port or 5432
    if target.info.stores.redis_url:
        ports["Redis"] = urlsplit(target.info.stores.redis_url).port or 6379
    if is_local_address(target.edge_address[0]):
        files = files_of_dump(live_config(target))
        tree = parse(files, next(iter(files)))
        for http in (d for d in tree if d.name == "http"):
            for upstream in http.children("upstream"):
                for i, server in enumerate(upstream.children("server")):
                    ports[f"API worker {i}"] = int(server.args[0].rsplit(":", 1)[1])
    return ports


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False

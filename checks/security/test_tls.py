"""The edge's TLS: the protocol versions it agrees to (real handshakes), its cipher suites and
the rest of Mozilla "intermediate" (sslyze), HTTP/2 via ALPN, its certificate's remaining
life, and the deployment's certificate renewal as its artefacts define it (the compose file's ACME
client, the cluster's cert-manager); checks/drills/test_certificate_renewal.py runs a renewal."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import warnings
from typing import Any

import pytest
from cryptography.utils import CryptographyDeprecationWarning
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)
from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument
from sslyze.scanner.models import (
    ScanCommandsExtraArguments,
    ServerScanRequest,
    ServerScanStatusEnum,
)
from sslyze.scanner.scanner import Scanner
from sslyze.server_setting import ServerNetworkConfiguration, ServerNetworkLocation

from checks.deployment._artefacts import Repo, compose, manifests, of_kind
from checks.security._edge import (
    deployment_certificate,
    served_certificate,
    verified_handshake,
)
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

HANDSHAKE_TIMEOUT_S = 10.0
# What a server that does not speak the offered version answers (the alert), or what the client
# says when the server answers with a version it did not offer.
REFUSALS = frozenset({"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"})


class HandshakeUndecided(Exception):
    """The handshake failed for a reason that says nothing about the offered version."""


def handshake(target: ProbeTarget, version: ssl.TLSVersion | None) -> str:
    """The negotiated version when the server agrees to `version` (None: what a current client
    offers), or the reason it refused."""
    host, port = target.edge_address
    if version is None:
        context = target.ssl_context()
    else:
        with warnings.catch_warnings():
            # TLSVersion.TLSv1/TLSv1_1 are deprecated; offering them is the point of this probe.
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = version
            context.maximum_version = version
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # only the version is judged here
        context.set_ciphers("ALL:@SECLEVEL=0")  # OpenSSL 3 offers TLS 1.0/1.1 only at level 0
    try:
        with (
            socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT_S) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            return str(tls.version())
    except ssl.SSLError as exc:
        if version is not None and exc.reason in REFUSALS:
            return f"refused ({exc.reason})"
        raise HandshakeUndecided(
            f"a {version.name if version else 'default'} handshake with {host}:{port} failed "
            f"for another reason ({exc.reason or exc}), so the offered version was not judged"
        ) from None


# SSLv3 cannot be offered by OpenSSL 3 at all; a server that refuses TLS 1.0 refuses it too in
# every current TLS library.
@pytest.mark.checklist("SEC-TLS-MIN")
@pytest.mark.parametrize(
    "version",
    [
        pytest.param(ssl.TLSVersion.TLSv1, id="tls1.0-refused"),
        pytest.param(ssl.TLSVersion.TLSv1_1, id="tls1.1-refused"),
        pytest.param(None, id="current-client-gets-tls1.2+"),
    ],
)
def test_only_tls12_and_tls13_are_negotiated(
    target: ProbeTarget, evidence: EvidenceLog, version: ssl.TLSVersion | None
) -> None:
    """Old protocol versions are vulnerable to downgrade and known attacks."""
    host, port = target.edge_address
    got = handshake(target, version)
    offered = version.name if version else "TLS 1.2 and 1.3"
    evidence.note(f"offered {offered} to {host}:{port}: {got}")
    if version is None:
        assert got in ("TLSv1.2", "TLSv1.3"), (
            f"a current client must negotiate TLS 1.2 or 1.3 with {host}:{port} (got {got})"
        )
    else:
        assert got.startswith("refused"), (
            f"a {version.name} handshake with {host}:{port} must be refused (got {got})"
        )


# --- cipher suites and the rest of Mozilla "intermediate", judged by sslyze ---------------------

SSLYZE_TIMEOUT_S = 90.0
# Decided by SEC-TLS-MIN above from real handshakes; left out here so one defect is one red item.
VERSION_ISSUES = frozenset({"tls_versions"})


def mozilla_intermediate_issues(target: ProbeTarget) -> dict[str, str]:
    """sslyze's scan of the edge checked against Mozilla's "intermediate" configuration: issue
    name -> sslyze's description (empty when compliant)."""
    host, port = target.edge_address
    ca = target.info.edge.ca_file
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=host, port=port, ip_address=_ip_of(host)),
        network_configuration=ServerNetworkConfiguration(
            tls_server_name_indication=host, network_timeout=int(HANDSHAKE_TIMEOUT_S)
        ),
        scan_commands=set(SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER),
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=ca) if ca else None
        ),
    )
    with warnings.catch_warnings():
        # sslyze's bundled trust stores hold a certificate with a non-positive serial number,
        # which cryptography warns about on load; that store is not the one judged here.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        scanner = Scanner(per_server_concurrent_connections_limit=4)
        scanner.queue_scans([request])
        (result,) = list(scanner.get_results())
    if result.scan_status is not ServerScanStatusEnum.COMPLETED:
        raise HandshakeUndecided(
            f"sslyze could not scan {host}:{port}: "
            f"{result.connectivity_error_trace or result.scan_status}"
        )
    try:
        check_server_against_tls_configuration(
            result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
        )
    except ServerNotCompliantWithTlsConfiguration as exc:
        return dict(exc.issues)
    return {}


def _ip_of(host: str) -> str:
    return str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0])


@pytest.mark.checklist("SEC-TLS-CIPHERS")
def test_the_edge_is_mozilla_intermediate_compliant(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Weak ciphers allow traffic decryption by capable attackers."""
    host, port = target.edge_address
    issues = mozilla_intermediate_issues(target)
    for name, description in sorted(issues.items()):
        evidence.note(f"sslyze, Mozilla intermediate, {name}: {description}")
    if not issues:
        evidence.note(f"sslyze: {host}:{port} is compliant with Mozilla intermediate")
    judged = {k: v for k, v in issues.items() if k not in VERSION_ISSUES}
    assert not judged, (
        f"the TLS configuration of {host}:{port} must be Mozilla intermediate compliant (sslyze: "
        + "; ".join(f"{k}: {v}" for k, v in sorted(judged.items()))
        + ")"
    )


# Mozilla's intermediate configuration serves HTTP/2, negotiated in the TLS handshake.
@pytest.mark.checklist("SEC-TLS-CIPHERS")
def test_http2_is_offered_with_alpn(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Without ALPN h2 clients fall back to HTTP/1.1 and its head-of-line blocking."""
    host, port = target.edge_address
    served = verified_handshake(target, ["h2", "http/1.1"])
    evidence.note(
        f"ALPN offered h2, http/1.1 to {host}:{port}: {served.alpn} over {served.version}"
    )
    assert served.alpn == "h2", (
        f"the edge {host}:{port} must select h2 when a client offers it with ALPN "
        f"(got {served.alpn or 'no ALPN'})"
    )


# --- the certificate's remaining life and its renewal ------------------------------------------

MIN_DAYS_LEFT = 14
# ACME clients are run at least daily (Let's Encrypt asks for twice a day) so that a failed
# renewal is retried long before the certificate's last 30 days run out.
MAX_RENEW_EVERY_S = 86400
RESTARTING = frozenset({"always", "unless-stopped", "on-failure"})
ACME_DIRECTORY_ENV = "CHATSDK_ACME_DIRECTORY"
CERT_MANAGER_ISSUERS = ("cert-manager.io/cluster-issuer", "cert-manager.io/issuer")


@pytest.mark.checklist("SEC-CERT-RENEWAL")
def test_the_certificate_has_more_than_14_days_left(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """An expired certificate takes the whole service offline for clients."""
    deployment_certificate(target)
    host, port = target.edge_address
    certificate = served_certificate(target)  # its chain is INF-NET-CERT's to judge
    now = dt.datetime.now(dt.UTC)
    left = certificate.not_valid_after_utc - now
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    evidence.figure("certificate_days_left", round(left.total_seconds() / 86400, 1), "days")
    evidence.figure("certificate_lifetime", lifetime.days, "days")
    until = certificate.not_valid_after_utc
    evidence.note(
        f"{certificate.subject.rfc4514_string()} issued by "
        f"{certificate.issuer.rfc4514_string()}, valid until {until:%Y-%m-%d %H:%M} UTC"
    )
    assert left > dt.timedelta(days=MIN_DAYS_LEFT), (
        f"the certificate of {host}:{port} must have more than {MIN_DAYS_LEFT} days left "
        f"(got {left.days} days)"
    )


@pytest.mark.checklist("SEC-CERT-RENEWAL")
def test_the_compose_deployment_renews_the_edge_certificate(
    repo: Repo, evidence: EvidenceLog
) -> None:
    """A certificate renewed by hand expires the day someone forgets."""
    services = compose(repo.compose).services
    clients = {n: s for n, s in services.items() if ACME_DIRECTORY_ENV in _env(s)}
    where = repo.relative(repo.compose)
    assert clients, (
        f"{where} must run an ACME client service that renews the edge's certificate "
        f"(a service with {ACME_DIRECTORY_ENV}, such as certbot; got none)"
    )
    edges = {
        n: s
        for n, s in services.items()
        if any(_target_port(p) == 8443 for p in s.get("ports") or [])
    }
    assert edges, f"{where} must publish an edge (a service with container port 8443; got none)"
    for name, service in clients.items():
        env = _env(service)
        every = float(env.get("CHATSDK_RENEW_EVERY", "43200"))  # the image's default: 12 h
        writes = _written_volumes(service)
        evidence.note(
            f"{name}: ACME directory {env[ACME_DIRECTORY_ENV]}, `certbot renew` every {every:g} s, "
            f"writes volumes {sorted(writes)}, restart {service.get('restart')}"
        )
        assert every <= MAX_RENEW_EVERY_S, (
            f"compose service {name} must try to renew at least daily (CHATSDK_RENEW_EVERY "
            f"{every:g} s)"
        )
        assert service.get("restart") in RESTARTING, (
            f"compose service {name} must restart (got {service.get('restart')})"
        )
        for edge_name, edge in edges.items():
            _reads_and_reloads(name, writes, edge_name, edge, evidence)


def _reads_and_reloads(
    client: str, writes: set[str], edge_name: str, edge: dict[str, Any], evidence: EvidenceLog
) -> None:
    """The edge mounts a volume the ACME client writes, and reloads when the certificate file
    in it changes (CHATSDK_EDGE_CERT_WATCH, read by the edge image's entrypoint)."""
    inside = [target for source, target, _ro in _mounts(edge) if source in writes]
    watched = _env(edge).get("CHATSDK_EDGE_CERT_WATCH", "")
    evidence.note(
        f"{edge_name} mounts {client}'s volumes at {inside} and reloads when "
        f"{watched or '(nothing: CHATSDK_EDGE_CERT_WATCH is unset)'} changes"
    )
    assert inside, (
        f"compose service {edge_name} must read the certificate {client} renews from a volume "
        f"they share (it mounts none of {sorted(writes)})"
    )
    assert any(watched.startswith(folder.rstrip("/") + "/") for folder in inside), (
        f"compose service {edge_name} must reload when the renewed certificate changes "
        f"(CHATSDK_EDGE_CERT_WATCH naming the certificate file under {inside}; got "
        f"{watched or 'none'})"
    )


@pytest.mark.checklist("SEC-CERT-RENEWAL")
def test_the_kubernetes_certificate_is_issued_and_renewed_by_cert_manager(
    repo: Repo, evidence: EvidenceLog
) -> None:
    """A certificate renewed by hand expires the day someone forgets."""
    certificates = {
        str(m.doc.get("spec", {}).get("secretName"))
        for m in manifests(repo.k8s)
        if m.kind == "Certificate"
        and str(m.doc.get("apiVersion", "")).startswith("cert-manager.io/")
    }
    ingresses = of_kind(repo.k8s, "Ingress")
    assert ingresses, "the Kubernetes manifests must define the Ingress that terminates TLS"
    for ingress in ingresses:
        annotations = ingress.doc.get("metadata", {}).get("annotations") or {}
        issuer = next(
            (f"{k}: {annotations[k]}" for k in CERT_MANAGER_ISSUERS if k in annotations), None
        )
        for tls in ingress.doc.get("spec", {}).get("tls") or []:
            secret = tls.get("secretName")
            by = issuer or (f"Certificate for {secret}" if secret in certificates else None)
            evidence.note(
                f"{ingress.ref}: TLS secret {secret} issued and renewed by {by or 'nothing'}"
            )
            assert by, (
                f"{ingress.ref} must have its TLS secret {secret} issued and renewed by "
                "cert-manager (a cert-manager.io/cluster-issuer annotation or a Certificate "
                "for that secret; got neither)"
            )


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (service.get("environment") or {}).items()}


def _target_port(port: Any) -> int | None:
    if isinstance(port, dict):
        return int(port["target"])
    return int(str(port).rsplit(":", 1)[-1].split("/")[0])


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each volume of a resolved compose service."""
    found = []
    for volume in service.get("volumes") or []:
        source, target, *mode = str(volume).split(":")
        found.append((source, target, mode[:1] == ["ro"]))
    return found


def _written_volumes(service: dict[str, Any]) -> set[str]:
    """The named volumes a resolved compose service mounts read-write."""
    return {source for source, _target, ro in _mounts(service) if "/" not in source and not ro}

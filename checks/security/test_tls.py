"""The edge's TLS: the protocol versions it agrees to (real handshakes), its cipher suites and
the rest of Mozilla "intermediate" (sslyze), HTTP/2 via ALPN, and its certificate's remaining
life."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import warnings

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

from checks.security._edge import verified_handshake
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


# --- the certificate's remaining life -----------------------------------------------------------

MIN_DAYS_LEFT = 14
# Certificates that live this long or shorter are only ever renewed by automation (ACME clients
# renew 90-day certificates at 60 days); a longer-lived certificate is renewed by hand.
MAX_AUTOMATED_LIFETIME_DAYS = 100


@pytest.mark.checklist("SEC-CERT-RENEWAL")
def test_the_certificate_has_days_left_and_a_renewable_lifetime(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """An expired certificate takes the whole service offline for clients."""
    host, port = target.edge_address
    certificate = verified_handshake(target).certificate
    now = dt.datetime.now(dt.UTC)
    left = certificate.not_valid_after_utc - now
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    evidence.figure("certificate_days_left", round(left.total_seconds() / 86400, 1), "days")
    evidence.figure("certificate_lifetime", lifetime.days, "days")
    until = certificate.not_valid_after_utc
    evidence.note(f"{certificate.subject.rfc4514_string()} valid until {until:%Y-%m-%d %H:%M} UTC")
    assert left > dt.timedelta(days=MIN_DAYS_LEFT), (
        f"the certificate of {host}:{port} must have more than {MIN_DAYS_LEFT} days left "
        f"(got {left.days} days)"
    )
    assert lifetime <= dt.timedelta(days=MAX_AUTOMATED_LIFETIME_DAYS), (
        f"the certificate of {host}:{port} must be a short-lived (<= "
        f"{MAX_AUTOMATED_LIFETIME_DAYS} days), automatically renewed one (got a lifetime of "
        f"{lifetime.days} days)"
    )

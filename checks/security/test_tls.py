"""The TLS protocol versions the edge agrees to, from real handshakes."""

from __future__ import annotations

import socket
import ssl
import warnings

import pytest

from preflight.evidence import EvidenceLog
from preflight.probe_target import ProbeTarget

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

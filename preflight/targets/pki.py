"""A private CA and a server certificate generated per run, for the edge's TLS.

trustme's certificates fail sslyze's Mozilla check (critical SAN, ~1000-year lifetime), so the
certificates here follow what a public CA would issue: a 90-day ECDSA P-256 leaf with a
non-critical SAN, serverAuth EKU and key identifiers, signed by a short-lived CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from preflight.errors import PreflightError

LEAF_VALIDITY = dt.timedelta(days=90)
CA_VALIDITY = dt.timedelta(days=365)
# Clocks of the processes that verify the certificate may lag a little behind ours.
BACKDATE = dt.timedelta(minutes=5)
KEY_FILE_MODE = 0o600


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_chain: Path  # leaf then CA, PEM: what nginx's ssl_certificate wants
    server_key: Path
    ca_fingerprint_sha256: str  # lowercase hex, no separators


def make_pki(
    directory: Path,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1", "::1"),
    leaf_issued: dt.datetime | None = None,
) -> Pki:
    """The CA and a leaf for `hostnames` and `ips` in `directory`. The leaf's 90 days start at
    `leaf_issued` (default: now, backdated a little); an earlier start makes an expired leaf
    (the certificate variants' defect)."""
    if not hostnames:
        raise PreflightError("make_pki needs at least one hostname (it becomes the leaf's CN)")
    try:
        ip_addresses = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise PreflightError(f"make_pki got an invalid IP address: {exc}") from exc

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - BACKDATE

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "preflight"),
            x509.NameAttribute(NameOID.COMMON_NAME, "preflight per-run CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.DNSName(name) for name in hostnames]
    san += [x509.IPAddress(ip) for ip in ip_addresses]
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf_issued or now)
        .not_valid_after((leaf_issued or now) + LEAF_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    pki = Pki(
        ca_cert=directory / "ca.pem",
        server_chain=directory / "server-chain.pem",
        server_key=directory / "server.key",
        ca_fingerprint_sha256=ca_cert.fingerprint(hashes.SHA256()).hex(),
    )
    pki.ca_cert.write_bytes(ca_pem)
    pki.server_chain.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    _write_private(
        pki.server_key,
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    # The CA key is not written anywhere: nothing else is ever signed with it.
    return pki


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)

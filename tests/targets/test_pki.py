"""The per-run CA and server certificate: what sslyze's Mozilla check and TLS clients rely on."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from preflight.targets.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(
        tmp_path_factory.mktemp("pki"),
        hostnames=("localhost", "edge"),
        ips=("127.0.0.1", "::1"),
    )


def _chain(pki: Pki) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pki.server_chain.read_bytes())


def _leaf(pki: Pki) -> x509.Certificate:
    return _chain(pki)[0]


def _ca(pki: Pki) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())


def test_chain_is_leaf_then_ca(pki: Pki) -> None:
    chain = _chain(pki)
    assert len(chain) == 2, f"{pki.server_chain} must hold leaf + CA (got {len(chain)} certs)"
    assert chain[1] == _ca(pki), "the second certificate of the chain must be the CA"
    assert chain[0].issuer == chain[1].subject


def test_leaf_names_every_hostname_and_ip_in_a_non_critical_san(pki: Pki) -> None:
    leaf = _leaf(pki)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical, "SAN must not be critical when the subject is non-empty (RFC 5280)"
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "edge"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    cn = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["localhost"]


def test_leaf_is_a_server_certificate_only(pki: Pki) -> None:
    leaf = _leaf(pki)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_cert_sign
    assert not ku.value.crl_sign
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.value.ca is False


def test_leaf_is_ecdsa_p256(pki: Pki) -> None:
    key = _leaf(pki).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"


def test_leaf_is_valid_for_90_days_from_now(pki: Pki) -> None:
    leaf = _leaf(pki)
    now = dt.datetime.now(dt.UTC)
    assert leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == dt.timedelta(days=90), f"leaf lifetime must be 90 days (got {lifetime})"


def test_ca_can_only_sign_certificates(pki: Pki) -> None:
    ca = _ca(pki)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is True
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert not ku.value.digital_signature


def test_leaf_authority_key_id_is_the_ca_subject_key_id(pki: Pki) -> None:
    ca_ski = _ca(pki).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    leaf = _leaf(pki)
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_private_key_is_readable_by_owner_only(pki: Pki) -> None:
    mode = stat.S_IMODE(pki.server_key.stat().st_mode)
    assert mode == 0o600, f"{pki.server_key} must be mode 0600 (got {mode:04o})"
    assert not list(pki.ca_cert.parent.glob("ca*.key")), "the CA key must never be written"


def test_fingerprint_is_sha256_of_the_ca_der(pki: Pki) -> None:
    der = _ca(pki).public_bytes(serialization.Encoding.DER)
    assert pki.ca_fingerprint_sha256 == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize(
    "subject",
    [x509.DNSName("localhost"), x509.DNSName("edge"), x509.IPAddress(ipaddress.ip_address("::1"))],
    ids=["localhost", "edge", "ipv6"],
)
def test_chain_verifies_against_the_ca(pki: Pki, subject: x509.DNSName | x509.IPAddress) -> None:
    """cryptography's verifier is the strict RFC 5280 one sslyze uses for its trust check."""
    verifier = PolicyBuilder().store(Store([_ca(pki)])).build_server_verifier(subject)
    chain = verifier.verify(_leaf(pki), [])
    assert chain[-1] == _ca(pki)


def test_chain_does_not_verify_against_another_runs_ca(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path)
    verifier = (
        PolicyBuilder().store(Store([_ca(other)])).build_server_verifier(x509.DNSName("localhost"))
    )
    with pytest.raises(VerificationError):
        verifier.verify(_leaf(pki), [])
    assert other.ca_fingerprint_sha256 != pki.ca_fingerprint_sha256

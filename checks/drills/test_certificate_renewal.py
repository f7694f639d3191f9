"""The certificate renewal drill: the deployment's own ACME client renews the edge's certificate
now (as it does when one is due), and the edge must serve the new certificate (another serial,
a chain that still verifies against the target's CA) without refusing a connection meanwhile.

Only a target that can run the deployment's renewal offers this (capability `cert_renewal`: the
containers target runs the compose file's certbot service; a target file gives a command);
elsewhere it skips."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field

import pytest

from checks.security._edge import (
    Served,
    deployment_certificate,
    served_certificate,
    verified_handshake,
)
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

# How long the edge may take to serve a renewed certificate: the bundled edge looks for a new
# one every 10 s (CHATSDK_EDGE_CERT_POLL); a deployment that only reloads on a restart or by hand
# never does.
SERVED_WITHIN_S = 120.0
HANDSHAKE_EVERY_S = 0.2
AFTER_S = 2.0  # handshakes kept up once the new certificate is served


@dataclass
class HandshakeWatch:
    """Verified handshakes with the edge in a thread, one every HANDSHAKE_EVERY_S: the serial
    each one saw, and each that failed (refused, reset, or a chain that did not verify)."""

    target: ProbeTarget
    serials: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HandshakeWatch:
        self._thread = threading.Thread(target=self._run, name="handshake-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(HANDSHAKE_EVERY_S):
            try:
                self.serials.append(verified_handshake(self.target).certificate.serial_number)
            except OSError as exc:  # refused, reset, a chain that does not verify (SSLError)
                self.failures.append(f"{type(exc).__name__}: {exc}")

    @property
    def latest(self) -> int | None:
        return self.serials[-1] if self.serials else None


def _served(target: ProbeTarget) -> Served:
    try:
        return verified_handshake(target)
    except ssl.SSLCertVerificationError as exc:
        host, port = target.edge_address
        raise AssertionError(
            f"the certificate {host}:{port} serves must verify against the target's CA "
            f"(got {exc.verify_message or exc.reason})"
        ) from None
    except OSError as exc:
        raise AssertionError(f"the edge must accept connections (got {exc})") from None


@pytest.mark.checklist("SEC-CERT-RENEWAL")
def test_a_renewed_certificate_is_served_without_refusing_connections(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A renewal that never reaches the edge lets the served certificate expire all the same."""
    deployment_certificate(target)
    target.requires("cert_renewal")
    renewal = target.info.edge.renewal
    assert renewal is not None
    host, port = target.edge_address
    before = served_certificate(target).serial_number
    evidence.note(f"renewal: {renewal.schedule}; serving serial {before:x}")
    with HandshakeWatch(target) as watch:
        started = time.monotonic()
        said = renewal.renew()
        renewed_s = time.monotonic() - started
        evidence.note(f"forced renewal done after {renewed_s:.1f} s: {said}")
        deadline = started + SERVED_WITHIN_S
        while watch.latest in (None, before) and time.monotonic() < deadline:
            time.sleep(HANDSHAKE_EVERY_S)
        served_s = time.monotonic() - started
        time.sleep(AFTER_S)
    now_serving = served_certificate(target).serial_number
    evidence.figure("certificate_renewal_s", round(renewed_s, 1), "s")
    evidence.figure("renewed_certificate_served_s", round(served_s, 1), "s")
    evidence.note(
        f"{len(watch.serials)} verified handshakes during the drill, {len(watch.failures)} "
        f"failed; now serving serial {now_serving:x}"
    )
    assert now_serving != before, (
        f"the edge {host}:{port} must serve the renewed certificate within "
        f"{SERVED_WITHIN_S:.0f} s of a renewal (it still serves serial {before:x}: the renewal "
        "does not reach the edge)"
    )
    after = _served(target).certificate  # the renewed one, verified against the target's CA
    evidence.note(
        f"renewed: {after.subject.rfc4514_string()} issued by "
        f"{after.issuer.rfc4514_string()}, valid until {after.not_valid_after_utc:%Y-%m-%d} UTC"
    )
    assert not watch.failures, (
        f"the edge {host}:{port} must keep accepting verified connections while it takes up "
        f"the renewed certificate ({len(watch.failures)} of "
        f"{len(watch.failures) + len(watch.serials)} handshakes failed, first: "
        f"{watch.failures[0]})"
    )

"""Encryption of the traffic between the API and PostgreSQL."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest

from preflight.evidence import EvidenceLog
from preflight.probe.pg import Postgres
from preflight.probe.target import ProbeTarget

# The application's sessions: the application role's client backends other than the probe's own.
APP_SESSIONS = """
SELECT s.ssl, s.version, s.cipher
  FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
 WHERE a.usename = current_user AND a.backend_type = 'client backend'
   AND a.pid <> pg_backend_pid()
"""


@pytest.mark.checklist("SEC-DB-TLS")
@pytest.mark.parametrize("case", ["app-sessions-encrypted", "plaintext-refused"])
def test_database_traffic_is_encrypted(
    target: ProbeTarget, evidence: EvidenceLog, case: str
) -> None:
    """Plaintext database traffic exposes every message and credential on the network."""
    where = target.pg.where
    if case == "app-sessions-encrypted":
        shown = target.pg.show("ssl")
        sessions = target.pg.fetch(APP_SESSIONS)
        plain = sum(1 for s in sessions if not s["ssl"])
        evidence.note(f"ssl = {shown['ssl']}")
        evidence.figure("application sessions", len(sessions))
        evidence.figure("application sessions without TLS", plain)
        used = sorted({(s["version"], s["cipher"]) for s in sessions if s["ssl"]})
        evidence.note(f"TLS of the sessions: {used}")
        assert shown["ssl"] == "on", f"PostgreSQL at {where} must have ssl on (got {shown['ssl']})"
        assert sessions, f"the API must hold sessions at {where} to judge (found none)"
        assert plain == 0, (
            f"every application session at {where} must use TLS "
            f"({plain} of {len(sessions)} are plaintext)"
        )
    else:
        # The application's own credentials over a connection that does not offer TLS: the server
        # must refuse it (hostssl only), or a misconfigured client would silently go plaintext.
        dsn = urlsplit(target.pg_dsn)
        got = Postgres(target.pg_dsn.split("?", 1)[0] + "?sslmode=disable").login(
            unquote(dsn.username or ""),
            unquote(dsn.password or ""),
        )
        evidence.note(f"login without TLS to {where}: {got}")
        assert got != "accepted", (
            f"PostgreSQL at {where} must refuse the application's login without TLS (got {got})"
        )

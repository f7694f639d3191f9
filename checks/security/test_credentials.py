"""Credentials of the target's services: how PostgreSQL asks for passwords, whether the
configured secrets are strong, whether default accounts still open, and SSH on the host."""

from __future__ import annotations

import shutil
import socket
import subprocess
from urllib.parse import unquote, urlsplit

import pytest

from checks._stores import (
    WELL_KNOWN_PASSWORDS,
    weak_secret,
)
from preflight.client import polite
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

SCRAM = "SCRAM-SHA-256"
SSH_PORT = 22
SSH_TIMEOUT_S = 10.0
# An admin-only route that changes nothing for an unknown app: 401 without the key, 404 with it.
ADMIN_PROBE_PATH = "/v1/apps/00000000-0000-0000-0000-000000000000/keys"
DEFAULT_SUPERUSER = "postgres"


def _scram_only(asked: str) -> bool:
    """The server asked for SASL with SCRAM-SHA-256 mechanisms only (-PLUS is the channel-bound
    variant offered over TLS), or refused the role outright."""
    if asked.startswith("error:"):
        return True
    kind, _, mechanisms = asked.partition(" ")
    return kind == "SASL" and all(m.startswith(SCRAM) for m in mechanisms.split(","))


def _app_role(target: ProbeTarget) -> tuple[str, str]:
    dsn = urlsplit(target.pg_dsn)
    return unquote(dsn.username or ""), unquote(dsn.password or "")


@pytest.mark.checklist("SEC-PASSWORDS-STRONG")
@pytest.mark.parametrize("case", ["postgres-scram-only", "app-role-password", "admin-key"])
def test_services_take_only_strong_passwords(
    target: ProbeTarget, evidence: EvidenceLog, case: str
) -> None:
    """Guessable or weakly hashed service passwords are the first thing an attacker tries."""
    if case == "postgres-scram-only":
        # The hardening's "scram-sha-256 only": hashes are stored as SCRAM, and the server asks
        # every role (the app's, the superuser, one that does not exist) for SCRAM, never for
        # MD5, a cleartext password or nothing (trust). pg_hba.conf itself is superuser-only.
        where = target.pg.where
        encryption = target.pg.show("password_encryption")["password_encryption"]
        asked = {
            user: target.pg.auth_request(user)
            for user in (_app_role(target)[0], DEFAULT_SUPERUSER, "preflight-no-such-role")
        }
        evidence.note(f"password_encryption = {encryption}; asked per role: {asked}")
        assert encryption == "scram-sha-256", (
            f"PostgreSQL at {where} must store passwords as scram-sha-256 "
            f"(password_encryption = {encryption})"
        )
        other = {u: a for u, a in asked.items() if not _scram_only(a)}
        assert not other, (
            f"PostgreSQL at {where} must ask every role for {SCRAM} "
            f"(got {', '.join(f'{u}: {a}' for u, a in other.items())})"
        )
    elif case == "app-role-password":
        user, password = _app_role(target)
        problem = weak_secret(password, [user])
        evidence.figure("application role password length", len(password), "characters")
        assert problem is None, f"the PostgreSQL password of role {user} must be strong ({problem})"
        accepted = [p for p in WELL_KNOWN_PASSWORDS if target.pg.login(user, p) == "accepted"]
        assert not accepted, (
            f"PostgreSQL role {user} must refuse well-known passwords (accepted {accepted!r})"
        )
    else:
        problem = weak_secret(target.admin_key)
        evidence.figure("admin key length", len(target.admin_key), "characters")
        assert problem is None, f"the API's admin key must be strong ({problem})"


@pytest.mark.checklist("SEC-DEFAULT-CREDS")
@pytest.mark.parametrize("account", ["postgres-superuser", "api-admin"])
def test_default_accounts_do_not_open(
    target: ProbeTarget, evidence: EvidenceLog, account: str
) -> None:
    """Default credentials are published and scanned for continuously."""
    # Redis's default user is decided by INF-REDIS-AUTH and SEC-REDIS-PASSWORD; the bundled
    # system has no object storage console (MinIO runs only in system/deploy).
    if account == "postgres-superuser":
        tried = {p: target.pg.login(DEFAULT_SUPERUSER, p) for p in WELL_KNOWN_PASSWORDS}
        evidence.note(f"{DEFAULT_SUPERUSER}@{target.pg.where}: {tried}")
        opened = [p for p, got in tried.items() if got == "accepted"]
        assert not opened, (
            f"PostgreSQL at {target.pg.where} must refuse role {DEFAULT_SUPERUSER} with "
            f"default passwords (accepted {opened!r})"
        )
    else:
        statuses = {}
        for key in ("admin", "changeme", "password", "secret"):
            client = target.http.as_admin(key)
            response = polite(lambda c=client: c.post(ADMIN_PROBE_PATH, {}))  # type: ignore[misc]
            statuses[key] = response.status
        evidence.note(f"POST {ADMIN_PROBE_PATH} with default admin keys: {statuses}")
        opened = [k for k, status in statuses.items() if status not in (401, 403)]
        assert not opened, (
            f"the API at {target.edge_url} must answer 401 to default admin keys "
            f"(got {', '.join(f'{k}: {statuses[k]}' for k in opened)})"
        )


@pytest.mark.checklist("SEC-REDIS-PASSWORD")
@pytest.mark.parametrize("case", ["password-strong", "wrong-password-refused"])
def test_redis_password_is_set_and_enforced(
    target: ProbeTarget, evidence: EvidenceLog, case: str
) -> None:
    """An example password in production is as good as none."""
    where = target.redis.where
    if case == "password-strong":
        password = target.redis.password or ""
        evidence.figure("Redis password length", len(password), "characters")
        problem = weak_secret(password)
        assert problem is None, f"the Redis password for {where} must be strong ({problem})"
    else:
        got = target.redis.attempt((None, "preflight-wrong-password"))
        evidence.note(f"PING with a wrong password to {where}: {got}")
        assert got.startswith("refused"), (
            f"Redis at {where} must refuse a wrong password (got {got}), or any password opens it"
        )


def _ssh_methods(host: str) -> str:
    """The authentication methods an SSH server offers, as OpenSSH's client reports them."""
    ssh = shutil.which("ssh")
    if ssh is None:
        raise RuntimeError("SSH is exposed but no ssh client is installed to ask for its methods")
    result = subprocess.run(
        [
            ssh,
            "-v",
            "-o", "BatchMode=yes",
            "-o", "PreferredAuthentications=none",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={int(SSH_TIMEOUT_S)}",
            "-p", str(SSH_PORT),
            f"preflight-probe@{host}",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=SSH_TIMEOUT_S * 2,
        check=False,
    )  # fmt: skip
    for line in result.stderr.splitlines():
        if "Authentications that can continue:" in line:
            return line.split(":", 1)[1].strip()
    raise RuntimeError(f"ssh to {host} offered no method list: {result.stderr.strip()[-300:]}")


@pytest.mark.checklist("SEC-SSH-KEYS-ONLY")
def test_ssh_refuses_passwords_or_is_not_exposed(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Password SSH invites brute force against the hosts."""
    host, edge_port = target.edge_address[0], target.edge_address[1]
    try:
        with socket.create_connection((host, SSH_PORT), timeout=SSH_TIMEOUT_S) as sock:
            banner = sock.recv(256).decode(errors="replace").strip()
    except ConnectionRefusedError:
        evidence.note(f"{host}:{SSH_PORT}: connection refused: SSH not exposed")
        return
    except TimeoutError:
        # Dropped, not refused: a filtered port, if the host itself answers (else nothing is known).
        with socket.create_connection((host, edge_port), timeout=SSH_TIMEOUT_S):
            pass
        evidence.note(
            f"{host}:{SSH_PORT}: no answer within {SSH_TIMEOUT_S} s while the edge port "
            f"{edge_port} of the same host answers: SSH filtered, not exposed"
        )
        return
    methods = _ssh_methods(host)
    evidence.note(f"{host}:{SSH_PORT} answers {banner!r}; offered methods: {methods}")
    offered = {m.strip() for m in methods.split(",")}
    assert not offered & {"password", "keyboard-interactive"}, (
        f"SSH on {host}:{SSH_PORT} must offer key-based authentication only (offers {methods})"
    )

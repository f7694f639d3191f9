"""SEC-SSH-KEYS-ONLY's probe (checks/security/test_credentials.py) against a host whose SSH server
accepts passwords: a real OpenSSH server, installed from Debian in a container built here, on a
Docker network of this test's own. The probe asks port 22 of the target's host, so the host is
the container's address there (this machine's own port 22 is never touched)."""

from __future__ import annotations

import hashlib
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from preflight.polling import until
from preflight.targets.base import Edge, TargetInfo
from preflight.targets.containers.engine import (
    LAUNCHER_LABEL,
    RUN_LABEL,
    docker_available,
    engine,
    launcher,
    sweep,
)
from preflight.targets.containers.images import BOOKWORM, LABEL, build, ensure_base
from tests.checks.support import failing, probe

ITEM = "SEC-SSH-KEYS-ONLY"
# A stock Debian OpenSSH server with password (and keyboard-interactive) logins switched on.
DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server \\
    && rm -rf /var/lib/apt/lists/* && mkdir -p /run/sshd
RUN printf 'PasswordAuthentication yes\\nKbdInteractiveAuthentication yes\\n' \\
    > /etc/ssh/sshd_config.d/passwords.conf
CMD ["/usr/sbin/sshd", "-D", "-e"]
"""
START_S = 60.0


def _greets(address: str) -> bool:
    """Whether an SSH server answers on address:22 with its version banner."""
    try:
        with socket.create_connection((address, 22), timeout=2) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _log(_message: str) -> None:
    """Image builds report their steps; this test keeps quiet."""


@contextmanager
def ssh_with_passwords(tmp: Path) -> Iterator[str]:
    """The address of a running OpenSSH server that offers passwords, on a network of its own."""
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"
    client = engine()
    base = ensure_base(client, BOOKWORM, _log)
    tag = f"preflight/test-sshd:{hashlib.sha256((base + DOCKERFILE).encode()).hexdigest()[:12]}"
    (tmp / "Dockerfile").write_text(DOCKERFILE)
    build(client, f"image {tag}", _log, path=str(tmp), tag=tag, buildargs={"BASE": base},
          labels={LABEL: "test-sshd"})  # fmt: skip
    run = f"test-sshd-{secrets.token_hex(4)}"
    labels = {RUN_LABEL: run, LAUNCHER_LABEL: launcher()}
    client.networks.create(run, driver="bridge", labels=labels)
    try:
        container: Any = client.containers.run(
            tag, detach=True, name=run, network=run, labels=labels
        )
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][run]["IPAddress"]
        assert until(lambda: _greets(address), START_S), f"sshd answers on {address}:22"
        yield address
    finally:
        sweep(client, _log, run)


@pytest.mark.turns_red(
    "SEC-SSH-KEYS-ONLY", defect="A host whose SSH server accepts password logins."
)
def test_an_ssh_server_that_accepts_passwords_fails_sec_ssh_keys_only(tmp_path: Path) -> None:
    with ssh_with_passwords(tmp_path) as host:
        info = TargetInfo(
            name="ssh-with-passwords",
            kind="external",
            edge=Edge(f"https://{host}:443"),
            admin_key="unused",
        )
        red = failing(probe(info, "security/test_credentials.py", items={ITEM}))
    assert set(red) == {ITEM}, red
    assert f"SSH on {host}:22 must offer key-based authentication only" in red[ITEM], red
    assert "password" in red[ITEM], red

"""The containers target's ACME CA: pebble (Let's Encrypt's ACME test server) in a container on
the run's edge network, in place of Let's Encrypt for the compose file's ACME client.

The compose deployment's certbot service (the one whose environment names
CHATSDK_ACME_DIRECTORY) is pointed at pebble; the edge's public name is `localhost`, the name
this machine reaches the edge's published port by, and pebble's container resolves it to the
edge container, so pebble's http-01 validation crosses the run's network to the edge's plain-HTTP
port. The probes trust the root pebble makes at its start (`Edge.ca_file`), and the renewal drill
runs the certbot service's own forced renewal (`AcmeRenewal`)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preflight.errors import TargetUnavailable
from preflight.targets.containers.compose import Compose, Service
from preflight.targets.edge import EdgeCertificate
from preflight.targets.pki import Pki, make_pki
from preflight.targets.procs import free_port

DIRECTORY_ENV = "CHATSDK_ACME_DIRECTORY"  # what marks the compose file's ACME client
EDGE_NAME = "localhost"
PEBBLE = "pebble"  # its image's name (images.py) and its name on the edge network
ACME_PORT = 14000
MANAGEMENT_PORT = 15000
EDGE_HTTP_PORT = 8080  # where pebble sends http-01 (the edge's port 80 inside its container)
EDGE_TLS_PORT = 8443
CA_BUNDLE = "/etc/pebble-listener-ca.pem"  # in the certbot container: trust for pebble's API
DEFAULT_CERT_DIR = "/etc/letsencrypt/edge"  # the certbot image's default CHATSDK_EDGE_CERT_DIR
WEBROOT = Path("/var/www/acme")
RENEW_COMMAND = ("edge-certificate", "force")
ISSUE_COMMAND = ("edge-certificate", "once")
CERT_VALIDITY_S = 90 * 86400
FIRST_CERTIFICATE_WITHIN_S = 120.0
# How long the target waits for the edge to serve the first certificate pebble issued (the
# bundled edge looks for a new one every 10 s) before it hands the edge to the probes as it is.
SERVED_WITHIN_S = 30.0
# pebble's test knobs: no random sleep before validating, no nonces rejected at random, and no
# authorization reused, so every issuance and renewal validates through the edge again.
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}


def acme_client(plan: Compose) -> Service | None:
    """The compose file's ACME client: the service whose environment names the directory."""
    return next((s for s in plan.services.values() if DIRECTORY_ENV in s.environment), None)


def edge_certificate(client: Service) -> EdgeCertificate:
    """Where the ACME client puts the edge's certificate, as NGINX reads it from the shared
    volume (the same path in both containers), for the run's edge name."""
    folder = Path(client.environment.get("CHATSDK_EDGE_CERT_DIR", DEFAULT_CERT_DIR))
    return EdgeCertificate(folder / "fullchain.pem", folder / "privkey.pem", (EDGE_NAME,))


def client_environment(client: Service) -> dict[str, str]:
    """The ACME client's environment with this run's CA and edge name (OVERRIDES)."""
    return {
        **client.environment,
        DIRECTORY_ENV: f"https://{PEBBLE}:{ACME_PORT}/dir",
        "CHATSDK_EDGE_DOMAIN": EDGE_NAME,
        "REQUESTS_CA_BUNDLE": CA_BUNDLE,
    }


def schedule_of(client: Service) -> str:
    every = client.environment.get("CHATSDK_RENEW_EVERY", "43200 (the image's default)")
    return f"compose service {client.name}: `certbot renew` every {every} s"


@dataclass(frozen=True)
class PebbleFiles:
    """pebble's configuration, written by the run: its listener's certificate (minted here, for
    certbot to trust) and the host table that resolves the edge's name."""

    folder: Path  # mounted at /etc/pebble
    listener: Pki
    hosts: Path

    @classmethod
    def write(cls, folder: Path) -> PebbleFiles:
        folder.mkdir()
        listener = make_pki(folder / "listener", hostnames=(PEBBLE,))
        config = {
            "pebble": {
                "listenAddress": f"0.0.0.0:{ACME_PORT}",
                "managementListenAddress": f"0.0.0.0:{MANAGEMENT_PORT}",
                "certificate": "/etc/pebble/listener/server-chain.pem",
                "privateKey": "/etc/pebble/listener/server.key",
                "httpPort": EDGE_HTTP_PORT,
                "tlsPort": EDGE_TLS_PORT,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                # 90 days, as Let's Encrypt issues (pebble's default is five years, which
                # Mozilla's intermediate profile, SEC-TLS-CIPHERS, rejects as too long).
                "certificateValidityPeriod": CERT_VALIDITY_S,
            }
        }
        (folder / "pebble-config.json").write_text(json.dumps(config, indent=2) + "\n")
        # pebble runs as nobody and reads them where they are bind-mounted: a throwaway listener
        # key, for a CA that lives as long as the run, inside the run's folder (0711).
        for path in (folder / "pebble-config.json", listener.server_key, *folder.rglob("*.pem")):
            path.chmod(0o644)
        for directory in (folder, folder / "listener"):
            directory.chmod(0o755)
        hosts = folder / "hosts"
        hosts.write_text("127.0.0.1 pebble-itself\n")
        hosts.chmod(0o644)
        return cls(folder, listener, hosts)

    def resolve_edge(self, address: str) -> None:
        """pebble's host table: the edge's name is the edge container's address."""
        self.hosts.write_text(f"127.0.0.1 pebble-itself\n{address} {EDGE_NAME}\n")

    def mounts(self) -> list[tuple[str, str, str]]:
        return [(str(self.folder), "/etc/pebble", "ro"), (str(self.hosts), "/etc/hosts", "ro")]


def pebble_container(
    tag: str, name: str, network: Any, labels: Mapping[str, str], files: PebbleFiles
) -> Any:
    """pebble's container, not started yet: on the edge's network as `pebble`, its files
    mounted, its management port published on a free port of 127.0.0.1 (for its root)."""
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415

    c = DockerContainer(
        tag,
        name=name,
        network=network,
        network_aliases=[PEBBLE],
        labels={**labels, "io.preflight.service": PEBBLE},
    )
    for key, value in PEBBLE_ENV.items():
        c.with_env(key, value)
    for source, target, mode in files.mounts():
        c.with_volume_mapping(source, target, mode)
    c.ports[MANAGEMENT_PORT] = ("127.0.0.1", free_port())  # type: ignore[index,assignment]
    return c


def fetch_root(management_url: str, listener: Pki, into: Path, timeout: float) -> Path:
    """The root pebble made at its start (the trust anchor of every certificate it issues),
    followed by its intermediate: a browser told to trust certificates by their public key
    (Chromium's --ignore-certificate-errors-spki-list) matches the chain the edge serves, which
    holds the intermediate but not the root."""
    context = ssl.create_default_context(cafile=str(listener.ca_cert))
    context.check_hostname = False  # the published port is reached at 127.0.0.1, not `pebble`
    deadline = time.monotonic() + timeout
    pems = []
    for path in ("roots/0", "intermediates/0"):
        while True:
            try:
                with urllib.request.urlopen(  # noqa: S310 - https to the run's own pebble
                    f"{management_url}/{path}", timeout=5, context=context
                ) as resp:
                    pems.append(resp.read().strip() + b"\n")
                    break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise TargetUnavailable(
                        f"containers target: pebble's {path} at {management_url} cannot be "
                        f"read ({exc})"
                    ) from None
                time.sleep(0.5)
    into.write_bytes(b"".join(pems))
    return into


def any_certificate() -> ssl.SSLContext:
    """A client context that accepts whatever certificate the edge serves (readiness only)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def run_client(container: Any, command: tuple[str, ...]) -> str:
    """Run one of the ACME client's commands in its container; what it did (its deploy hook's
    line where it deployed a certificate), or raise with its output."""
    result = container.exec_run(list(command))
    output = result.output.decode(errors="replace").strip()
    if result.exit_code != 0:
        raise TargetUnavailable(
            f"`{' '.join(command)}` in {container.name} exited {result.exit_code}: {output[-500:]}"
        )
    said = [line.strip() for line in output.splitlines() if "edge-certificate:" in line]
    return said[-1] if said else output.splitlines()[-1] if output else ""


def first_certificate(container: Any, log: Callable[[str], None]) -> None:
    """The ACME client's first certificate, asked for as soon as pebble runs (its own first
    try, at its start, found no CA yet; it would try again only after CHATSDK_RENEW_RETRY).
    Tried again while its own run holds certbot's lock; a deployment that cannot get one is
    handed over as it is (its edge serves the bootstrap certificate, and the probes fail it)."""
    deadline = time.monotonic() + FIRST_CERTIFICATE_WITHIN_S
    while True:
        try:
            log(f"first certificate: {run_client(container, ISSUE_COMMAND)}")
            return
        except TargetUnavailable as exc:
            if time.monotonic() > deadline:
                log(f"no first certificate within {FIRST_CERTIFICATE_WITHIN_S:.0f} s: {exc}")
                return
            time.sleep(1)


@dataclass(frozen=True)
class AcmeRenewal:
    """The certbot service's forced renewal (base.CertificateRenewal)."""

    container: Any  # the docker SDK's Container
    schedule: str

    def renew(self) -> str:
        return run_client(self.container, RENEW_COMMAND)


def address_on(container: Any, network: str) -> str:
    container.reload()
    networks: Mapping[str, Any] = container.attrs["NetworkSettings"]["Networks"]
    return str(networks[network]["IPAddress"])

"""Many clients of the edge from this machine, and this machine as the containers reach it,
for the containers target.

The engine's published ports show every connection from this machine to the edge as one client
(the network's gateway), so a probe cannot be a guesser at one address and the credential's
holder at another. The target therefore joins the edge to a network of the run's own and routes
the upper half of that network's range to this machine itself (an "AnyIP" local route): any
address of it can be a client's source, and the edge sees each as a client of its own. Traffic
stays on that network. The route carries its own protocol number (`ROUTE_PROTO`), so a run that
was killed leaves nothing that the next start does not remove (`sweep_routes`).

The other way round, the API containers reach this machine at the gateway of a network of
theirs that is not internal (`gateway`): webhook receivers of the probes listen there.

Routes need root (CAP_NET_ADMIN); without it the target gives no client network and the probes
that need one skip, saying so."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Callable
from typing import Any

from preflight.targets.base import ClientNetwork

NETWORK = "clients"
ROUTE_PROTO = "159"  # marks this module's routes ("ip route ... proto 159"); 0-255, unassigned


def sources_of(subnet: str) -> str:
    """The upper half of a network's range: the engine assigns container addresses from the
    start of it, so these are free for this machine's clients."""
    network = ipaddress.ip_network(subnet)
    return str(list(network.subnets(prefixlen_diff=1))[1])


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=10)


def _local_route(action: str, sources: str) -> subprocess.CompletedProcess[str]:
    where = ("dev", "lo", "table", "local", "proto", ROUTE_PROTO)
    return _ip("route", action, "local", sources, *where)


def route(network: Any, log: Callable[[str], None]) -> str | None:
    """Route the upper half of `network`'s range (a docker SDK Network) to this machine; the
    routed range, or None where this process may not add routes."""
    if os.geteuid() != 0:
        log("no client network for the edge: adding its route needs root")
        return None
    network.reload()
    configs = (network.attrs.get("IPAM") or {}).get("Config") or []
    subnet = next((c["Subnet"] for c in configs if ":" not in c.get("Subnet", ":")), None)
    if subnet is None:
        log(f"no client network for the edge: network {network.name} has no IPv4 range")
        return None
    sources = sources_of(subnet)
    added = _local_route("add", sources)
    if added.returncode != 0:
        log(f"no client network for the edge: `ip route add local {sources}`: {added.stderr}")
        return None
    return sources


def unroute(sources: str) -> None:
    _local_route("del", sources)


def sweep_routes(client: Any) -> None:
    """Remove this module's routes whose network no longer exists (a killed run's)."""
    if os.geteuid() != 0:
        return
    shown = _ip("route", "show", "table", "local", "proto", ROUTE_PROTO)
    if shown.returncode != 0:
        return
    live = {
        sources_of(c["Subnet"])
        for n in client.networks.list()
        for c in ((n.attrs.get("IPAM") or {}).get("Config") or [])
        if ":" not in c.get("Subnet", ":")
    }
    for line in shown.stdout.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0] == "local" and fields[1] not in live:
            unroute(fields[1])


def client_network(container: Any, network: Any, sources: str, port: int) -> ClientNetwork:
    """The edge container's address on `network`, for clients from `sources`."""
    container.reload()
    networks = container.attrs["NetworkSettings"]["Networks"]
    address = networks[network.name]["IPAddress"]
    return ClientNetwork((address, port), sources)


def gateway(network: Any) -> str | None:
    """This machine's address on `network` (a docker SDK Network), where its containers reach
    it; None for an internal network, which has no way out."""
    network.reload()
    if network.attrs.get("Internal"):
        return None
    configs = (network.attrs.get("IPAM") or {}).get("Config") or []
    return next((str(c["Gateway"]) for c in configs if c.get("Gateway")), None)

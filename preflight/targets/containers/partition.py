"""The partition drills' hands on the containers target: cut every API container off one store's
network and heal the cut, while the store and the API containers keep running.

A cut drops every packet between the API containers and the containers on the store's network,
in each API container's own network namespace (`iptables -j DROP`, entered from this machine
with `nsenter`): the store's name still resolves and its address is still routed, but nothing
answers, not even a refusal. That is what a real partition looks like to a client (a switch or
a security group gone wrong): a new connection waits for a SYN-ACK that never comes, and a
command on a connection already held waits for an answer, so every wait the API has no bound
for shows. (Disconnecting the containers from the network instead made the store's name stop
resolving, so a new connection failed at once and an unbounded wait went unseen whenever the
command happened to take a new connection.) The heal deletes the same rules.

It needs root on this machine (as the engine does) and its `iptables` and `nsenter`; nothing
changes in the containers, which need no NET_ADMIN of their own.

A store can be cut off alone only where it shares a network with the API containers that no
other store is on: the compose file puts PostgreSQL on `backend` and Redis on `cache`."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preflight.errors import TargetUnavailable
from preflight.targets.containers.compose import Compose

API_SERVICES = ("api", "realtime")
STORES = ("postgres", "redis")


def store_networks(plan: Compose) -> dict[str, str]:
    """store -> the network by which the API services reach it and no other store, for each
    store that has one (a store whose network the API shares with another store cannot be cut
    off alone)."""
    api = [plan.services[name] for name in API_SERVICES if name in plan.services]
    if not api:
        return {}
    api_networks = set.intersection(*(set(service.networks) for service in api))
    found = {}
    for store in STORES:
        if store not in plan.services:
            continue
        others = {
            network
            for other in STORES
            if other != store and other in plan.services
            for network in plan.services[other].networks
        }
        only = sorted((set(plan.services[store].networks) & api_networks) - others)
        if len(only) == 1:
            found[store] = only[0]
    return found


@dataclass(frozen=True)
class Member:
    """An API container and the names it answers to on a network (its replica's, its
    service's)."""

    container: Any  # the docker SDK's Container
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class NetworkCut:
    """base.NetworkPartition over the run's networks."""

    networks: Mapping[str, Any]  # store -> the docker SDK's Network only it shares with the API
    members: Sequence[Member]
    # store -> the rules in place: (pid whose network namespace holds it, the rule)
    _rules: dict[str, list[tuple[int, tuple[str, ...]]]] = field(default_factory=dict)

    @property
    def stores(self) -> tuple[str, ...]:
        return tuple(self.networks)

    def cut(self, store: str) -> str:
        network = self._network(store)
        network.reload()
        ours = {member.container.id for member in self.members}
        peers = sorted(
            str(attached["IPv4Address"]).split("/")[0]
            for container_id, attached in (network.attrs.get("Containers") or {}).items()
            if container_id not in ours and attached.get("IPv4Address")
        )
        if not peers:
            raise TargetUnavailable(f"no container answers on {store}'s network {network.name}")
        rules = self._rules.setdefault(store, [])
        for member in self.members:
            member.container.reload()
            pid = int(member.container.attrs["State"]["Pid"])
            if not pid:
                continue  # not running: nothing to cut
            for peer in peers:
                for rule in (("OUTPUT", "-d", peer), ("INPUT", "-s", peer)):
                    _iptables(pid, "-I", rule)
                    rules.append((pid, rule))
        names = ", ".join(member.aliases[0] for member in self.members)
        return (
            f"every packet between {names} and {store}'s network {network.name} "
            f"({', '.join(peers)}) dropped in the API containers' network namespaces "
            "(iptables DROP; the names still resolve)"
        )

    def heal(self, store: str) -> None:
        for pid, rule in self._rules.pop(store, []):
            # A container restarted since the cut has a new namespace without the rule.
            _iptables(pid, "-D", rule, gone_ok=True)

    def _network(self, store: str) -> Any:
        network = self.networks.get(store)
        if network is None:
            raise TargetUnavailable(
                f"the API containers cannot be cut off {store} alone: no network of the compose "
                f"file joins only them and {store} (can be cut: {', '.join(self.stores) or 'none'})"
            )
        return network


def _iptables(pid: int, action: str, rule: tuple[str, ...], gone_ok: bool = False) -> None:
    """`iptables <action> <rule> -j DROP` in the network namespace of process `pid`."""
    chain, *match = rule
    command = ["nsenter", "-t", str(pid), "-n", "iptables", "-w", action, chain, *match]
    try:
        done = subprocess.run(
            [*command, "-j", "DROP"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetUnavailable(
            f"cannot cut the network: `{' '.join(command)}` failed ({exc}); the partition drills "
            "need root on this machine and its iptables and nsenter (apt-get install iptables "
            "util-linux)"
        ) from exc
    if done.returncode != 0 and not (gone_ok and not Path(f"/proc/{pid}").exists()):
        raise TargetUnavailable(
            f"cannot {'cut' if action == '-I' else 'heal'} the network: `{' '.join(command)}` "
            f"exited {done.returncode}: {done.stderr.strip()[-300:]}"
        )

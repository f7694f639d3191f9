"""The partition drills' hands on the containers target: cut every API container off one store's
network (`docker network disconnect`) and heal the cut (`docker network connect`, with the
aliases the container had), while the store and the API containers keep running.

Why the engine's networks and not a firewall inside the containers: the compose file already
says who may reach whom by the networks each service joins, so a partition is the same change
an operator or a broken network makes to it, applied by the engine to the run's own containers
(nothing needs NET_ADMIN inside them, nor a tool on the host besides the engine). After a cut
the store's name no longer resolves in the API containers, and packets of connections they
already hold to it reach nothing: the store's network is internal, routed to nowhere else.

A store can be cut off alone only where it shares a network with the API containers that no
other store is on: the compose file puts PostgreSQL on `backend` and Redis on `cache`."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

    @property
    def stores(self) -> tuple[str, ...]:
        return tuple(self.networks)

    def cut(self, store: str) -> str:
        network = self._network(store)
        for member in self.members:
            if self._joined(member, network):
                network.disconnect(member.container)
        names = ", ".join(member.aliases[0] for member in self.members)
        return f"{names} disconnected from network {network.name} ({store}'s)"

    def heal(self, store: str) -> None:
        network = self._network(store)
        for member in self.members:
            if not self._joined(member, network):
                network.connect(member.container, aliases=list(member.aliases))

    def _network(self, store: str) -> Any:
        network = self.networks.get(store)
        if network is None:
            raise TargetUnavailable(
                f"the API containers cannot be cut off {store} alone: no network of the compose "
                f"file joins only them and {store} (can be cut: {', '.join(self.stores) or 'none'})"
            )
        return network

    @staticmethod
    def _joined(member: Member, network: Any) -> bool:
        with contextlib.suppress(Exception):
            member.container.reload()
        joined = (member.container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return network.name in joined

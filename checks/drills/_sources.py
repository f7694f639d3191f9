"""Drill clients of the edge that each send from an address of their own, where this machine
can be many clients of it (ProbeTarget.clients): a workload of 100 messages/s from one address
would meet the edge's per-address rate limit, which judges clients, not deploys."""

from __future__ import annotations

from collections.abc import Callable

from checks._chat import Actor
from preflight.client import ChatClient
from preflight.probe.target import ProbeTarget


def own_addresses(target: ProbeTarget, timeout: float) -> Callable[[Actor], ChatClient] | None:
    """Each sender's client from an address of its own (None: only one address reaches the
    edge from here, and the workload shares it)."""
    clients = target.clients
    if clients is None:
        return None

    def client_for(actor: Actor) -> ChatClient:
        source = target.client_address()
        assert source is not None
        own = actor.client
        return ChatClient(own.base_url, own.ca_file, own.headers, timeout, source, clients.address)

    return client_for

"""Drill clients of the edge that each send from an address of their own, where this machine
can be many clients of it (ProbeTarget.clients): a workload of 100 messages/s from one address
would meet the edge's per-address rate limit, which judges clients, not deploys."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from checks._chat import Actor
from preflight.client import ChatClient
from preflight.probe.target import ProbeTarget


class _FromConnection(http.client.HTTPSConnection):
    """HTTPS to the edge's name (TLS verified for it, sent as Host) by way of `via`, from
    `source`."""

    def __init__(self, client: OwnAddressClient) -> None:
        url = urlsplit(client.base_url)
        super().__init__(
            url.hostname or "",
            url.port or 443,
            context=client.ssl_context(),
            timeout=client.timeout,
        )
        self._via, self._source = client.via, client.source

    def connect(self) -> None:
        sock = socket.create_connection(self._via, self.timeout, (self._source, 0))
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass
class OwnAddressClient(ChatClient):
    """A ChatClient whose connections leave from `source` for the edge at `via`."""

    source: str = "127.0.0.1"
    via: tuple[str, int] = ("127.0.0.1", 443)

    def _connection(self) -> http.client.HTTPSConnection:
        me = threading.get_ident()
        with self._lock:
            conn = self._conns.get(me)
            if conn is None:
                conn = self._conns[me] = _FromConnection(self)
        return conn


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
        return OwnAddressClient(
            own.base_url, own.ca_file, own.headers, timeout, source=source, via=clients.address
        )

    return client_for

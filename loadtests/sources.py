"""Client source addresses: each load user connects from its own address of a network.

An edge limits requests and connections per client address. Every user of a load generator
comes from the generator's one address, so against the real limits a few hundred users look
like one abusive client and get 429s that no real crowd would. With PREFLIGHT_SOURCE_NET set
(a CIDR network this machine can send from), each user picks one address of it and binds
both its HTTP connections and its WebSockets to it, so the edge sees as many clients as there
are users and keeps its limits as configured. Any address of 127.0.0.0/8 works on loopback
without set-up; `preflight run` sets 127.64.0.0/10 when the target's edge is on loopback.

An edge reached through a published port (a container engine's) shows every client of this
machine as one address, whatever it binds to. Such a target gives a client network instead:
the edge's address on a network this machine may send from any address of. `preflight run`
then sets PREFLIGHT_SOURCE_NET to that network and PREFLIGHT_EDGE_ADDRESS to the edge's
address on it (host:port); users connect there instead of to the URL's host and port, and TLS
is still verified for the URL's host name.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

SOURCE_NET_ENV = "PREFLIGHT_SOURCE_NET"
EDGE_ADDRESS_ENV = "PREFLIGHT_EDGE_ADDRESS"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RNG = random.Random()  # noqa: S311 - spreading addresses, not security


def source_network(
    value: str | None = None,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network from PREFLIGHT_SOURCE_NET (or `value`); None when unset."""
    raw = (os.environ.get(SOURCE_NET_ENV, "") if value is None else value).strip()
    if not raw:
        return None
    try:
        network = ipaddress.ip_network(raw, strict=False)
    except ValueError as exc:
        raise ValueError(f"{SOURCE_NET_ENV}={raw!r} is not a network in CIDR form: {exc}") from None
    if network.num_addresses < 4:
        raise ValueError(f"{SOURCE_NET_ENV}={raw!r} has too few addresses to spread users over")
    return network


def edge_address(value: str | None = None) -> tuple[str, int] | None:
    """Where to connect instead of the URL's host and port, from PREFLIGHT_EDGE_ADDRESS (or
    `value`), as host:port; None when unset."""
    raw = (os.environ.get(EDGE_ADDRESS_ENV, "") if value is None else value).strip()
    if not raw:
        return None
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{EDGE_ADDRESS_ENV}={raw!r} is not host:port")
    return host.strip("[]"), int(port)


def pick_source(network: Network | None) -> str | None:
    """One host address of `network` (never its first or last), or None without a network."""
    if network is None:
        return None
    offset = RNG.randrange(1, network.num_addresses - 1)
    return str(network.network_address + offset)


def bind_http_client_pool(pool: Any, source: str, address: tuple[str, int] | None = None) -> None:
    """Make every HTTP connection of a geventhttpclient HTTPClientPool (a FastHttpUser's
    `client.client.clientpool`) leave from `source`, to `address` when given (the request's
    Host and the TLS server name stay the URL's).

    geventhttpclient has no source-address option; its ConnectionPool documents
    `_create_tcp_socket` as the socket factory to override, so each new client's pool gets one
    that binds before connecting; it connects to its `_connection_host` and `_connection_port`
    (a proxy's, when one is used) and names `_request_host` to TLS."""
    get_client = pool.get_client

    def bound_get_client(url: Any) -> Any:
        client = get_client(url)
        connections = client._connection_pool
        if getattr(connections, "preflight_source", None) != source:
            create = connections._create_tcp_socket

            def create_bound(family: int, socktype: int, protocol: int) -> Any:
                sock = create(family, socktype, protocol)
                sock.bind((source, 0))
                return sock

            connections._create_tcp_socket = create_bound
            connections.preflight_source = source
            if address is not None:
                connections._connection_host, connections._connection_port = address
        return client

    pool.get_client = bound_get_client


def connect_from(
    url: str,
    source: str,
    timeout: float,
    context: ssl.SSLContext | None,
    address: tuple[str, int] | None = None,
) -> socket.socket:
    """A connected socket from `source` to the WebSocket URL's host (or to `address`, TLS still
    verified for the URL's host), TLS-wrapped for wss://, to hand to websocket-client's
    create_connection(socket=...)."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if secure else 80)
    sock = socket.create_connection(
        address or (host, port), timeout=timeout, source_address=(source, 0)
    )
    if not secure:
        return sock
    try:
        assert context is not None, "wss needs a TLS context"
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise

"""The client's address as the API should judge it: the TCP peer, or what a trusted proxy says.

Behind the NGINX edge every request comes from the edge's address. The edge overwrites
`X-Real-IP` and `X-Forwarded-For` with its own TCP peer (system/nginx/proxy/headers.conf), so
those headers name the client, but only on a request that really came from the edge: from any
other peer they are whatever the client wrote, and they are ignored. The proxies whose headers
count are CHATSDK_TRUSTED_PROXIES (default: loopback, where the edge of the native target runs).

`X-Real-IP` wins; without it the last (rightmost) valid entry of `X-Forwarded-For` is taken,
the one the trusted proxy itself added. An IPv6 client is keyed by its /64: one host usually
holds a whole /64, and keying single addresses would let it rotate through 2^64 of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

from chatsdk.keys import SETTINGS

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
REAL_IP_HEADER = "X-Real-IP"
FORWARDED_FOR_HEADER = "X-Forwarded-For"
IPV6_CLIENT_PREFIX = 64
UNKNOWN = "unknown"


def parse_ip(text: str | None) -> IPAddress | None:
    """An IP address from a header or a peer name; IPv4-mapped IPv6 becomes IPv4; else None."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _last_forwarded(header: str | None) -> IPAddress | None:
    """The rightmost valid address of an X-Forwarded-For list."""
    for part in reversed((header or "").split(",")):
        address = parse_ip(part)
        if address is not None:
            return address
    return None


def _trusted(peer: IPAddress, proxies: Iterable[IPNetwork]) -> bool:
    return any(peer.version == net.version and peer in net for net in proxies)


def client_ip(request: web.Request) -> IPAddress | None:
    """The client's IP address: the peer's, or the forwarded one when the peer is trusted."""
    peer = parse_ip(request.remote)
    if peer is None or not _trusted(peer, request.app[SETTINGS].trusted_proxies):
        return peer
    forwarded = parse_ip(request.headers.get(REAL_IP_HEADER)) or _last_forwarded(
        request.headers.get(FORWARDED_FOR_HEADER)
    )
    return forwarded or peer


def client_key(address: IPAddress | None) -> str:
    """What limits are kept per: an IPv4 address, or an IPv6 address's /64 network."""
    if address is None:
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False)
        return str(network)
    return str(address)


def client_address(request: web.Request) -> str:
    """The key of the request's client (see client_key)."""
    return client_key(client_ip(request))

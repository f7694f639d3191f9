"""Load users each connect from their own address (loadtests/sources.py), so an edge's
per-address limits see a crowd rather than one client; and `preflight run` picks the network."""

from __future__ import annotations

import http.server
import importlib
import ipaddress
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from geventhttpclient.client import HTTPClientPool

from preflight.load.locust import LOADTESTS, LOOPBACK_SOURCE_NET, source_net_for

sys.path.insert(0, str(LOADTESTS))
sources: Any = importlib.import_module("sources")  # loadtests/sources.py


def test_the_network_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sources.SOURCE_NET_ENV, raising=False)
    assert sources.source_network() is None
    monkeypatch.setenv(sources.SOURCE_NET_ENV, "127.64.0.0/10")
    assert sources.source_network() == ipaddress.ip_network("127.64.0.0/10")


@pytest.mark.parametrize(
    ("value", "says"),
    [("127.64.0.0/33", "is not a network in CIDR form"), ("10.0.0.1/31", "too few addresses")],
)
def test_a_bad_network_is_refused_naming_the_variable(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as raised:
        sources.source_network(value)
    assert f"PREFLIGHT_SOURCE_NET={value!r}" in str(raised.value)


def test_picked_addresses_are_hosts_of_the_network_and_spread() -> None:
    network = ipaddress.ip_network("127.100.0.0/30")
    picked = {sources.pick_source(network) for _ in range(200)}
    assert picked == {"127.100.0.1", "127.100.0.2"}, "never the network or broadcast address"
    assert sources.pick_source(None) is None


@pytest.mark.parametrize(
    ("edge_url", "configured", "expected"),
    [
        ("https://127.0.0.1:8443", None, LOOPBACK_SOURCE_NET),
        ("https://[::1]:8443", None, ""),
        ("https://chat.example.com", None, ""),
        ("https://10.1.2.3", None, ""),
        ("https://127.0.0.1:8443", "", ""),
        ("https://10.1.2.3", "10.9.0.0/24", "10.9.0.0/24"),
    ],
)
def test_preflight_spreads_users_on_loopback_only_unless_told(
    edge_url: str, configured: str | None, expected: str
) -> None:
    assert source_net_for(edge_url, configured) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), ("172.18.0.5:8443", ("172.18.0.5", 8443)), ("[fd00::5]:8443", ("fd00::5", 8443))],
)
def test_the_edge_address_is_host_and_port(value: str, expected: tuple[str, int] | None) -> None:
    assert sources.edge_address(value) == expected


@pytest.mark.parametrize("value", ["172.18.0.5", "172.18.0.5:https", ":8443"])
def test_an_edge_address_without_a_port_is_named(value: str) -> None:
    with pytest.raises(ValueError, match="PREFLIGHT_EDGE_ADDRESS"):
        sources.edge_address(value)


class _Peers(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.client_address[0])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def peers() -> Iterator[tuple[int, list[str]]]:
    _Peers.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Peers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], _Peers.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_connections_of_a_bound_pool_leave_from_the_source(
    peers: tuple[int, list[str]],
) -> None:
    port, seen = peers
    pool = HTTPClientPool(connection_timeout=5, network_timeout=5)
    sources.bind_http_client_pool(pool, "127.77.0.9")
    try:
        for _ in range(2):
            response = pool.get_client(f"http://127.0.0.1:{port}/").get("/")
            assert response.status_code == 200
            response.read()
    finally:
        pool.close()
    assert seen == ["127.77.0.9", "127.77.0.9"]


def test_an_unbound_pool_leaves_from_the_default_address(peers: tuple[int, list[str]]) -> None:
    """Control: without the binding the server sees the loopback address it listens on."""
    port, seen = peers
    pool = HTTPClientPool(connection_timeout=5, network_timeout=5)
    try:
        pool.get_client(f"http://127.0.0.1:{port}/").get("/").read()
    finally:
        pool.close()
    assert seen == ["127.0.0.1"]


def test_a_websocket_socket_connects_from_the_source() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        sock = sources.connect_from(f"ws://127.0.0.1:{port}/v1/realtime", "127.88.1.2", 5, None)
        try:
            accepted, peer = listener.accept()
            accepted.close()
        finally:
            sock.close()
    assert peer[0] == "127.88.1.2"

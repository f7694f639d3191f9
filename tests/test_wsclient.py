"""preflight.wsclient against a real TLS 1.3 WebSocket server (websockets' own, in a thread):
the server sends session tickets right after the handshake, as NGINX does, while the client
writes its upgrade request; messages larger than one TLS record come back whole; a server's
close reaches the client."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from preflight.targets.pki import Pki, make_pki
from preflight.wsclient import connect

BIG = 300_000  # about 19 TLS records of 16 KiB


def _handler(conn: ServerConnection) -> None:
    for message in conn:
        assert isinstance(message, str)
        if message == "big":
            conn.send("x" * BIG)
        elif message == "bye":
            conn.close(4401, "bye")
            return
        else:
            conn.send(f"echo:{message}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("wsclient-pki"))


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.num_tickets = 2  # what OpenSSL servers (NGINX included) send by default
    context.load_cert_chain(pki.server_chain, pki.server_key)
    srv: Server = serve(_handler, "127.0.0.1", 0, ssl=context, max_size=None)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"wss://127.0.0.1:{srv.socket.getsockname()[1]}/v1/realtime"
    finally:
        srv.shutdown()
        thread.join(timeout=5)


def client_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def test_many_connections_each_get_their_answer(server: str, pki: Pki) -> None:
    for i in range(500):
        with connect(server, ssl=client_context(pki.ca_cert), open_timeout=5) as conn:
            conn.send(f"m{i}")
            assert conn.recv(timeout=5) == f"echo:m{i}"


def test_a_message_of_many_tls_records_arrives_whole(server: str, pki: Pki) -> None:
    with connect(server, ssl=client_context(pki.ca_cert), max_size=None) as conn:
        conn.send("big")
        assert conn.recv(timeout=10) == "x" * BIG
        conn.send("after")
        assert conn.recv(timeout=5) == "echo:after"


def test_the_servers_close_code_reaches_the_client(server: str, pki: Pki) -> None:
    with connect(server, ssl=client_context(pki.ca_cert)) as conn:
        conn.send("bye")
        with pytest.raises(ConnectionClosed):
            conn.recv(timeout=5)
        assert conn.protocol.close_rcvd is not None
        assert conn.protocol.close_rcvd.code == 4401


def test_the_certificate_is_verified(server: str, tmp_path: Path) -> None:
    stranger = make_pki(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(server, ssl=client_context(stranger.ca_cert), open_timeout=5)

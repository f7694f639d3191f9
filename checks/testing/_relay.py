"""A TCP relay that makes a probe a client of the edge with an address of its own: it listens on
the edge's host at a port of its own and carries each connection, byte for byte (TLS passes
through untouched, still verified for the edge's name), to the edge's address where this machine
can be many clients (ProbeTarget.clients), sent from one address of those clients. A fuzzer that
cannot be told where to send from (schemathesis opens its own connections) is pointed at the
relay instead, so its failed credentials count against that address's throttle only, never
against the address the other probes share."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit, urlunsplit

from preflight.probe.target import ProbeTarget

CONNECT_TIMEOUT_S = 10.0
CHUNK = 64 * 1024


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until either side ends; then end both (the other pump finds them closed)."""
    try:
        while chunk := source.recv(CHUNK):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def _carry(client: socket.socket, via: tuple[str, int], source: str) -> None:
    try:
        upstream = socket.create_connection(via, CONNECT_TIMEOUT_S, (source, 0))
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


@contextmanager
def relayed(target: ProbeTarget) -> Iterator[tuple[str, str | None]]:
    """(the edge URL to use, the client address the edge sees): the relay's URL while it runs,
    or the edge's own URL and None where only one client address reaches the edge."""
    source = target.client_address()
    clients = target.clients
    if source is None or clients is None:
        yield target.edge_url, None
        return
    url = urlsplit(target.edge_url)
    host = url.hostname or "127.0.0.1"
    listener = socket.create_server((host, 0))
    port = listener.getsockname()[1]
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(
                target=_carry, args=(client, clients.address, source), daemon=True
            ).start()

    acceptor = threading.Thread(target=accept, name="edge-relay", daemon=True)
    acceptor.start()
    try:
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        yield urlunsplit((url.scheme, netloc, url.path, "", "")), source
    finally:
        stopping.set()
        # On Linux, shutting a listening socket down wakes the accept() blocked on it.
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(timeout=CONNECT_TIMEOUT_S)

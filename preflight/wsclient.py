"""WebSocket connections over TLS for probes, drills and tests, safe for the client's two threads.

websockets' synchronous client reads in a background thread while the caller writes. Over a
plain `ssl.SSLSocket` both threads then drive one OpenSSL connection at once, which OpenSSL does
not allow: when the server's TLS 1.3 session tickets arrive just as the client writes its
upgrade request (right after the TLS handshake), the request can be lost and the handshake
times out although the server answered every byte it received. On a busy machine this happened
about once in a few hundred connections, and a probe would have read it as the target's fault.

`connect()` gives websockets a socket whose TLS state lives in memory (`ssl_module.MemoryBIO`) and
is touched under one lock, with the network reads and writes outside it, so the two threads
never meet inside OpenSSL. Everything else (timeouts, Origin, close codes) is websockets' own."""

from __future__ import annotations

import socket
import ssl as ssl_module
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.sync.utils import Deadline

T = TypeVar("T")

RECV_BUFSIZE = 65536


class TLSSocket:
    """The socket-like object websockets' sync connection needs (recv, sendall, and the raw
    socket's fileno/shutdown/close/settimeout), with TLS in memory behind a lock."""

    def __init__(
        self, raw: socket.socket, context: ssl_module.SSLContext, server_hostname: str
    ) -> None:
        self.raw = raw
        self._incoming = ssl_module.MemoryBIO()
        self._outgoing = ssl_module.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._state = threading.Lock()  # the TLS object and its two buffers
        self._send = threading.Lock()  # keeps the records on the wire in the order TLS made them
        self._run(self._tls.do_handshake)

    def _flush(self) -> None:
        """Send what TLS has written to the outgoing buffer, in order: pulling the bytes and
        sending them happen under the send lock, so no other thread's records overtake them."""
        with self._send:
            with self._state:
                data = self._outgoing.read()
            if data:
                self.raw.sendall(data)

    def _feed(self) -> None:
        """Wait for bytes from the network (outside both locks) and hand them to TLS."""
        received = self.raw.recv(RECV_BUFSIZE)
        with self._state:
            if received:
                self._incoming.write(received)
            else:
                self._incoming.write_eof()

    def _attempt(self, op: Callable[[], T]) -> tuple[bool, T | None]:
        with self._state:
            try:
                return True, op()
            except ssl_module.SSLWantReadError:
                return False, None

    def _run(self, op: Callable[[], T]) -> T:
        """Run one TLS operation (handshake or read), feeding it network bytes until it
        completes; what it writes (a handshake message, a key update) is sent as it goes."""
        while True:
            done, value = self._attempt(op)
            if self._outgoing.pending:
                self._flush()
            if done:
                return value  # type: ignore[return-value]
            self._feed()

    def recv(self, bufsize: int) -> bytes:
        """At least one byte of application data, and whatever else TLS already holds (bytes
        left in the memory buffer are invisible to websockets' wait on the socket)."""
        try:
            chunks = [self._run(lambda: self._tls.read(bufsize))]
            while True:
                done, more = self._attempt(lambda: self._tls.read(RECV_BUFSIZE))
                if not done or not more:
                    break
                chunks.append(more)
        except (ssl_module.SSLEOFError, ssl_module.SSLZeroReturnError):
            return b""  # the peer closed: websockets reads it as the end of the stream
        return b"".join(chunks)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        with self._send:
            with self._state:
                self._tls.write(data)  # a memory BIO takes it all; TLS 1.3 never renegotiates
                out = self._outgoing.read()
            self.raw.sendall(out)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def connect(
    url: str,
    *,
    ssl: ssl_module.SSLContext | None = None,
    open_timeout: float = 10,
    source_address: tuple[str, int] | None = None,
    via: tuple[str, int] | None = None,
    **kwargs: Any,
) -> ClientConnection:
    """websockets' `connect(url, ...)` with the same arguments; for a wss:// URL the TLS runs in
    a `TLSSocket`. `source_address` binds the client's end (a loopback address of the caller's
    choosing, as the throttling tests use); `via` (wss:// only) is the address to reach the
    URL's host at, TLS still verified for the URL's name."""
    parts = urlsplit(url)
    if parts.scheme != "wss":  # no TLS, no race: websockets' own connect (its extra keyword
        if source_address is not None:  # arguments go to socket.create_connection)
            kwargs["source_address"] = source_address
        return _connect(url, open_timeout=open_timeout, **kwargs)
    deadline = Deadline(open_timeout)
    host = parts.hostname or ""
    address = via or (host, parts.port or 443)
    raw = socket.create_connection(address, deadline.timeout(), source_address)
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        raw.settimeout(deadline.timeout())
        tls = TLSSocket(raw, ssl or ssl_module.create_default_context(), host)
        raw.settimeout(None)
    except BaseException:
        raw.close()
        raise
    # The TLS is done here, so websockets speaks plain HTTP over it: the ws:// form of the same
    # URL gives the same request line and Host header.
    plain = urlunsplit(("ws", parts.netloc, parts.path, parts.query, ""))
    return _connect(plain, sock=tls, open_timeout=deadline.timeout(), **kwargs)


# websockets' connect() is overloaded on its deprecated `legacy` flag; this module uses the
# current connection class only.
_connect: Callable[..., ClientConnection] = ws_connect

"""`target.pg`: the target's PostgreSQL as the application sees it (asyncpg with the target's
DSN, the application role's view), plus a raw look at what the server asks of a client before
any password is sent."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import struct
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg

T = TypeVar("T")

TIMEOUT_S = 10.0
# What a PostgreSQL server answers a startup message with (the Authentication request codes of
# the frontend/backend protocol).
AUTH_REQUESTS = {
    0: "none (trust)",
    2: "Kerberos",
    3: "cleartext password",
    5: "MD5",
    7: "GSSAPI",
    9: "SSPI",
    10: "SASL",
}
SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PROTOCOL_3 = 196608


def where(dsn: str) -> str:
    """host:port/database of a DSN, without credentials, for messages."""
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


class Postgres:
    """One DSN's server: each call opens a connection, does its work and closes it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @property
    def where(self) -> str:
        """host:port/database, without credentials, for messages."""
        return where(self.dsn)

    def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]], **connect: Any) -> T:
        """Open one connection (DSN values overridden by `connect`), run `work`, close it."""

        async def run() -> T:
            conn = await asyncpg.connect(
                self.dsn, timeout=TIMEOUT_S, command_timeout=TIMEOUT_S, **connect
            )
            try:
                return await work(conn)
            finally:
                await conn.close(timeout=TIMEOUT_S)

        return asyncio.run(run())

    def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        return self.run(lambda conn: conn.fetch(sql, *args))

    def show(self, *names: str) -> dict[str, str]:
        """Current values of server settings, as the application role sees them."""

        async def show(conn: asyncpg.Connection) -> dict[str, str]:
            return {name: str(await conn.fetchval(f"SHOW {name}")) for name in names}

        return self.run(show)

    def login(self, user: str, password: str) -> str:
        """Try a login as `user` with `password` to this server: "accepted" or why not."""

        async def whoami(conn: asyncpg.Connection) -> str:
            return str(await conn.fetchval("SELECT current_user"))

        try:
            self.run(whoami, user=user, password=password)
        except (
            asyncpg.InvalidPasswordError,
            asyncpg.InvalidAuthorizationSpecificationError,
        ) as exc:
            return f"refused ({type(exc).__name__})"
        except asyncpg.PostgresError as exc:
            # e.g. no pg_hba.conf line for this user: refused before any password was asked.
            return f"refused ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        finally:
            # asyncpg leaves the TLS transport of a refused connection to the garbage collector;
            # its "unclosed transport" ResourceWarning would surface in a later test at random.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()
        return "accepted"

    def auth_request(self, user: str) -> str:
        """The authentication the server asks of `user` before any password is sent: "SASL
        SCRAM-SHA-256", "MD5", "none (trust)", ... or "error: <message>" (e.g. no pg_hba.conf
        line). Speaks the protocol's first two messages itself, over TLS when offered."""
        parts = urlsplit(self.dsn)
        host, port = parts.hostname or "127.0.0.1", parts.port or 5432
        database = unquote(parts.path.lstrip("/")) or user
        sock = socket.create_connection((host, port), timeout=TIMEOUT_S)
        try:
            sock.sendall(SSL_REQUEST)
            if sock.recv(1) == b"S":
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # only the authentication request is judged
                sock = context.wrap_socket(sock, server_hostname=host)
            params = f"user\0{user}\0database\0{database}\0\0".encode()
            sock.sendall(struct.pack("!ii", 8 + len(params), PROTOCOL_3) + params)
            kind, length = struct.unpack("!ci", _read(sock, 5))
            body = _read(sock, length - 4)
        finally:
            sock.close()
        if kind == b"E":
            fields = dict((f[:1], f[1:]) for f in body.split(b"\0") if f)
            return f"error: {fields.get(b'M', b'?').decode(errors='replace')}"
        if kind != b"R":
            return f"unexpected message {kind!r}"
        code = struct.unpack("!i", body[:4])[0]
        name = AUTH_REQUESTS.get(code, f"code {code}")
        if code == 10:
            mechanisms = [m.decode() for m in body[4:].split(b"\0") if m]
            name += " " + ",".join(mechanisms)
        return name


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {len(data)} bytes")
        data += chunk
    return data

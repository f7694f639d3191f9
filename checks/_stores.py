"""The target's data stores as the application sees them: PostgreSQL through `target.pg_dsn`
(asyncpg, the application role's view) and Redis through `target.redis_url` (redis-py), plus
raw looks at what each server asks of a client that brings no or other credentials."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import struct
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg
import redis

T = TypeVar("T")

TIMEOUT_S = 10.0
# Passwords that ship in documentation, images and examples, tried against every account; a
# configured secret must not be one of them either.
WELL_KNOWN_PASSWORDS = (
    "",
    "postgres",
    "password",
    "admin",
    "root",
    "changeme",
    "secret",
    "chatsdk",
    "foobared",  # the example in redis.conf
    "redis",
    "minioadmin",
    "123456",
)
MIN_SECRET_LENGTH = 16
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


# -- PostgreSQL ---------------------------------------------------------------------------------


def pg_where(dsn: str) -> str:
    """host:port/database of a DSN, without credentials, for messages."""
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def pg_run(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]], **connect: Any) -> T:
    """Open one connection (DSN values overridden by `connect`), run `work` on it, close it."""

    async def run() -> T:
        conn = await asyncpg.connect(dsn, timeout=TIMEOUT_S, command_timeout=TIMEOUT_S, **connect)
        try:
            return await work(conn)
        finally:
            await conn.close(timeout=TIMEOUT_S)

    return asyncio.run(run())


def pg_fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    return pg_run(dsn, lambda conn: conn.fetch(sql, *args))


def pg_show(dsn: str, *names: str) -> dict[str, str]:
    """Current values of server settings, as the application role sees them."""

    async def show(conn: asyncpg.Connection) -> dict[str, str]:
        return {name: str(await conn.fetchval(f"SHOW {name}")) for name in names}

    return pg_run(dsn, show)


def pg_login(dsn: str, user: str, password: str) -> str:
    """Try a login as `user` with `password` to the DSN's server: "accepted" or why not."""

    async def whoami(conn: asyncpg.Connection) -> str:
        return str(await conn.fetchval("SELECT current_user"))

    try:
        pg_run(dsn, whoami, user=user, password=password)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        return f"refused ({type(exc).__name__})"
    except asyncpg.PostgresError as exc:
        # e.g. no pg_hba.conf line for this user: refused before any password was asked.
        return f"refused ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    finally:
        # asyncpg leaves the TLS transport of a refused connection to the garbage collector; its
        # "unclosed transport" ResourceWarning would surface in some later test at random.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    return "accepted"


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


def pg_auth_request(dsn: str, user: str) -> str:
    """The authentication the server asks of `user` before any password is sent: "SASL
    SCRAM-SHA-256", "MD5", "none (trust)", ... or "error: <message>" (e.g. no pg_hba.conf line).
    Speaks the protocol's first two messages itself, over TLS when the server offers it."""
    parts = urlsplit(dsn)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    database = unquote(parts.path.lstrip("/")) or user
    sock = socket.create_connection((host, port), timeout=TIMEOUT_S)
    try:
        sock.sendall(SSL_REQUEST)
        if sock.recv(1) == b"S":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # only the authentication request is judged here
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


def is_loopback(address: str) -> bool:
    return address in LOOPBACK_NAMES or address.startswith("127.")


# -- Redis --------------------------------------------------------------------------------------


def redis_where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


def redis_password(url: str) -> str | None:
    password = urlsplit(url).password
    return unquote(password) if password is not None else None


def redis_client(url: str, *, credentials: tuple[str | None, str] | None = None) -> redis.Redis:
    """A client for the target's Redis: with the URL's credentials, or with (username, password)
    instead of them, or with none at all when `credentials` is ("", "")."""
    kwargs: dict[str, Any] = {"socket_timeout": TIMEOUT_S, "socket_connect_timeout": TIMEOUT_S}
    if credentials is None:
        return redis.Redis.from_url(url, **kwargs)
    parts = urlsplit(url)
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    username, password = credentials
    return redis.Redis.from_url(
        bare, username=username or None, password=password or None, **kwargs
    )


def redis_info(url: str, section: str) -> Mapping[str, Any]:
    with redis_client(url) as client:
        info: Mapping[str, Any] = client.info(section)
        return info


def redis_unauthenticated(url: str, command: bytes = b"PING") -> str:
    """What Redis answers a client that sends `command` before any AUTH or HELLO (one RESP line,
    e.g. "-NOAUTH Authentication required." or "+PONG"), spoken on a bare socket so no client
    library's handshake gets in the way."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    sock = socket.create_connection((host, port), timeout=TIMEOUT_S)
    try:
        if parts.scheme == "rediss":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # only the answer to an unauthenticated client
            sock = context.wrap_socket(sock, server_hostname=host)
        sock.sendall(command + b"\r\n")
        answer = b""
        while not answer.endswith(b"\r\n"):
            chunk = sock.recv(512)
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    return answer.decode(errors="replace").splitlines()[0] if answer else "(connection closed)"


def redis_try(url: str, credentials: tuple[str | None, str]) -> str:
    """PING with other credentials (or none): "accepted" or the server's refusal."""
    try:
        with redis_client(url, credentials=credentials) as client:
            client.ping()
    except redis.AuthenticationError as exc:
        return f"refused ({exc})"
    except redis.ResponseError as exc:
        return f"refused ({exc})"
    return "accepted"


def weak_secret(value: str, extra: Iterable[str] = ()) -> str | None:
    """Why a configured secret is weak, or None: too short, or a well-known value."""
    if value.lower() in {*WELL_KNOWN_PASSWORDS, *extra}:
        return "a well-known value"
    if len(value) < MIN_SECRET_LENGTH:
        return f"{len(value)} characters, fewer than {MIN_SECRET_LENGTH}"
    return None

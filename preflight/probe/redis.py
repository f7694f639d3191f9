"""`target.redis`: the target's Redis through redis-py with the target's URL, or with other
credentials or none, plus what the server answers a bare socket before any AUTH."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import redis

TIMEOUT_S = 10.0


def where(url: str) -> str:
    """host:port of a Redis URL, without credentials, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


class Redis:
    """One URL's server: each call opens a client or a socket and closes it."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def where(self) -> str:
        return where(self.url)

    @property
    def password(self) -> str | None:
        """The URL's password (None: it names none)."""
        password = urlsplit(self.url).password
        return unquote(password) if password is not None else None

    def client(self, *, credentials: tuple[str | None, str] | None = None) -> redis.Redis:
        """A client with the URL's credentials, or with (username, password) instead of them,
        or with none at all when `credentials` is ("", "")."""
        kwargs: dict[str, Any] = {
            "socket_timeout": TIMEOUT_S,
            "socket_connect_timeout": TIMEOUT_S,
        }
        if credentials is None:
            return redis.Redis.from_url(self.url, **kwargs)
        parts = urlsplit(self.url)
        bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        username, password = credentials
        return redis.Redis.from_url(
            bare, username=username or None, password=password or None, **kwargs
        )

    def info(self, section: str) -> Mapping[str, Any]:
        with self.client() as client:
            info: Mapping[str, Any] = client.info(section)
            return info

    def unauthenticated(self, command: bytes = b"PING") -> str:
        """What Redis answers a client that sends `command` before any AUTH or HELLO (one RESP
        line, e.g. "-NOAUTH Authentication required." or "+PONG"), spoken on a bare socket so
        no client library's handshake gets in the way."""
        parts = urlsplit(self.url)
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

    def attempt(self, credentials: tuple[str | None, str]) -> str:
        """PING with other credentials (or none): "accepted" or the server's refusal."""
        try:
            with self.client(credentials=credentials) as client:
                client.ping()
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            return f"refused ({exc})"
        return "accepted"

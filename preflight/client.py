"""A small synchronous client for the chat API of a target: what probes, drills and tests use
to talk to the system under test through its edge (TLS verified with the target's CA)."""

from __future__ import annotations

import http.client
import json as jsonlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

if TYPE_CHECKING:
    from preflight.targets.base import TargetInfo


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    method: str = ""
    path: str = ""

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def error_code(self) -> str | None:
        try:
            return str(self.json()["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return None

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status} {self.body[:300]!r}"


class _FromConnection(http.client.HTTPSConnection):
    """HTTPS to the edge's name (TLS verified for it, sent as Host) by way of `via`, from
    `source`: one client of the edge among many where this machine can be many
    (ProbeTarget.clients)."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        timeout: float,
        *,
        source: str,
        via: tuple[str, int],
    ) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._tls, self._via, self._source = context, via, source

    def connect(self) -> None:
        sock = socket.create_connection(self._via, self.timeout, (self._source, 0))
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


@dataclass
class ChatClient:
    base_url: str
    ca_file: Path | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    # A client address of its own (ProbeTarget.client_address) and the edge's address to reach
    # it at (ClientNetwork.address); None: the connection leaves as the system chooses.
    source: str | None = None
    via: tuple[str, int] | None = None
    # One kept-alive connection per thread; closed by close() and when the client is dropped.
    _conns: dict[int, http.client.HTTPSConnection] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_target(cls, info: TargetInfo) -> ChatClient:
        return cls(info.edge.url, info.edge.ca_file)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("https://", "wss://", 1) + "/v1/realtime"

    def with_headers(self, **headers: str) -> ChatClient:
        merged = {**self.headers, **{k.replace("_", "-"): v for k, v in headers.items()}}
        return ChatClient(self.base_url, self.ca_file, merged, self.timeout, self.source, self.via)

    def from_address(self, source: str, via: tuple[str, int]) -> ChatClient:
        """The same client, its connections leaving from `source` for the edge at `via`."""
        return ChatClient(self.base_url, self.ca_file, self.headers, self.timeout, source, via)

    def as_admin(self, admin_key: str) -> ChatClient:
        return self.with_headers(**{"X-Admin-Key": admin_key})

    def as_app(self, api_key: str) -> ChatClient:
        return self.with_headers(**{"X-API-Key": api_key})

    def as_user(self, access_token: str) -> ChatClient:
        return self.with_headers(Authorization=f"Bearer {access_token}")

    def _connection(self) -> http.client.HTTPSConnection:
        me = threading.get_ident()
        with self._lock:
            conn = self._conns.get(me)
            if conn is None:
                url = urlsplit(self.base_url)
                host, port, tls = url.hostname or "", url.port or 443, self.ssl_context()
                if self.source is not None and self.via is not None:
                    conn = _FromConnection(
                        host, port, tls, self.timeout, source=self.source, via=self.via
                    )
                else:
                    conn = http.client.HTTPSConnection(
                        host, port, context=tls, timeout=self.timeout
                    )
                self._conns[me] = conn
        return conn

    def _drop_connection(self) -> None:
        with self._lock:
            conn = self._conns.pop(threading.get_ident(), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()

    def __del__(self) -> None:
        for conn in getattr(self, "_conns", {}).values():
            conn.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> Response:
        all_headers = dict(self.headers)
        if json is not None:
            body = jsonlib.dumps(json).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        if query:
            path = f"{path}?{urlencode({k: v for k, v in query.items() if v is not None})}"
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                resp = conn.getresponse()
                data = resp.read()
            except (
                http.client.RemoteDisconnected,
                BrokenPipeError,
                ConnectionResetError,
                ssl.SSLEOFError,
            ):
                # A kept-alive connection the server closed meanwhile (over TLS the write can
                # meet the close_notify first: SSLEOFError): one fresh try.
                self._drop_connection()
                if attempt == 2:
                    raise
                continue
            except BaseException:
                self._drop_connection()  # never leave a half-used connection for the next call
                raise
            if resp.getheader("Connection", "").lower() == "close":
                self._drop_connection()
            headers_out = {k.lower(): v for k, v in resp.getheaders()}
            return Response(resp.status, headers_out, data, method, path)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> Response:
        return self.request("PATCH", path, json=json, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> Response:
        return self.request("PUT", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)


def expect(resp: Response, status: int) -> Any:
    """The JSON body of a response that must have `status`; one-sentence failure otherwise."""
    __tracebackhide__ = True
    if resp.status != status:
        raise AssertionError(f"{resp.method} {resp.path} must answer {status} (got {resp})")
    return resp.json() if resp.body else None


# How long a probe waits in all for the edge's per-address limit to let it through.
RATE_LIMIT_PATIENCE_S = 10.0


def polite(request: Callable[[], Response]) -> Response:
    """Make a request the way a well-behaved client does: a 429 (the edge's per-address or the
    API's per-user limit) is waited out, Retry-After by Retry-After, for up to
    RATE_LIMIT_PATIENCE_S. Probes share one client address and the limits are not what these
    probes judge; SEC-RATELIMIT's probes call the client directly."""
    deadline = time.monotonic() + RATE_LIMIT_PATIENCE_S
    while True:
        response = request()
        if response.status != 429 or time.monotonic() >= deadline:
            return response
        try:
            wait = float(response.headers.get("retry-after", "1"))
        except ValueError:
            wait = 1.0
        time.sleep(min(max(wait, 0.2), 2.0))

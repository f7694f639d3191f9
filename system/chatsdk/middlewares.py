"""Request id, metrics and the JSON error contract, applied to every request."""

from __future__ import annotations

import errno
import logging
import re
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import redis.exceptions
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from chatsdk.errors import ApiError
from chatsdk.keys import LIFECYCLE, METRICS, REQUEST_ID
from chatsdk.logs import bind_request_context, request_id_var

log = logging.getLogger("chatsdk.http")

REQUEST_ID_HEADER = "X-Request-ID"
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

ERROR_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}
# Failures of PostgreSQL or Redis reaching a handler: connection refused or lost, the server
# shutting down or starting up, a pool closing under a restart, a timed-out round trip.
DEPENDENCY_DOWN: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    # A pooled connection the server terminated while it sat idle (a restart) is left mid-error
    # by asyncpg and refuses the next query this way; the pool drops it on release.
    asyncpg.InternalClientError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    # The store's name no longer resolves: on a container network a stopped service leaves
    # the network's DNS until it starts again.
    socket.gaierror,
)
# ... or its address is gone from the network (a stopped container's address): plain OSErrors.
UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN})


def dependency_down(exc: BaseException) -> bool:
    """PostgreSQL or Redis is unavailable, as opposed to a bug."""
    return isinstance(exc, DEPENDENCY_DOWN) or (
        isinstance(exc, OSError) and exc.errno in UNREACHABLE
    )


# Headers of an aiohttp HTTPException worth keeping on the JSON error (e.g. Allow on 405).
KEPT_HEADERS = (hdrs.ALLOW, hdrs.RETRY_AFTER, hdrs.WWW_AUTHENTICATE)


def request_id_of(request: web.Request) -> str:
    return request.get(REQUEST_ID) or request_id_var.get() or "-"


def error_body(request: web.Request, code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id_of(request)}}


def error_response(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.json_response(error_body(request, code, message), status=status, headers=headers)


def _message_for(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "No resource matches this path."
    if exc.status == 405:
        return f"Method {request.method} is not allowed on this path."
    if exc.status == 413:
        return "The request body is too large."
    reason = exc.reason or "Error"
    return reason if reason.endswith(".") else f"{reason}."


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = supplied if SANE_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    # A fresh log context per request: ids set by auth (app_id, user_id) never leak into the
    # next request served on the same connection.
    with bind_request_context(request_id, request):
        return await handler(request)


@web.middleware
async def drain_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts the HTTP requests being served, so the drain waits for them (a WebSocket is not
    counted: the drain closes it with 1001). And from SIGTERM on, every answer says
    `Connection: close` and ends its connection: a proxy that keeps idle connections to this
    worker (the edge's upstream keepalive) learns of the drain one answer at a time while the
    listener is still open, instead of finding its pooled connections closed under a request
    it has just sent, which it may not retry (a POST)."""
    lifecycle = request.app[LIFECYCLE]
    if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
        return await handler(request)
    lifecycle.begin()
    try:
        response = await handler(request)
    finally:
        lifecycle.end()
    if lifecycle.draining and not response.prepared:
        response.force_close()
    return response


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    # on_response_prepare also covers streamed responses and WebSocket handshakes.
    response.headers[REQUEST_ID_HEADER] = request_id_of(request)


def _request_size(request: web.Request) -> int:
    if request.content_length is not None:
        return request.content_length
    # Chunked bodies: what the handler actually read.
    return int(getattr(request.content, "total_bytes", 0))


def _response_size(response: web.StreamResponse | None) -> int | None:
    if response is None or isinstance(response, web.WebSocketResponse):
        return None  # a socket's traffic is not a response body
    if response.prepared:
        # Streamed by the handler (downloads): the bytes it wrote.
        return response.body_length
    return response.content_length if response.content_length is not None else 0


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        # Route templates only (/v1/channels/{channel_id}), never raw paths; unknown paths share
        # one label, so scanners cannot blow up the label cardinality.
        route = resource.canonical if resource is not None else UNMATCHED_ROUTE
        method = request.method if request.method in KNOWN_METHODS else "OTHER"
        metrics = request.app[METRICS]
        metrics.http_requests.labels(method, route, str(status)).inc()
        metrics.http_duration.labels(method, route).observe(time.perf_counter() - started)
        metrics.http_request_size.labels(method, route).observe(_request_size(request))
        size = _response_size(response)
        if size is not None:
            metrics.http_response_size.labels(method, route).observe(size)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {str(name): exc.headers[name] for name in KEPT_HEADERS if name in exc.headers}
        code = ERROR_CODES.get(exc.status, "http_error")
        return error_response(request, exc.status, code, _message_for(request, exc), headers)
    except Exception as exc:
        if dependency_down(exc):
            # A database that went away mid-request is the contract's 503, not a server bug.
            log.warning("dependency unavailable in %s %s: %s", request.method, request.path, exc)
            return error_response(
                request,
                503,
                "dependency_unavailable",
                "A backing service is unavailable; retry shortly.",
                {"Retry-After": "2"},
            )
        # The stack trace goes to the log and, from the log, to error tracking
        # (chatsdk/errortracking.py), never to the client.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(
            request, 500, "internal_error", "The server failed to answer this request."
        )

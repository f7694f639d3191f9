"""JSON-lines logging on stderr, with the request id, app and user of the current request.

Secrets never reach a log line: every formatted line goes through `redact`, which masks JWTs,
API keys, webhook secrets, passwords in URLs, and the exact values of the configured secrets
(admin key, JWT secret, database and Redis passwords) wherever they appear, e.g. when a client
sends them in a path. Query strings are never logged (the access line has the path only).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from chatsdk.logship import Shipper

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chatsdk_request_id", default=None
)
app_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chatsdk_app_id", default=None
)
user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chatsdk_user_id", default=None
)
# The request being served, for error tracking's event (errortracking.scrub_event).
request_var: contextvars.ContextVar[BaseRequest | None] = contextvars.ContextVar(
    "chatsdk_request", default=None
)

ACCESS_LOGGER_NAME = "chatsdk.access"
MASK = "[redacted]"
MIN_SECRET_LEN = 8  # shorter "secrets" would mask ordinary words
SECRET_PATTERNS = (
    # JWTs (header.payload.signature, base64url; the header always starts with eyJ).
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    # API keys: ck_<key_id>.<secret>; webhook signing secrets.
    re.compile(r"ck_[A-Za-z0-9_]+\.[A-Za-z0-9_-]{8,}"),
    re.compile(r"whsec_[A-Za-z0-9_-]{8,}"),
)
URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s\"]*:)[^@\s\"]+@", re.IGNORECASE)


@dataclass(frozen=True)
class Identity:
    app_id: str
    user_id: str | None


LOG_IDENTITY = web.RequestKey("log_identity", Identity)


@contextlib.contextmanager
def bind_request_context(request_id: str, request: BaseRequest | None = None) -> Iterator[None]:
    """A fresh log context for one request; everything set in it is undone at the end."""
    tokens = (
        request_id_var.set(request_id),
        app_id_var.set(None),
        user_id_var.set(None),
    )
    request_token = request_var.set(request)
    try:
        yield
    finally:
        request_var.reset(request_token)
        user_id_var.reset(tokens[2])
        app_id_var.reset(tokens[1])
        request_id_var.reset(tokens[0])


def bind_identity(request: web.Request, app_id: str, user_id: str | None = None) -> None:
    """Called by auth once the caller is known: later log lines of the request carry both."""
    app_id_var.set(app_id)
    user_id_var.set(user_id)
    request[LOG_IDENTITY] = Identity(app_id, user_id)


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        found = set(self.secrets)
        for value in secrets:
            if value and len(value) >= MIN_SECRET_LEN:
                found.add(value)
                found.add(json.dumps(value)[1:-1])  # as it appears inside a JSON string
        # Longest first, so a secret containing another is masked whole.
        self.secrets = tuple(sorted(found, key=len, reverse=True))

    def __call__(self, line: str) -> str:
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, MASK)
        for pattern in SECRET_PATTERNS:
            line = pattern.sub(MASK, line)
        return URL_PASSWORD.sub(rf"\g<1>{MASK}@", line)


def url_password(url: str) -> str:
    try:
        password = urlsplit(url).password
    except ValueError:
        return ""
    return unquote(password) if password else ""


class JsonFormatter(logging.Formatter):
    def __init__(self, worker_id: str, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.worker_id = worker_id
        self.redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "worker_id": self.worker_id,
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        app_id = getattr(record, "app_id", None) or app_id_var.get()
        if app_id is not None:
            entry["app_id"] = app_id
        user_id = getattr(record, "user_id", None) or user_id_var.get()
        if user_id is not None:
            entry["user_id"] = user_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info is not None:
            entry["exc"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry, default=str, ensure_ascii=False))


def configure_logging(
    level: str,
    worker_id: str,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
    ship_to: str = "",
) -> None:
    """`secrets`: values masked wherever they appear (admin key, JWT secret, passwords).
    `ship_to`: the central log store's host:port, which gets every line too (logship.py)."""
    formatter = JsonFormatter(worker_id, Redactor(secrets))
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if ship_to:
        shipper = Shipper(ship_to, formatter)
        shipper.start()
        atexit.register(shipper.stop)
        root.addHandler(shipper.handler)
    root.setLevel(level)
    # aiohttp's own access logger is replaced by JsonAccessLogger below.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class JsonAccessLogger(AbstractAccessLogger):
    """One access line per request, as a JSON object (plugged in as aiohttp's access_log_class)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        request_id = response.headers.get("X-Request-ID")
        identity = request.get(LOG_IDENTITY)
        self.logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={
                "request_id": request_id,
                "app_id": identity.app_id if identity is not None else None,
                "user_id": identity.user_id if identity is not None else None,
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "duration_ms": round(time * 1000, 3),
                },
            },
        )


def access_logger() -> logging.Logger:
    return logging.getLogger(ACCESS_LOGGER_NAME)

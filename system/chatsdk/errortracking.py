"""Error tracking: unhandled errors reach Sentry (or anything that speaks its envelope protocol),
tagged with the request id and the release. Off unless CHATSDK_SENTRY_DSN is set.

What reports: every log record at ERROR or above becomes an event (sentry-sdk's logging
integration). The error middleware logs each unhandled request error with `log.exception`
before it answers the contract's JSON 500, so that error is reported with its exception and
stack; failures of the background tasks (outbox, webhooks, realtime) are reported the same way.
Each event carries the tags `request_id` (the X-Request-ID of the request it happened in, the
same id the JSON error shows; absent outside a request) and `worker_id`, the release
`chatsdk@<version>` and the environment (CHATSDK_SENTRY_ENVIRONMENT, default `production`).

Never sent: credentials and personal data. send_default_pii is off; request bodies, cookies,
query strings and the client address are dropped; of the request headers only a short list of
harmless ones is kept (Authorization, X-API-Key and X-Admin-Key never leave); local variables
are not captured; and every string of the event passes through the same redaction as the logs
(the configured secrets' values, JWTs, API keys, webhook secrets, passwords in URLs).

`POST /v1/admin/debug/error` (admin only) raises ErrorTrackingVerification on purpose: the
verification route Sentry's documentation recommends, to see an event arrive end to end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import sentry_sdk
from aiohttp import web
from aiohttp.typedefs import Handler
from sentry_sdk.integrations.logging import LoggingIntegration, ignore_logger
from sentry_sdk.integrations.stdlib import StdlibIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
from sentry_sdk.utils import BadDsn, Dsn

from chatsdk.auth import require_admin
from chatsdk.errors import ChatSDKError, SettingsError
from chatsdk.logs import ACCESS_LOGGER_NAME, Redactor, request_id_var, request_var
from chatsdk.version import __version__

log = logging.getLogger("chatsdk.errortracking")

DSN_VAR = "CHATSDK_SENTRY_DSN"
ENVIRONMENT_VAR = "CHATSDK_SENTRY_ENVIRONMENT"
RELEASE = f"chatsdk@{__version__}"
DEFAULT_ENVIRONMENT = "production"
VERIFY_PATH = "/v1/admin/debug/error"
# Request headers an event may carry; everything else (credentials, cookies, forwarded client
# addresses) is dropped.
KEPT_HEADERS = frozenset(
    {"host", "user-agent", "accept", "content-type", "content-length", "x-request-id"}
)
# Keys the SDK's own scrubber blanks anywhere in the event, besides its defaults.
DENYLIST = ("x-admin-key", "x_admin_key", "x-api-key", "admin_key", "jwt_secret")


class ErrorTrackingVerification(ChatSDKError):
    """Raised on purpose by POST /v1/admin/debug/error to show that error tracking works."""


@dataclass(frozen=True)
class ErrorTracking:
    """Where events go; `dsn` empty means error tracking is off."""

    dsn: str = field(default="", repr=False)
    environment: str = DEFAULT_ENVIRONMENT
    release: str = RELEASE

    @property
    def enabled(self) -> bool:
        return bool(self.dsn)

    @property
    def host(self) -> str:
        return urlsplit(self.dsn).hostname or ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ErrorTracking:
        dsn = environ.get(DSN_VAR, "").strip()
        if dsn:
            try:
                parsed = Dsn(dsn)
            except BadDsn as exc:
                raise SettingsError(
                    f"{DSN_VAR} must be a Sentry DSN like https://<key>@<host>/<project_id> ({exc})"
                ) from None
            if parsed.scheme not in ("http", "https"):
                raise SettingsError(f"{DSN_VAR} must be an http:// or https:// DSN")
        environment = environ.get(ENVIRONMENT_VAR, "").strip() or DEFAULT_ENVIRONMENT
        # Sentry's rules for environment names: no newlines or slashes, at most 64 characters.
        if len(environment) > 64 or any(c in environment for c in "/\n\r\t"):
            raise SettingsError(
                f"{ENVIRONMENT_VAR} must be at most 64 characters without slashes or newlines "
                f"(got {environment!r})"
            )
        return cls(dsn=dsn, environment=environment)


def _redacted(value: Any, redact: Redactor) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item, redact) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item, redact) for item in value]
    return value


def _request_json(request: web.BaseRequest | None) -> dict[str, Any] | None:
    """The event's request section for the request being served (None outside a request): its
    URL without the query string, its method, and its headers (kept ones only, below)."""
    if request is None:
        return None
    return {
        "url": f"{request.scheme}://{request.host}{request.path}",
        "method": request.method,
        "headers": dict(request.headers),
    }


@web.middleware
async def scope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each request gets a scope of its own in the error tracker: the breadcrumbs (log lines) an
    event carries are its own request's, never another's served meanwhile. A few microseconds;
    the SDK's aiohttp integration, which did this and opened a transaction and a release-health
    session for every request, cost the workers 7-10 % of their CPU under load."""
    with sentry_sdk.isolation_scope() as scope:
        scope.clear_breadcrumbs()
        return await handler(request)


def scrub_event(
    event: dict[str, Any], _hint: Mapping[str, Any], *, redact: Redactor, worker_id: str
) -> dict[str, Any]:
    """sentry-sdk's before_send: add the request id, drop what may identify or authenticate
    someone, mask every secret left in any string."""
    tags = event.get("tags")
    tags = dict(tags) if isinstance(tags, dict) else dict(tags or [])
    request_id = request_id_var.get()
    if request_id:
        tags["request_id"] = request_id
    tags["worker_id"] = worker_id
    event["tags"] = tags
    if "request" not in event:
        event["request"] = _request_json(request_var.get())
    request = event.get("request")
    if isinstance(request, dict):
        for key in ("cookies", "data", "query_string", "env"):
            request.pop(key, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {
                name: value for name, value in headers.items() if name.lower() in KEPT_HEADERS
            }
    event.pop("user", None)
    scrubbed: dict[str, Any] = _redacted(event, redact)
    return scrubbed


def init_error_tracking(config: ErrorTracking, worker_id: str, secrets: Iterable[str]) -> bool:
    """Start reporting to `config.dsn`; returns whether error tracking is on."""
    if not config.enabled:
        log.info("error tracking off", extra={"fields": {"reason": f"{DSN_VAR} is not set"}})
        return False
    before_send = partial(scrub_event, redact=Redactor(secrets), worker_id=worker_id)
    sentry_sdk.init(
        dsn=config.dsn,
        release=config.release,
        environment=config.environment,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        event_scrubber=EventScrubber(denylist=[*DEFAULT_DENYLIST, *DENYLIST], recursive=True),
        before_send=before_send,  # type: ignore[arg-type]
        # Only what is chosen here: no tracing of database or Redis calls, no http.client
        # breadcrumbs (their URLs may carry signed query strings).
        auto_enabling_integrations=False,
        # Each request's scope and request section come from scope_middleware and
        # scrub_event, not from the SDK's aiohttp integration (see scope_middleware).
        integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
        disabled_integrations=[StdlibIntegration()],
        # Events still queued at exit get 1 s, so the 15 s drain budget barely moves.
        shutdown_timeout=1.0,
    )
    # One access line per request would only fill the breadcrumbs with other requests' paths.
    ignore_logger(ACCESS_LOGGER_NAME)
    log.info(
        "error tracking on",
        extra={
            "fields": {
                "tracker_host": config.host,
                "release": config.release,
                "environment": config.environment,
            }
        },
    )
    return True


routes = web.RouteTableDef()


@routes.post(VERIFY_PATH)
async def verify_error_tracking(request: web.Request) -> web.Response:
    """The error-tracking verification route: an unhandled error on demand, for operators."""
    await require_admin(request)
    raise ErrorTrackingVerification(
        f"raised on purpose by POST {VERIFY_PATH} to verify error tracking"
    )

"""One exception root for chatsdk; every message says what is wrong and what is expected."""

from __future__ import annotations

import math


class ChatSDKError(Exception):
    """Root of every error chatsdk raises on purpose."""


class SettingsError(ChatSDKError):
    """An environment variable is missing or has a bad value; the message names the variable."""


class MigrationError(ChatSDKError):
    """The migration files or the recorded migrations are inconsistent."""


class MigrationChecksumMismatch(MigrationError):
    """An already applied migration was changed after it was applied."""


class ApiError(ChatSDKError):
    """An answer in the contract's error shape: raised by handlers, rendered by the middleware."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class BadCredential(ApiError):
    """A 401 for a credential that does not verify: an unknown API key id or a wrong secret, a
    wrong admin key, a token that does not parse or whose signature does not verify. What
    guessing produces, so it counts against the client (chatsdk/auththrottle.py); an expired or
    revoked credential, which was genuine once, is a plain 401 and does not."""


def bad_request(message: str, code: str = "invalid_input") -> ApiError:
    return ApiError(400, code, message)


def not_found(what: str) -> ApiError:
    # One answer for "does not exist" and "not yours": ids of other apps are not confirmed.
    return ApiError(404, "not_found", f"No {what} with this id is visible to you.")


def unknown_reference(message: str) -> ApiError:
    """409 for a well-formed id in a body that names nothing the caller may reference (a user
    of another app, a message of another channel, an option of another poll). The body's shape
    is right, so not 400; the request's own resource exists, so not 404 (which says the URI
    names nothing); what the id names is missing from the current state: 409. One answer for
    "does not exist" and "not yours"."""
    return ApiError(409, "unknown_reference", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def rate_limited(what: str, wait: float) -> ApiError:
    """429 for too many `what` (a plural), with Retry-After: whole seconds, at least 1."""
    retry_after = max(1, math.ceil(wait))
    return ApiError(
        429,
        "rate_limited",
        f"Too many {what}; retry in {retry_after} s.",
        {"Retry-After": str(retry_after)},
    )


def unavailable(what: str, retry_after: int = 2) -> ApiError:
    return ApiError(
        503,
        "dependency_unavailable",
        f"{what} is unavailable; retry shortly.",
        {"Retry-After": str(retry_after)},
    )

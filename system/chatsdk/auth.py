"""Who is calling: the operator (X-Admin-Key), an app's backend (X-API-Key) or a user (a JWT).

- API keys are `ck_<key_id>.<secret>`: the secret has 256 bits of entropy and is stored only as
  its sha256 (a slow hash adds nothing at that entropy), compared in constant time.
- User tokens are HS256 JWTs from PyJWT with an algorithm allowlist, and `iss`, `aud`, `exp`,
  `nbf`, `iat`, `jti`, `typ` and `ver` required. `ver` is the user's token version in PostgreSQL:
  revocation bumps it, so a restart of anything never un-revokes a token.
- Credentials are never accepted in a query string: such a request is refused outright.
- Every presented credential passes the throttle of failed authentication (auththrottle.py):
  a client or a credential with too many failures gets 429 instead of a verdict.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler

from chatsdk import db
from chatsdk.auththrottle import attempt, guard
from chatsdk.errors import ApiError, BadCredential
from chatsdk.keys import SETTINGS
from chatsdk.logs import bind_identity

ADMIN_HEADER = "X-Admin-Key"
API_KEY_HEADER = "X-API-Key"
ISSUER = "chatsdk"
AUDIENCE = "chatsdk-api"
ALGORITHMS = ["HS256"]  # the allowlist: never "none", never a key-type confusion
ACCESS_TTL = 15 * 60
REFRESH_TTL = 30 * 24 * 3600
REQUIRED_CLAIMS = ["iss", "aud", "exp", "nbf", "iat", "jti", "sub", "typ", "ver", "app"]
CREDENTIAL_QUERY_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "token",
        "access_token",
        "refresh_token",
        "admin_key",
        "jwt",
        "auth",
        "authorization",
        "x-api-key",
        "x-admin-key",
    }
)
MAX_CLAIM_NAME = 128  # the longest app id or user id a token's unverified claims may name
ADMIN_CREDENTIAL = "admin key"


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


def bad_credential(message: str) -> BadCredential:
    """A 401 for a credential that does not verify, which the throttle counts."""
    return BadCredential(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class User:
    app_id: str
    user_id: str


@web.middleware
async def no_credentials_in_query(request: web.Request, handler: Handler) -> web.StreamResponse:
    if any(name.lower() in CREDENTIAL_QUERY_NAMES for name in request.query):
        raise ApiError(
            400,
            "credentials_in_query",
            "Credentials are never accepted in the query string; send them in a header.",
        )
    return await handler(request)


async def require_admin(request: web.Request) -> None:
    given = request.headers.get(ADMIN_HEADER, "")
    if not given:
        raise unauthorized(f"A valid {ADMIN_HEADER} header is required.")
    expected = request.app[SETTINGS].admin_key

    async def verify() -> None:
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise bad_credential(f"A valid {ADMIN_HEADER} header is required.")

    await guard(request, attempt(request, "admin_key", ADMIN_CREDENTIAL), verify)


def new_api_key(key_id: str) -> tuple[str, bytes]:
    """The key to show once, and the hash to store."""
    secret = secrets.token_urlsafe(32)
    return f"ck_{key_id}.{secret}", hashlib.sha256(secret.encode()).digest()


def _well_formed_key(given: str) -> bool:
    return given.startswith("ck_") and "." in given and len(given) <= 200


def api_key_credential(given: str) -> str | None:
    """What the throttle counts an API key's failures against: its key id, if it names one."""
    return f"api key {given[3:].partition('.')[0]}" if _well_formed_key(given) else None


async def _app_of_key(request: web.Request, given: str) -> str:
    """The app of a valid, unrevoked API key; BadCredential for a wrong one."""
    if not _well_formed_key(given):
        raise bad_credential(f"A valid {API_KEY_HEADER} header is required.")
    key_id, _, secret = given[3:].partition(".")
    row = await db.pool(request).fetchrow(
        "SELECT app_id, key_hash, revoked_at FROM api_keys WHERE key_id = $1", key_id
    )
    # Hash and compare even for an unknown key id, so timing does not tell which ids exist.
    stored = bytes(row["key_hash"]) if row is not None else b"\0" * 32
    matches = hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), stored)
    if row is None or not matches:
        raise bad_credential(f"A valid {API_KEY_HEADER} header is required.")
    if row["revoked_at"] is not None:  # genuine but revoked: not a guess
        raise unauthorized(f"A valid {API_KEY_HEADER} header is required.")
    return str(row["app_id"])


async def require_app(request: web.Request) -> str:
    """The app whose valid, unrevoked API key the request carries."""
    given = request.headers.get(API_KEY_HEADER, "")
    if not given:
        raise unauthorized(f"A valid {API_KEY_HEADER} header is required.")
    att = attempt(request, "api_key", api_key_credential(given))
    app_id = await guard(request, att, lambda: _app_of_key(request, given))
    bind_identity(request, app_id)
    return app_id


def mint(secret: str, app_id: str, user_id: str, version: int, typ: str) -> tuple[str, str, int]:
    """A signed token, its jti and its expiry (epoch seconds)."""
    now = int(time.time())
    ttl = ACCESS_TTL if typ == "access" else REFRESH_TTL
    jti = secrets.token_hex(16)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id,
        "app": app_id,
        "typ": typ,
        "ver": version,
        "jti": jti,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHMS[0]), jti, now + ttl


def decode(secret: str, token: str, typ: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=ALGORITHMS,
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": REQUIRED_CLAIMS},
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("The token has expired.") from None
    except (jwt.DecodeError, jwt.InvalidAlgorithmError):
        # Does not parse, or the signature does not verify (a forgery, or a guess).
        raise bad_credential("The token is not valid.") from None
    except jwt.InvalidTokenError:
        # Signed with the secret but refused for a claim: it was issued here, not guessed.
        raise unauthorized("The token is not valid.") from None
    if claims.get("typ") != typ:
        raise unauthorized(f"A {typ} token is required.")
    if not isinstance(claims.get("ver"), int) or not isinstance(claims.get("sub"), str):
        raise unauthorized("The token is not valid.")
    return claims


async def token_version(conn_or_pool: Any, app_id: str, user_id: str) -> int | None:
    row = await conn_or_pool.fetchrow(
        "SELECT token_version, erased_at FROM users WHERE app_id = $1 AND id = $2",
        app_id,
        user_id,
    )
    if row is None or row["erased_at"] is not None:
        return None
    return int(row["token_version"])


def token_credential(token: str) -> str | None:
    """What the throttle counts a token's failures against: the user its claims name, read
    without verifying them (a forgery names its victim); None when they name none."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    app_id, user_id = claims.get("app"), claims.get("sub")
    if not (isinstance(app_id, str) and isinstance(user_id, str)):
        return None
    if not (0 < len(app_id) <= MAX_CLAIM_NAME and 0 < len(user_id) <= MAX_CLAIM_NAME):
        return None
    return f"user {app_id}/{user_id}"


async def decode_guarded(request: web.Request, token: str, typ: str) -> dict[str, Any]:
    """decode() behind the throttle of failed authentication."""

    async def verify() -> dict[str, Any]:
        return decode(request.app[SETTINGS].jwt_secret, token, typ)

    att = attempt(request, f"{typ}_token", token_credential(token))
    return await guard(request, att, verify)


async def user_from_token(request: web.Request | web.Application, token: str) -> User:
    """The user an access token names, if it is valid and not revoked (checked in PostgreSQL).
    With a request, the token passes the throttle of failed authentication first."""
    if isinstance(request, web.Request):
        app = request.app
        claims = await decode_guarded(request, token, "access")
    else:
        app = request
        claims = decode(app[SETTINGS].jwt_secret, token, "access")
    async with db.pool(app).acquire() as conn:
        version = await token_version(conn, claims["app"], claims["sub"])
        conn.mark_stateless()  # one SELECT: no session reset needed (chatsdk/sessionreset.py)
    if version is None or claims["ver"] != version:
        raise unauthorized("The token has been revoked.")
    if isinstance(request, web.Request):
        bind_identity(request, claims["app"], claims["sub"])
    return User(claims["app"], claims["sub"])


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("An Authorization: Bearer <access token> header is required.")
    return token.strip()


async def require_user(request: web.Request) -> User:
    return await user_from_token(request, bearer(request))

"""User tokens under attack (RFC 8725): forged, tampered, re-typed and weakly signed JWTs built
with PyJWT from a real token, over HTTP and at the WebSocket's auth step; credentials in query
strings; revoked keys and tokens; and the signing secret, guessed offline from a genuine token
(the known default and example values, then a dictionary: checks/security/_secret_guess.py)."""

from __future__ import annotations

import base64
import itertools
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from checks._chat import call, created
from checks.security._actors import Actors, ws_authenticate
from checks.security._secret_guess import (
    DICTIONARY,
    DICTIONARY_PACKAGE,
    DIGESTS,
    SUFFIXES,
    dictionary_words,
    guess,
    variants,
)
from preflight.client import Response
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

REPO = Path(__file__).resolve().parents[2]
# Secrets that tutorials, frameworks and sample configurations ship with (RFC 8725 section 3.5:
# a guessable HMAC key lets anyone mint tokens). Values the repository's own examples use are
# added at run time (see sample_secrets).
WEAK_SECRETS = (
    "secret",
    "Secret",
    "SECRET",
    "secretkey",
    "secret-key",
    "secret_key",
    "jwt",
    "jwtsecret",
    "jwt-secret",
    "jwt_secret",
    "your-256-bit-secret",
    "your-secret-key",
    "your_jwt_secret",
    "changeme",
    "change-me",
    "change_me",
    "CHANGE_ME",
    "changethis",
    "password",
    "123456",
    "12345678",
    "qwerty",
    "test",
    "dev",
    "development",
    "default",
    "key",
    "mysecret",
    "my-secret",
    "supersecret",
    "s3cr3t",
    "chatsdk",
    "chatsdk-secret",
    "preflight",
    "example",
    "",
)
SAMPLE_FILES = (
    "system/deploy",
    "system/docs",
    "docs",
    "system/chatsdk/README.md",
    "system/chatsdk/API.md",
    "README.md",
)
SAMPLE_VALUE = r"(?i)jwt[_-]?secret\w*\s*[:=]\s*[\"']?([^\"'\s#]+)"


def sample_secrets() -> list[str]:
    """Values assigned to a JWT secret in the repository's examples and docs."""
    found: list[str] = []
    for relative in SAMPLE_FILES:
        root = REPO / relative
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            # Paths and keys of nested settings (`jwt_secret: file: ...`) are not values.
            found += [m[1] for m in re.finditer(SAMPLE_VALUE, text) if not re.search(r"[/:]", m[1])]
    return list(dict.fromkeys(found))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def unsigned(claims: dict[str, Any], alg: str) -> str:
    header = {"alg": alg, "typ": "JWT"}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


def _alg_none(actors: Actors) -> str:
    return str(jwt.encode(claims_of(actors.owner.access_token), "", algorithm="none"))


def _tampered_signature(actors: Actors) -> str:
    head, body, sig = actors.owner.access_token.split(".")
    raw = bytearray(unb64(sig))
    raw[0] ^= 0x01
    return f"{head}.{body}.{b64(bytes(raw))}"


def _changed_subject(actors: Actors) -> str:
    head, _, sig = actors.owner.access_token.split(".")
    claims = {**claims_of(actors.owner.access_token), "sub": actors.member.user_id}
    return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"


def _weak(secret: str) -> Callable[[Actors], str]:
    def forge(actors: Actors) -> str:
        with warnings.catch_warnings():
            # PyJWT warns about short HMAC keys; signing with one is the point here.
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            claims = claims_of(actors.owner.access_token)
            return str(jwt.encode(claims, secret, algorithm="HS256"))

    return forge


FORGERIES: dict[str, Callable[[Actors], str]] = {
    "alg none": _alg_none,
    "alg None": lambda a: unsigned(claims_of(a.owner.access_token), "None"),
    "alg NONE": lambda a: unsigned(claims_of(a.owner.access_token), "NONE"),
    "tampered signature": _tampered_signature,
    "signature stripped": lambda a: a.owner.access_token.rsplit(".", 1)[0] + ".",
    "changed subject": _changed_subject,
    "refresh token as access token": lambda a: a.owner.refresh_token,
    "garbage": lambda _a: "not-a-jwt",
    "weak secret 'secret'": _weak("secret"),
    "weak secret 'your-256-bit-secret'": _weak("your-256-bit-secret"),
    "weak secret 'changeme'": _weak("changeme"),
}


# The query parameter, and the request it is sent with.
QUERY_CREDENTIALS = {
    "access_token": ("GET", "/v1/me"),
    "api_key": ("POST", "/v1/tokens"),
    "admin_key": ("POST", "/v1/apps"),
}


# Forged and defective tokens are what the throttle of failed authentication counts: they are
# sent from addresses of their own (ProbeTarget.own_client), so that these probes never throttle
# the address the other probes share.
def http_answer(target: ProbeTarget, token: str) -> Response:
    return call(target.own_client().as_user(token), "GET", "/v1/me")


@pytest.mark.checklist("TST-AUTH")
@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_forged_tokens_are_refused_over_http(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog, forgery: str
) -> None:
    """One endpoint without a correct token check exposes everything behind it."""
    token = FORGERIES[forgery](actors)
    response = http_answer(target, token)
    evidence.request(response)
    assert response.status == 401, (
        f"GET /v1/me with a token with {forgery} must be refused with 401 (got {response.status})"
    )


@pytest.mark.checklist("TST-AUTH")
@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_forged_tokens_are_refused_by_the_websocket(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog, forgery: str
) -> None:
    """A realtime endpoint that trusts a forged token streams anyone's messages."""
    answer = ws_authenticate(target, FORGERIES[forgery](actors), own=True)
    evidence.note(f"{target.ws_url} with a token with {forgery}: {answer.what}")
    refused = not answer.accepted and bool(answer.close_code or answer.handshake_status)
    assert refused, f"{target.ws_url} must refuse a token with {forgery} (got {answer.what})"


@pytest.mark.checklist("TST-AUTH")
def test_the_genuine_token_is_accepted(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog
) -> None:
    """Without a working baseline the refusals above would prove nothing."""
    response = http_answer(target, actors.owner.access_token)
    evidence.request(response)
    assert response.status == 200, f"GET /v1/me with a genuine token must answer 200 ({response})"
    answer = ws_authenticate(target, actors.owner.access_token)
    assert answer.accepted, f"{target.ws_url} must accept a genuine token (got {answer.what})"


# Genuinely signed with the deployment's secret, valid but for one claim: what a verifier that
# checks only the signature would accept.
HOUR = 3600
CLAIM_DEFECTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "expired an hour ago": lambda c: {**c, "exp": c["iat"] - HOUR, "iat": c["iat"] - 2 * HOUR},
    "not valid for another hour (nbf)": lambda c: {**c, "nbf": c["iat"] + HOUR},
    "a foreign audience": lambda c: {**c, "aud": "some-other-service"},
    "a foreign issuer": lambda c: {**c, "iss": "https://issuer.invalid"},
}


def resigned(token: str, secret: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> str:
    header = jwt.get_unverified_header(token)
    claims = change(claims_of(token))
    return str(jwt.encode(claims, secret, algorithm=str(header["alg"]), headers=header))


@pytest.mark.checklist("TST-AUTH")
def test_a_token_resigned_unchanged_with_the_secret_is_accepted(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog
) -> None:
    """Without this control the claim refusals below could come from a wrong secret."""
    token = resigned(actors.owner.access_token, target.jwt_secret, lambda c: c)
    response = http_answer(target, token)
    evidence.request(response)
    assert response.status == 200, (
        f"GET /v1/me with the owner's claims re-signed with the target's secret must answer "
        f"200 (got {response.status}); the target's jwt_secret is not the API's"
    )


@pytest.mark.checklist("TST-AUTH")
@pytest.mark.parametrize("defect", list(CLAIM_DEFECTS))
def test_genuinely_signed_tokens_with_a_bad_claim_are_refused(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog, defect: str
) -> None:
    """A verifier that checks only the signature accepts stolen, expired or foreign tokens."""
    token = resigned(actors.owner.access_token, target.jwt_secret, CLAIM_DEFECTS[defect])
    response = http_answer(target, token)
    evidence.request(response)
    assert response.status == 401, (
        f"GET /v1/me with a token {defect} must be refused with 401 (got {response.status})"
    )
    answer = ws_authenticate(target, token, own=True)
    evidence.note(f"{target.ws_url} with a token {defect}: {answer.what}")
    refused = not answer.accepted and bool(answer.close_code or answer.handshake_status)
    assert refused, f"{target.ws_url} must refuse a token {defect} (got {answer.what})"


@pytest.mark.checklist("TST-AUTH")
@pytest.mark.parametrize("where", list(QUERY_CREDENTIALS))
def test_credentials_in_the_query_string_are_refused(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog, where: str
) -> None:
    """Credentials in URLs end up in logs, histories and referrers."""
    method, path = QUERY_CREDENTIALS[where]
    secret = {
        "access_token": actors.owner.access_token,
        "api_key": actors.tenant.api_key,
        "admin_key": target.admin_key,
    }[where]
    body = {"user_id": "query-probe"} if path == "/v1/tokens" else {"name": "query-probe"}
    url = f"{path}?{where}={secret}"
    response = call(target.http, method, url, json=body if method == "POST" else None)
    evidence.request(response)
    assert 400 <= response.status < 500, (
        f"{method} {path} with the {where.replace('_', ' ')} in the query string must be refused "
        f"with a 4xx (got {response.status})"
    )


@pytest.mark.checklist("TST-AUTH")
def test_a_revoked_api_key_is_refused_at_once(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog
) -> None:
    """A leaked key that keeps working after revocation cannot be contained."""
    admin = target.http.as_admin(target.admin_key)
    app_id = actors.tenant.app_id
    key = created(admin, f"/v1/apps/{app_id}/keys", None, "a second API key")
    backend = target.http.as_app(key["api_key"])
    before = call(backend, "POST", "/v1/tokens", json={"user_id": "revoked-key-probe"})
    assert before.status == 201, f"a fresh API key must work before revocation ({before})"
    revoked = call(admin, "DELETE", f"/v1/apps/{app_id}/keys/{key['key_id']}")
    evidence.request(revoked)
    assert revoked.status == 204, f"DELETE of an API key must answer 204 ({revoked})"
    after = call(backend, "POST", "/v1/tokens", json={"user_id": "revoked-key-probe"})
    evidence.request(after)
    assert after.status == 401, (
        f"POST /v1/tokens with a just revoked API key must be refused with 401 (got {after.status})"
    )


@pytest.mark.checklist("TST-AUTH")
def test_revoked_user_tokens_are_refused_at_once(
    target: ProbeTarget, actors: Actors, evidence: EvidenceLog
) -> None:
    """Revocation that waits for token expiry leaves a stolen token usable for its lifetime."""
    victim = actors.tenant.user("revoked")
    assert call(victim.client, "GET", "/v1/me").status == 200, "a fresh token must work"
    revoked = call(actors.tenant.client, "POST", f"/v1/users/{victim.user_id}/revoke")
    evidence.request(revoked)
    assert revoked.status == 204, f"POST /v1/users/{{id}}/revoke must answer 204 ({revoked})"
    after = call(victim.client, "GET", "/v1/me")
    evidence.request(after)
    assert after.status == 401, (
        f"GET /v1/me with a just revoked token must be refused with 401 (got {after.status})"
    )
    answer = ws_authenticate(target, victim.access_token)
    assert not answer.accepted, (
        f"{target.ws_url} must refuse a just revoked token (got {answer.what})"
    )
    refreshed = call(
        target.http, "POST", "/v1/tokens/refresh", json={"refresh_token": victim.refresh_token}
    )
    assert refreshed.status == 401, (
        f"POST /v1/tokens/refresh with a revoked user's refresh token must be refused with 401 "
        f"(got {refreshed.status})"
    )


@pytest.mark.checklist("SEC-JWT-SECRET")
def test_the_signing_secret_is_not_a_known_or_dictionary_value(
    actors: Actors, evidence: EvidenceLog
) -> None:
    """A known or guessable secret lets anyone forge tokens for any user."""
    token = actors.owner.access_token  # the probe's own login: what any user holds
    alg = str(jwt.get_unverified_header(token).get("alg"))
    evidence.note(f"a genuine access token is signed with {alg}")
    assert alg.upper() != "NONE", f"access tokens must be signed (got alg {alg})"
    if alg not in DIGESTS:
        pytest.skip(
            f"access tokens are signed with {alg}, not an HMAC: there is no shared secret to "
            "guess offline"
        )
    known = list(dict.fromkeys([*WEAK_SECRETS, *sample_secrets()]))
    words = dictionary_words()
    candidates = itertools.chain(known, variants(words or []))
    found = guess(token, alg, candidates)
    evidence.figure("jwt_secret_candidates_tried", found.tried)
    evidence.figure("jwt_secret_guess_s", round(found.seconds, 2), "s")
    evidence.note(
        f"tried {found.tried} candidates against the token's {alg} signature in "
        f"{found.seconds:.2f} s: {len(known)} known defaults and example values, then "
        + (
            f"{len(words)} words of {DICTIONARY} ({DICTIONARY_PACKAGE}) as they are, lower-cased "
            f"and capitalised, each with the suffixes {', '.join(repr(s) for s in SUFFIXES)}"
            if words is not None
            else f"no dictionary ({DICTIONARY} is missing)"
        )
    )
    assert found.secret is None, (
        f"the JWT signing secret must not be a default, example or dictionary value (a genuine "
        f"token verifies with {found.secret!r}, guessed after {found.tried} candidates in "
        f"{found.seconds:.1f} s)"
    )
    if words is None:
        pytest.skip(
            f"the secret is none of {len(known)} known values, but the dictionary {DICTIONARY} "
            f"is not installed (scripts/setup.sh installs {DICTIONARY_PACKAGE}), so no "
            "dictionary word was tried"
        )

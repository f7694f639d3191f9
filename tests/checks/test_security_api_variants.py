"""The injection, upload, API key, signing secret and default credential probes against
deliberately broken API code and settings: each defect turns exactly its item red and the reason
names it.

The broken system is the real chatsdk application run in this process, patched or configured
with one defect, on a native target's PostgreSQL and Redis, behind an edge rendered from
system/nginx (the stand-in of tests/checks/test_auth_variants.py). The unpatched stand-in is the
reference: it must pass every item here."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chatsdk.app
import chatsdk.auth
import chatsdk.uploads
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from chatsdk import db
from chatsdk.users import user_json

from preflight.plugin import RunContext, run_probes
from preflight.targets.base import TargetInfo
from tests.checks.support import CHECKLIST, CHECKS, failing, native
from tests.checks.test_auth_variants import stand_in

pytestmark = pytest.mark.native

ITEMS = {
    "SEC-SQLI",
    "SEC-XSS-STORED",
    "SEC-UPLOAD-LIMITS",
    "SEC-APIKEY-ISSUED",
    "SEC-JWT-SECRET",
    "SEC-DEFAULT-CREDS",
}
PATHS = (
    "security/test_input.py",
    "security/test_uploads.py",
    "security/test_authz.py",
    "security/test_jwt.py",
    "security/test_credentials.py",
)
# A dictionary word with a suffix: in /usr/share/dict/words (wamerican) as "sunshine".
WEAK_JWT_SECRET = "Sunshine2024"
DEFAULT_ADMIN_KEY = "changeme"
# aiohttp warns about the hostile filename the upload probe sends, PyJWT about a short key, and
# both go on; a worker process logs those warnings, but this app runs inside the probes' pytest
# run, where warnings are errors.
QUIET = [
    *("-W", "ignore::aiohttp.multipart.BadContentDispositionHeader"),
    *("-W", "ignore::jwt.warnings.InsecureKeyLengthWarning"),
]


def wrap_innermost_middleware(
    monkeypatch: pytest.MonkeyPatch,
    outer: Callable[[web.Request, Callable[[], Awaitable[web.StreamResponse]]], Awaitable[Any]],
) -> None:
    """Put `outer` around the app's innermost middleware: it sees every routed request and
    decides whether and how to call the real handler."""
    inner = chatsdk.auth.no_credentials_in_query

    @web.middleware
    async def wrapped(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await outer(request, lambda: inner(request, handler))  # type: ignore[no-any-return]

    monkeypatch.setattr(chatsdk.app, "no_credentials_in_query", wrapped)


def interpolate_user_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /v1/users/{id} builds its SQL by pasting the path's user id into the query string."""

    async def lookup(
        request: web.Request, real: Callable[[], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = request.match_info.route.resource
        if request.method != "GET" or route is None or route.canonical != "/v1/users/{user_id}":
            return await real()
        user = await chatsdk.auth.require_user(request)
        row = await db.pool(request).fetchrow(
            "SELECT id, name, avatar_url, created_at FROM users WHERE app_id = "  # noqa: S608
            f"'{user.app_id}' AND id = '{request.match_info['user_id']}' AND erased_at IS NULL"
        )
        if row is None:
            return web.json_response({"error": {"code": "not_found"}}, status=404)
        return web.json_response(user_json(row))

    wrap_innermost_middleware(monkeypatch, lookup)


def serve_messages_as_html(monkeypatch: pytest.MonkeyPatch) -> None:
    """A channel's message page is served as text/html, so markup in a message is rendered."""

    async def as_html(
        request: web.Request, real: Callable[[], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await real()
        if request.method == "GET" and request.path.endswith("/messages"):
            response.content_type = "text/html"
        return response

    wrap_innermost_middleware(monkeypatch, as_html)


def sniff_markup_as_html(monkeypatch: pytest.MonkeyPatch) -> None:
    """The upload sniffer labels markup text/html, so an HTML page uploaded as a PNG is served
    as text/html."""
    genuine = chatsdk.uploads.sniff

    def sniff(head: bytes, valid_utf8: bool) -> str:
        return "text/html" if chatsdk.uploads.MARKUP.search(head) else genuine(head, valid_utf8)

    monkeypatch.setattr(chatsdk.uploads, "sniff", sniff)


def ignore_api_key_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """An API key is accepted by its key id alone: its secret part is never compared."""

    async def app_of_key(request: web.Request, given: str) -> str:
        key_id = given[3:].partition(".")[0] if given.startswith("ck_") else ""
        row = await db.pool(request).fetchrow(
            "SELECT app_id FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL", key_id
        )
        if row is None:
            raise chatsdk.auth.bad_credential("A valid X-API-Key header is required.")
        return str(row["app_id"])

    monkeypatch.setattr(chatsdk.auth, "_app_of_key", app_of_key)


@dataclass(frozen=True)
class Variant:
    """One broken system: its item, the defect in one sentence, a pattern its reason must
    match, and what seeds it (a patch of the app, the stand-in's settings)."""

    item: str
    defect: str
    names_it: str
    seed: Callable[[pytest.MonkeyPatch], None] | None = None
    settings: dict[str, str] = field(default_factory=dict)


def _seeded(item: str, seed: Callable[[pytest.MonkeyPatch], None], names_it: str) -> Variant:
    return Variant(item, " ".join((seed.__doc__ or "").split()), names_it, seed)


VARIANTS = {
    "sql-interpolated": _seeded("SEC-SQLI", interpolate_user_lookups, r"GET /v1/users/"),
    "messages-as-html": _seeded(
        "SEC-XSS-STORED", serve_messages_as_html, r"must be served as application/json"
    ),
    "markup-upload-as-html": _seeded(
        "SEC-UPLOAD-LIMITS", sniff_markup_as_html, r"must not be served as text/html"
    ),
    "api-key-secret-ignored": _seeded(
        "SEC-APIKEY-ISSUED", ignore_api_key_secrets, r"right id, wrong secret"
    ),
    "weak-jwt-secret": Variant(
        "SEC-JWT-SECRET",
        f"The API signs its tokens with {WEAK_JWT_SECRET!r}, a dictionary word with a year.",
        r"must not be a default, example or dictionary value \(a genuine token verifies",
        settings={"jwt_secret": WEAK_JWT_SECRET},
    ),
    "default-admin-key": Variant(
        "SEC-DEFAULT-CREDS",
        f"The API's admin key is the default {DEFAULT_ADMIN_KEY!r}.",
        r"must answer 401 to default admin keys",
        settings={"admin_key": DEFAULT_ADMIN_KEY},
    ),
}


def red_items(info: TargetInfo) -> dict[str, str]:
    """Item -> reason of the failing items, the stand-in's address taken out."""
    context = RunContext(target=info, selected=ITEMS)
    results = run_probes([CHECKS / p for p in PATHS], context, CHECKLIST, extra_args=QUIET)
    assert not results.errors, results.errors
    red = failing(results)
    return {item: re.sub(r"127\.0\.0\.1:\d+", "EDGE", reason) for item, reason in red.items()}


@pytest.fixture(scope="module")
def backing() -> Iterator[TargetInfo]:
    """PostgreSQL and Redis (with the schema migrated) from a native target."""
    with native(workers=1) as info:
        yield info


@pytest.fixture(scope="module")
def baseline(backing: TargetInfo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    with stand_in(backing, tmp_path_factory.mktemp("baseline")) as info:
        return red_items(info)


def test_the_unbroken_stand_in_passes_every_item(baseline: dict[str, str]) -> None:
    assert baseline == {}, json.dumps(baseline, indent=1)


# The markers are literal (preflight reads them without importing this module); a test below
# keeps them equal to VARIANTS.
@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(
            "sql-interpolated",
            marks=pytest.mark.turns_red(
                "SEC-SQLI",
                defect="GET /v1/users/{id} builds its SQL by pasting the path's user id into the "
                "query string.",
            ),
            id="sql-interpolated",
        ),
        pytest.param(
            "messages-as-html",
            marks=pytest.mark.turns_red(
                "SEC-XSS-STORED",
                defect="A channel's message page is served as text/html, so markup in a message "
                "is rendered.",
            ),
            id="messages-as-html",
        ),
        pytest.param(
            "markup-upload-as-html",
            marks=pytest.mark.turns_red(
                "SEC-UPLOAD-LIMITS",
                defect="The upload sniffer labels markup text/html, so an HTML page uploaded as "
                "a PNG is served as text/html.",
            ),
            id="markup-upload-as-html",
        ),
        pytest.param(
            "api-key-secret-ignored",
            marks=pytest.mark.turns_red(
                "SEC-APIKEY-ISSUED",
                defect="An API key is accepted by its key id alone: its secret part is never "
                "compared.",
            ),
            id="api-key-secret-ignored",
        ),
        pytest.param(
            "weak-jwt-secret",
            marks=pytest.mark.turns_red(
                "SEC-JWT-SECRET",
                defect="The API signs its tokens with 'Sunshine2024', a dictionary word with a "
                "year.",
            ),
            id="weak-jwt-secret",
        ),
        pytest.param(
            "default-admin-key",
            marks=pytest.mark.turns_red(
                "SEC-DEFAULT-CREDS", defect="The API's admin key is the default 'changeme'."
            ),
            id="default-admin-key",
        ),
    ],
)
def test_a_broken_api_turns_exactly_its_item_red(
    backing: TargetInfo,
    baseline: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variant: str,
) -> None:
    broken = VARIANTS[variant]
    if broken.seed is not None:
        broken.seed(monkeypatch)
    with stand_in(backing, tmp_path, **broken.settings) as info:
        red = red_items(info)
    assert set(red) == {broken.item}, json.dumps(red, indent=1)
    assert re.search(broken.names_it, red[broken.item]), red[broken.item]


def test_the_markers_name_each_variants_item_and_defect() -> None:
    from preflight.redvariants import scan  # noqa: PLC0415

    marked = {
        v.test.split("[")[1].rstrip("]"): (v.items, v.defect)
        for v in scan(Path(__file__).resolve().parents[2])
        if v.test.startswith("tests/checks/test_security_api_variants.py::")
    }
    assert marked == {name: ((v.item,), v.defect) for name, v in VARIANTS.items()}

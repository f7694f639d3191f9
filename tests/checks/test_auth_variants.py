"""The auth, authorization, input, error-shape and request-metrics probes against deliberately
broken API code: each seeded defect turns exactly its items red and the reason names it.

These defects cannot be switched on in the bundled system without adding insecure switches to the
product, so the test runs the real chatsdk application in this process (where a defect can be
patched into it), on the PostgreSQL and Redis of a native target, behind an edge rendered from
system/nginx exactly as the native target renders its own. The probes see a complete deployment
whose only difference is the defect. A baseline run of the unpatched stand-in is the reference:
it must pass every item, and a defect must turn exactly its item red with a reason naming the
defect."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
import shutil
import signal
import ssl
import tempfile
import threading
import traceback
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import chatsdk.app
import chatsdk.auth
import chatsdk.auththrottle
import chatsdk.membership
import chatsdk.realtime
import chatsdk.validation
import jwt
import pytest
import redis
from aiohttp import web
from aiohttp.typedefs import Handler
from chatsdk.errors import ApiError
from chatsdk.middlewares import error_response
from chatsdk.server import RunningServer, start_server
from chatsdk.settings import Settings

from preflight.targets.base import Edge, Observability, TargetInfo
from preflight.targets.edge import EdgeConfig, nginx_command, render_edge, validate_edge
from preflight.targets.pki import make_pki
from preflight.targets.procs import Child, free_port, wait_until
from tests.checks.support import failing, native, probe

pytestmark = pytest.mark.native

# The probes run against every variant (the others need things a stand-in does not change).
ITEMS = {
    "TST-AUTH",
    "SEC-JWT-SECRET",
    "SEC-APIKEY-ISSUED",
    "SEC-TENANT-ISOLATION",
    "SEC-SQLI",
    "SEC-WS-AUTH",
    "SEC-AUTH-THROTTLE",
    "TST-ERRORS",
    "APP-ENV-MODE",
    "DEP-METRICS-FLOWING",
}
PATHS = (
    "security/test_auth_throttle.py",
    "security/test_jwt.py",
    "security/test_authz.py",
    "security/test_input.py",
    "security/test_websocket.py",
    "testing/test_errors.py",
    "application/test_runtime.py",
    "monitoring/test_metrics.py",
)
START_TIMEOUT_S = 30.0


class StandIn:
    """The chatsdk app on an event loop in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.server: RunningServer | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(start_server(self.settings), self.loop)
        self.server = future.result(timeout=START_TIMEOUT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            cleanup = asyncio.run_coroutine_threadsafe(self.server.runner.cleanup(), self.loop)
            cleanup.result(timeout=START_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def _ready(url: str, ca: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ca) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def _answers(url: str, ca: ssl.SSLContext) -> bool:
    """Any HTTP answer (the edge's own 404 included): the edge is listening."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=ca):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextmanager
def edge_for(port: int, **pki_options: Any) -> Iterator[tuple[str, str, Path]]:
    """An edge rendered from system/nginx in front of 127.0.0.1:port: (https url, plain-HTTP url,
    CA file). `pki_options`: make_pki's options for its certificate (default: one valid for
    127.0.0.1)."""
    workdir = Path(tempfile.mkdtemp(prefix="preflight-standin-"))
    workdir.chmod(0o711)  # nginx's unprivileged workers traverse it (see the native target)
    try:
        pki = make_pki(workdir / "pki", **pki_options)
        https_port, http_port = free_port(), free_port()
        conf = render_edge(
            EdgeConfig(
                workdir=workdir / "edge",
                https_port=https_port,
                http_port=http_port,
                upstreams=[("127.0.0.1", port)],
                pki=pki,
            )
        )
        validate_edge(conf)
        edge = Child("nginx", nginx_command(conf), workdir / "nginx.log", signal.SIGQUIT, 10.0)
        edge.start()
        try:
            url = f"https://127.0.0.1:{https_port}"
            ca = ssl.create_default_context()
            ca.check_hostname = False  # a variant's certificate may name another host or
            ca.verify_mode = ssl.CERT_NONE  # have expired: only "listening" is waited for here
            wait_until(edge, lambda: _answers(f"{url}/", ca), START_TIMEOUT_S, "listening")
            yield url, f"http://127.0.0.1:{http_port}", pki.ca_cert
        finally:
            edge.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def backing() -> Iterator[TargetInfo]:
    """PostgreSQL and Redis (with the schema migrated) from a native target."""
    with native(workers=1) as info:
        yield info


@contextmanager
def stand_in(
    backing: TargetInfo, tmp: Path, jwt_secret: str | None = None, admin_key: str | None = None
) -> Iterator[TargetInfo]:
    """The (possibly patched) chatsdk app behind its own edge, as a target the probes can use.
    Patches must be in place before it starts: create_app reads the middlewares then. It signs
    tokens with `jwt_secret` and knows the admin by `admin_key` (default: a random secret, the
    backing target's key); the app is built from Settings directly, so a weak one is taken as it
    is, as a deployment without the settings' length check would."""
    port = free_port()
    with edge_for(port) as (edge_url, http_url, ca_file):
        assert backing.stores.postgres_dsn
        assert backing.stores.redis_url
        jwt_secret = jwt_secret or secrets.token_urlsafe(48)
        admin_key = admin_key or backing.admin_key
        settings = Settings(
            database_url=backing.stores.postgres_dsn,
            redis_url=backing.stores.redis_url,
            admin_key=admin_key,
            jwt_secret=jwt_secret,
            port=port,
            upload_dir=tmp / "uploads",
            allowed_origins=(edge_url,),
            drain_delay=0.0,
            shutdown_timeout=2.0,
        )
        with StandIn(settings):
            ready = f"http://127.0.0.1:{port}/v1/health/ready"
            for _ in range(int(START_TIMEOUT_S * 10)):
                if _ready(ready):
                    break
                threading.Event().wait(0.1)
            yield TargetInfo(
                name="stand-in",
                kind="native",
                edge=Edge(edge_url, http_url=http_url, ca_file=ca_file),
                admin_key=admin_key,
                jwt_secret=jwt_secret,
                observability=Observability(metrics_urls=(f"http://127.0.0.1:{port}/metrics",)),
            )


# -- the defects --------------------------------------------------------------------------------


# Token defects patch chatsdk.auth.decode: HTTP and the realtime socket both decode through it.


def accept_alg_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token check that believes a token's own `alg: none`."""
    genuine = chatsdk.auth.decode

    def decode(secret: str, token: str, typ: str) -> dict[str, Any]:
        try:
            alg = str(jwt.get_unverified_header(token).get("alg", ""))
        except jwt.InvalidTokenError:
            alg = ""
        if alg.lower() == "none":
            claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
            return claims
        return genuine(secret, token, typ)

    monkeypatch.setattr(chatsdk.auth, "decode", decode)


def check_only_the_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token check that verifies the signature and nothing else: expired, not-yet-valid and
    foreign-audience tokens pass."""

    def decode(secret: str, token: str, typ: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_aud": False,
                         "verify_iss": False},
            )  # fmt: skip
        except jwt.InvalidTokenError:  # here only a bad signature: a guess, as in the real one
            raise chatsdk.auth.bad_credential("The token is not valid.") from None
        if claims.get("typ") != typ:
            raise chatsdk.auth.unauthorized(f"A {typ} token is required.")
        return claims

    monkeypatch.setattr(chatsdk.auth, "decode", decode)


def skip_membership_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channel handlers that never check membership: anyone with an id reads the messages."""

    async def require_member(*_args: object, **_kwargs: object) -> None:
        return None

    monkeypatch.setattr(chatsdk.membership, "require_member", require_member)


def leak_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """No depth guard on JSON bodies, and an error handler that answers what breaks with a 500
    and its stack trace."""
    monkeypatch.setattr(chatsdk.validation, "_bracket_depth", lambda _text: 0)
    inner = chatsdk.auth.no_credentials_in_query

    @web.middleware
    async def leaky(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await inner(request, handler)
        except (ApiError, web.HTTPException):
            raise
        except Exception:
            return web.Response(status=500, text=traceback.format_exc())

    monkeypatch.setattr(chatsdk.app, "no_credentials_in_query", leaky)


def no_auth_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed authentication is never throttled: every wrong credential gets its 401."""

    async def guard(
        _request: web.Request, _attempt: object, verify: Callable[[], Awaitable[Any]]
    ) -> Any:
        return await verify()

    monkeypatch.setattr(chatsdk.auth, "guard", guard)


def lock_out_throttled_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key or user over its failure limit is refused from every address, its holder's too."""

    def wait_before_checking(self: chatsdk.auththrottle.Standing) -> float:
        return self.wait()

    monkeypatch.setattr(chatsdk.auththrottle.Standing, "wait_before_checking", wait_before_checking)


def subscribe_to_any_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Realtime subscriptions that never check membership: any signed-in user follows any
    channel whose id they know."""

    async def is_member(*_args: object, **_kwargs: object) -> bool:
        return True

    monkeypatch.setattr(chatsdk.realtime, "is_member", is_member)


def plain_http_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error middleware that renders only the API's own errors: unknown routes, wrong methods
    and oversized bodies get aiohttp's plain-text pages instead of the contract's JSON error."""

    @web.middleware
    async def api_errors_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    monkeypatch.setattr(chatsdk.app, "error_middleware", api_errors_only)


def count_no_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers without their request metrics: http_requests_total never moves."""

    @web.middleware
    async def uncounted(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request)

    monkeypatch.setattr(chatsdk.app, "metrics_middleware", uncounted)


# name: (seed, {item it turns red: what its reason must match})
DEFECTS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], dict[str, str]]] = {
    "alg-none": (accept_alg_none, {"TST-AUTH": r"alg none"}),
    "signature-only": (check_only_the_signature, {"TST-AUTH": r"expired an hour ago"}),
    "no-membership-check": (skip_membership_check, {"SEC-TENANT-ISOLATION": r"non-member"}),
    "500-with-stack-trace": (
        leak_errors,
        {"TST-ERRORS": r"must not reveal internals|Traceback"},
    ),
    "no-auth-throttle": (
        no_auth_throttle,
        {"SEC-AUTH-THROTTLE": r"must be throttled with 429"},
    ),
    "credential-lock-out": (
        lock_out_throttled_credentials,
        {"SEC-AUTH-THROTTLE": r"must not lock the legitimate user out"},
    ),
    "realtime-without-membership": (
        subscribe_to_any_channel,
        {"SEC-WS-AUTH": r"must get an error frame and nothing else"},
    ),
    "plain-text-http-errors": (
        plain_http_errors,
        {"APP-ENV-MODE": r"/v1/no-such-route must answer a JSON error \(got text/plain"},
    ),
    "no-request-metrics": (
        count_no_requests,
        {"DEP-METRICS-FLOWING": r"http_requests_total .* must grow"},
    ),
}


def forget_failed_logins(backing: TargetInfo) -> None:
    """Clear the failed-authentication counters the variants share in the backing Redis."""
    assert backing.stores.redis_url
    client = redis.Redis.from_url(backing.stores.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{chatsdk.auththrottle.KEY_PREFIX}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def red_items(info: TargetInfo) -> dict[str, str]:
    """Item -> reason of the failing items, with the stand-in's address taken out (each variant
    gets an edge on other ports)."""
    red = failing(probe(info, *PATHS, items=ITEMS))
    return {item: re.sub(r"127\.0\.0\.1:\d+", "EDGE", reason) for item, reason in red.items()}


@pytest.fixture(scope="module")
def baseline(backing: TargetInfo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    with stand_in(backing, tmp_path_factory.mktemp("baseline")) as info:
        return red_items(info)


def test_the_unpatched_stand_in_passes_every_item(baseline: dict[str, str]) -> None:
    assert baseline == {}, json.dumps(baseline, indent=1)


def test_the_probes_never_throttle_the_address_they_share(
    backing: TargetInfo, baseline: dict[str, str]
) -> None:
    """The probes that send failed authentications on purpose (forged tokens, guessed keys) send
    them from addresses of their own: over the whole baseline run, the address every other probe
    and the browser journeys share (127.0.0.1) takes only incidental failures (a refused key
    here and there), under half the throttle's burst, so that a full run's other probes cannot
    bring it to the burst and find it throttled by each other's failures. (TST-AUTH's forgeries
    alone once took it to 24 of 25.) Runs before the defects add theirs."""
    assert backing.stores.redis_url is not None
    store = redis.Redis.from_url(backing.stores.redis_url)
    try:
        failures = store.zcard(chatsdk.auththrottle._key("a", "127.0.0.1"))
    finally:
        store.close()
    defaults: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}
    burst, window = int(defaults["auth_failure_burst"]), float(defaults["auth_burst_window"])
    assert failures < burst // 2, (
        f"the probes sent {failures} failed authentications from 127.0.0.1, the address they "
        f"share; {burst} within {window:g} s throttle it for every probe, so probes that fail "
        "on purpose must send from addresses of their own (ProbeTarget.own_client)"
    )


# One marker per entry of DEFECTS (the parameters).
@pytest.mark.turns_red("TST-AUTH", defect="A token check that believes a token's own alg: none.")
@pytest.mark.turns_red(
    "TST-AUTH",
    defect="A token check that verifies only the signature: expired, not-yet-valid and "
    "foreign-audience tokens pass.",
)
@pytest.mark.turns_red(
    "SEC-TENANT-ISOLATION",
    defect="Channel handlers that never check membership: anyone with a channel id reads it.",
)
@pytest.mark.turns_red(
    "TST-ERRORS",
    defect="No depth guard on JSON bodies, and an error handler that answers with a 500 and its "
    "stack trace.",
)
@pytest.mark.turns_red(
    "SEC-AUTH-THROTTLE", defect="Failed authentication is never throttled: every guess gets a 401."
)
@pytest.mark.turns_red(
    "SEC-AUTH-THROTTLE",
    defect="A key or user over its failure limit is locked out from every address, its holder's "
    "too.",
)
@pytest.mark.turns_red(
    "SEC-WS-AUTH",
    defect="Realtime subscriptions that never check membership: any signed-in user follows any "
    "channel whose id they know.",
)
@pytest.mark.turns_red(
    "APP-ENV-MODE",
    defect="Unknown routes, wrong methods and oversized bodies answered with aiohttp's plain-text "
    "pages instead of the contract's JSON error.",
)
@pytest.mark.turns_red(
    "DEP-METRICS-FLOWING",
    defect="Workers without their request metrics: http_requests_total never moves.",
)
@pytest.mark.parametrize("defect", list(DEFECTS))
def test_a_seeded_defect_turns_exactly_its_item_red(
    backing: TargetInfo,
    baseline: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    defect: str,
) -> None:
    seed, named = DEFECTS[defect]
    forget_failed_logins(backing)  # an earlier defect's lock-outs must not answer this one's
    seed(monkeypatch)
    with stand_in(backing, tmp_path) as info:
        red = red_items(info)
    newly = {i for i in red if red[i] != baseline.get(i)}
    assert newly == set(named), json.dumps(red, indent=1)
    assert set(baseline) <= set(red) | set(named), red
    for item, names_it in named.items():
        assert re.search(names_it, red[item]), red[item]

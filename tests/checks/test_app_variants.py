"""The application and after-deploy probes against deliberately misconfigured systems: each
defect turns exactly its items red, and the reason names it."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit, urlunsplit

import pytest

from preflight.client import ChatClient
from preflight.polling import until
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTestOptions
from preflight.targets.native.releases import REHEARSAL_SUFFIX
from tests.checks.support import failing, native, outcomes, probe

PROBES = ("application", "deployment/test_live_release.py", "performance/test_realtime_spread.py")
# APP-HEALTH stops Redis; it is shown to pass on the healthy target and is left out here to keep
# these variants fast.
NOT_HEALTH = {
    "APP-ENV-PRODUCTION-CONFIG",
    "APP-LOG-LEVEL",
    "APP-ENV-NO-PLACEHOLDERS",
    "APP-ENV-MODE",
    "APP-DB-URL",
    "APP-EXT-URLS",
    "DEP-VERSION-LIVE",
    "DEP-MIGRATIONS-APPLIED",
    "DEP-HEALTH-PASSING",
    "DEP-SERVICES-RUNNING",
    "DEP-HEALTH-200",
    "DEP-SMOKE",
    "DEP-REALTIME",
    "DEP-WS-CONNECT",
    "PERF-WS-AFFINITY",
}
START_S = 60.0  # a worker started again on another release serves through the edge by then
FAST = NOT_HEALTH - {"DEP-WS-CONNECT"}  # the heartbeat probe idles ~20 s; fan-out is not its defect


@pytest.mark.turns_red(
    "APP-LOG-LEVEL",
    "APP-ENV-NO-PLACEHOLDERS",
    "APP-ENV-PRODUCTION-CONFIG",
    defect="Workers started with development settings: DEBUG logging, the placeholder JWT secret "
    "and an allowed origin of http://localhost:3000.",
)
def test_development_settings_turn_exactly_their_items_red() -> None:
    env = {
        "CHATSDK_LOG_LEVEL": "DEBUG",
        "CHATSDK_JWT_SECRET": "CHANGE_THIS_to_a_long_random_value_0123456789",
        "CHATSDK_ALLOWED_ORIGINS": "http://localhost:3000",
    }
    with native(worker_env=env) as info:
        red = failing(probe(info, *PROBES, items=FAST))
    assert set(red) == {"APP-LOG-LEVEL", "APP-ENV-NO-PLACEHOLDERS", "APP-ENV-PRODUCTION-CONFIG"}
    assert "(got DEBUG)" in red["APP-LOG-LEVEL"]
    assert "jwt_secret" in red["APP-ENV-NO-PLACEHOLDERS"]
    assert "http://localhost:3000" in red["APP-ENV-PRODUCTION-CONFIG"]


@pytest.mark.turns_red(
    "DEP-SMOKE",
    "DEP-REALTIME",
    "PERF-WS-AFFINITY",
    defect="A Redis that refuses PUBLISH: messages are stored but never fanned out to sockets.",
)
def test_a_redis_without_publish_breaks_exactly_the_realtime_items() -> None:
    """Messages are stored but never fanned out: readiness stays green, users see nothing live."""
    with native(test=NativeTestOptions(redis_settings=['rename-command PUBLISH ""'])) as info:
        decided = outcomes(probe(info, *PROBES, items=FAST))
    red = {i: reason for i, (o, reason) in decided.items() if o.value == "fail"}
    realtime = {i: decided[i] for i in ("DEP-SMOKE", "DEP-REALTIME", "PERF-WS-AFFINITY")}
    assert set(red) == {"DEP-SMOKE", "DEP-REALTIME", "PERF-WS-AFFINITY"}, realtime
    assert "must reach the other member's socket" in red["DEP-SMOKE"]


def _elsewhere(url: str | None) -> str:
    """The same kind of URL, naming a store on 127.0.0.1:1 (nothing listens there)."""
    parts = urlsplit(url or "")
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:x@127.0.0.1:1", path="/9"))


def _edge_reaches_a_rehearsal(info: TargetInfo) -> bool:
    """Whether a request through the edge reached a worker on the rehearsal candidate."""
    admin = ChatClient.for_target(info).as_admin(info.admin_key)
    response = admin.get("/v1/admin/runtime")
    return response.status == 200 and str(response.json()["version"]).endswith(REHEARSAL_SUFFIX)


@pytest.mark.turns_red(
    "APP-DB-URL",
    defect="Workers connected to another database than the one the deployment names.",
)
@pytest.mark.turns_red(
    "APP-EXT-URLS",
    defect="Workers connected to another Redis than the one the deployment names.",
)
@pytest.mark.turns_red(
    "DEP-VERSION-LIVE",
    defect="A rollout left half done: one worker runs the next release, the other the current one.",
)
def test_workers_on_other_stores_or_releases_than_the_deployment_names() -> None:
    """One stack, three defects judged one after the other: the deployment claims a database,
    then a Redis, that its workers do not use, and then one worker is left on another release."""
    with native() as info:
        stores = info.stores
        claims = {
            "postgres_dsn": dataclasses.replace(
                stores, postgres_dsn=_elsewhere(stores.postgres_dsn)
            ),
            "redis_url": dataclasses.replace(stores, redis_url=_elsewhere(stores.redis_url)),
        }
        decided = {
            store: outcomes(
                probe(
                    dataclasses.replace(info, stores=claimed),
                    *PROBES,
                    items={"APP-DB-URL", "APP-EXT-URLS"},
                )
            )
            for store, claimed in claims.items()
        }
        releases = info.drills.releases
        assert releases is not None
        assert releases.deploy("api-1", releases.candidate()) == 0
        assert until(lambda: _edge_reaches_a_rehearsal(info), START_S), "api-1 serves again"
        mixed = outcomes(probe(info, *PROBES, items={"DEP-VERSION-LIVE"}))
    assert decided["postgres_dsn"]["APP-EXT-URLS"][0].value == "pass"
    outcome, reason = decided["postgres_dsn"]["APP-DB-URL"]
    assert outcome.value == "fail"
    assert "127.0.0.1:1/9" in reason
    assert decided["redis_url"]["APP-DB-URL"][0].value == "pass"
    outcome, reason = decided["redis_url"]["APP-EXT-URLS"]
    assert outcome.value == "fail"
    assert "must use the target's Redis 127.0.0.1:1" in reason
    outcome, reason = mixed["DEP-VERSION-LIVE"]
    assert outcome.value == "fail", reason
    assert REHEARSAL_SUFFIX in reason, reason


@pytest.mark.turns_red(
    "TST-RATELIMIT", defect="An API without per-user rate limits (CHATSDK_FAULTS=no_rate_limits)."
)
def test_an_api_without_per_user_limits_fails_tst_ratelimit() -> None:
    """The probe sends in rounds until the limiter answers or lets through more than the burst
    and refill allow: with no limits at all, the second happens, and it says so."""
    with native(worker_env={"CHATSDK_FAULTS": "no_rate_limits"}) as info:
        red = failing(probe(info, "testing/test_ratelimit_api.py"))
    assert set(red) == {"TST-RATELIMIT"}, red
    assert (
        "must be refused with 429 after the documented burst of 40 at 20/s" in red["TST-RATELIMIT"]
    ), red
    assert "more than the" in red["TST-RATELIMIT"], red

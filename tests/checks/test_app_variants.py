"""The application and after-deploy probes against deliberately misconfigured systems: each
defect turns exactly its items red, and the reason names it."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit, urlunsplit

from preflight.targets.native import NativeTestOptions
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
FAST = NOT_HEALTH - {"DEP-WS-CONNECT"}  # the heartbeat probe idles ~20 s; fan-out is not its defect


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


def test_a_redis_without_publish_breaks_exactly_the_realtime_items() -> None:
    """Messages are stored but never fanned out: readiness stays green, users see nothing live."""
    with native(test=NativeTestOptions(redis_settings=['rename-command PUBLISH ""'])) as info:
        decided = outcomes(probe(info, *PROBES, items=FAST))
    red = {i: reason for i, (o, reason) in decided.items() if o.value == "fail"}
    realtime = {i: decided[i] for i in ("DEP-SMOKE", "DEP-REALTIME", "PERF-WS-AFFINITY")}
    assert set(red) == {"DEP-SMOKE", "DEP-REALTIME", "PERF-WS-AFFINITY"}, realtime
    assert "must reach the other member's socket" in red["DEP-SMOKE"]


def test_workers_on_another_database_than_the_deployment_names_fail_app_db_url() -> None:
    with native() as info:
        dsn = urlsplit(info.stores.postgres_dsn or "")
        elsewhere = dsn._replace(netloc=f"{dsn.username}:x@127.0.0.1:1", path="/chatsdk_staging")
        claimed = dataclasses.replace(
            info, stores=dataclasses.replace(info.stores, postgres_dsn=urlunsplit(elsewhere))
        )
        decided = outcomes(probe(claimed, *PROBES, items={"APP-DB-URL", "APP-EXT-URLS"}))
    assert decided["APP-EXT-URLS"][0].value == "pass"
    outcome, reason = decided["APP-DB-URL"]
    assert outcome.value == "fail"
    assert "127.0.0.1:1/chatsdk_staging" in reason


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

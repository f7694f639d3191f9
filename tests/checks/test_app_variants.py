"""The application and after-deploy probes against deliberately misconfigured systems: each
defect turns exactly its items red, and the reason names it."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from checks.drills._drills import wait_edge_ready
from preflight.client import ChatClient
from preflight.polling import until
from preflight.probe.target import ProbeTarget
from preflight.targets.base import Deployment, Edge, TargetInfo
from preflight.targets.containers.control import ContainerControl
from preflight.targets.containers.engine import (
    LAUNCHER_LABEL,
    RUN_LABEL,
    docker_available,
    engine,
    launcher,
)
from preflight.targets.containers.images import BOOKWORM, ensure_base
from preflight.targets.native import NativeTestOptions
from preflight.targets.native.releases import REHEARSAL_SUFFIX
from tests.checks.support import edge_templates, failing, native, outcomes, probe

PROBES = ("application", "deployment/test_live_release.py", "performance/test_realtime_spread.py")
# APP-HEALTH stops Redis: left out of the configuration variants to keep them fast; the edge
# variant below turns it red.
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


@pytest.mark.turns_red(
    "INF-HA-NODES",
    "PERF-RESOURCE-LIMITS",
    defect="every API worker, PostgreSQL, Redis and NGINX run as processes of this one host, in "
    "one cgroup, with no limits of their own",
)
def test_processes_of_one_host_fail_the_replica_spread_and_the_resource_limits() -> None:
    with native() as info:
        red = failing(
            probe(
                info,
                "infrastructure/test_resources.py",
                items={"INF-HA-NODES", "PERF-RESOURCE-LIMITS"},
            )
        )
    assert set(red) == {"INF-HA-NODES", "PERF-RESOURCE-LIMITS"}, red
    assert f"run on 1: {socket.gethostname()}: api-0, api-1)" in red["INF-HA-NODES"], red
    assert (
        "api-0, api-1, nginx, postgres, redis share the limits of cgroup"
        in (red["PERF-RESOURCE-LIMITS"])
    ), red


@contextmanager
def one_container(client: Any, run: str, **limits: int) -> Iterator[ContainerControl]:
    """A container of this test on the machine's engine, with the given engine limits."""
    container = client.containers.run(
        ensure_base(client, BOOKWORM, print),
        ["sleep", "300"],
        name=run,
        detach=True,
        labels={RUN_LABEL: run, LAUNCHER_LABEL: launcher()},
        **limits,
    )
    try:
        yield ContainerControl(container)
    finally:
        container.remove(force=True)


@pytest.mark.turns_red(
    "PERF-RESOURCE-LIMITS",
    defect="one container of the deployment runs without the engine's CPU and memory limits",
)
def test_a_container_without_engine_limits_fails_perf_resource_limits() -> None:
    """The containers target's placement read from `docker inspect`: with limits on every
    container the probe passes; one container without them turns the item red, named."""
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"
    client = engine()
    run = f"preflight-limits-{secrets.token_hex(4)}"
    node = f"Docker engine {client.info().get('Name')}"
    try:
        with (
            one_container(client, f"{run}-api", nano_cpus=500_000_000, mem_limit=64 * 2**20) as api,
            one_container(client, f"{run}-redis") as redis,
        ):

            def decided(*controls: tuple[str, ContainerControl]) -> dict[str, Any]:
                info = TargetInfo(
                    name="one-engine",
                    kind="external",
                    edge=Edge("https://127.0.0.1:9"),
                    admin_key="unused",
                    deployment=Deployment(
                        placement=lambda: {n: c.placement(n, node) for n, c in controls}
                    ),
                )
                return outcomes(
                    probe(info, "infrastructure/test_resources.py", items={"PERF-RESOURCE-LIMITS"})
                )

            limited = decided(("api", api))["PERF-RESOURCE-LIMITS"]
            assert limited[0].value == "pass", limited
            bare = decided(("api", api), ("redis", redis))["PERF-RESOURCE-LIMITS"]
    finally:
        client.close()
    assert bare[0].value == "fail", bare
    assert f"redis (container {run}-redis) has no CPU and no memory limit" in bare[1], bare


# An edge that keeps the second worker as a backup only, answers readiness itself, and gives an
# idle WebSocket 8 s where the API pings every 20 s.
EDGE_DEFECTS = {
    "nginx.conf.j2": lambda text: text.replace(
        "server {{ server }} max_fails=3 fail_timeout=2s;",
        "server {{ server }} max_fails=3 fail_timeout=2s{% if not loop.first %} backup{% endif %};",
    ).replace(
        "        location /v1/ {\n",
        "        location = /v1/health/ready {\n"
        "            default_type application/json;\n"
        '            return 200 \'{"status":"ready"}\';\n'
        "        }\n\n"
        "        location /v1/ {\n",
        1,
    ),
    "proxy/websocket.conf": lambda text: text.replace(
        "proxy_read_timeout 3600s;", "proxy_read_timeout 8s;"
    ),
}


@pytest.mark.turns_red(
    "INF-NET-LB",
    "APP-HEALTH",
    "DEP-WS-CONNECT",
    defect="the edge sends every request to one worker (the other is a backup), answers "
    "readiness itself, and closes a WebSocket idle for 8 s, before the API's 20 s heartbeat",
)
def test_an_edge_that_does_not_balance_fakes_readiness_and_cuts_idle_sockets(
    tmp_path: Path,
) -> None:
    with native(
        test=NativeTestOptions(edge_template_dir=edge_templates(tmp_path, EDGE_DEFECTS))
    ) as info:
        red = failing(
            probe(
                info,
                "application/test_runtime.py",
                "deployment/test_live_release.py",
                "infrastructure/test_network.py",
                items={"INF-NET-LB", "APP-HEALTH", "DEP-WS-CONNECT", "DEP-HEALTH-200"},
            )
        )
    assert set(red) == {"INF-NET-LB", "APP-HEALTH", "DEP-WS-CONNECT"}, red
    assert "must be spread over more than one API worker" in red["INF-NET-LB"], red
    assert "must answer 503 within 10 s of Redis stopping (got 200)" in red["APP-HEALTH"], red
    assert "none came; the socket was closed first" in red["DEP-WS-CONNECT"], red


LIVE = {"DEP-MIGRATIONS-APPLIED", "DEP-HEALTH-PASSING", "DEP-SERVICES-RUNNING", "DEP-HEALTH-200"}


def _forget_newest_migration(info: TargetInfo) -> int:
    """Delete the newest row of schema_migrations, as a database restored from before the
    release's last migration would lack it; returns its version."""

    async def run() -> int:
        conn = await asyncpg.connect(info.stores.postgres_dsn, timeout=10)
        try:
            return int(
                await conn.fetchval(
                    "DELETE FROM schema_migrations WHERE version = "
                    "(SELECT max(version) FROM schema_migrations) RETURNING version"
                )
            )
        finally:
            await conn.close(timeout=10)

    return asyncio.run(run())


@pytest.mark.turns_red(
    "DEP-SERVICES-RUNNING",
    "DEP-HEALTH-PASSING",
    "DEP-HEALTH-200",
    defect="Redis is stopped after the deploy",
)
@pytest.mark.turns_red(
    "DEP-MIGRATIONS-APPLIED",
    defect="the database lacks the release's newest migration (its schema_migrations row)",
)
def test_a_stopped_redis_and_a_missing_migration_fail_the_after_deploy_checks() -> None:
    with native() as info:
        redis = info.drills.control["redis"]
        redis.stop()
        try:
            no_redis = failing(probe(info, "deployment/test_live_release.py", items=LIVE))
        finally:
            redis.start()
        probing = ProbeTarget(info)
        try:
            wait_edge_ready(probing)
        finally:
            probing.close()
        missing = _forget_newest_migration(info)
        behind = failing(probe(info, "deployment/test_live_release.py", items=LIVE))
    assert set(no_redis) == {"DEP-SERVICES-RUNNING", "DEP-HEALTH-PASSING", "DEP-HEALTH-200"}, (
        no_redis
    )
    assert "redis must be running and answer worker" in no_redis["DEP-SERVICES-RUNNING"]
    assert "(down: ['redis'])" in no_redis["DEP-HEALTH-PASSING"], no_redis
    assert "/v1/health/ready must answer 200 (got 503)" in no_redis["DEP-HEALTH-200"], no_redis
    assert set(behind) == {"DEP-MIGRATIONS-APPLIED"}, behind
    assert f"(missing [{missing}])" in behind["DEP-MIGRATIONS-APPLIED"], behind

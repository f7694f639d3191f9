"""db_pool_wait_seconds measures the real wait for a PostgreSQL connection: it grows with the
API's traffic, a request queued behind a held pool shows the hold (and, as the control, one
that is not queued does not), and an acquisition that got no connection is counted apart
without leaking one. Real PostgreSQL and Redis: the native stack's."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from chatsdk import db, dependencies
from chatsdk.app import create_app
from chatsdk.keys import DEPENDENCIES, METRICS
from chatsdk.metrics import Metrics
from chatsdk.pooltiming import TimedPool
from chatsdk.server import running
from chatsdk.settings import Settings
from prometheus_client.parser import text_string_to_metric_families

from preflight.targets.base import TargetInfo
from tests.api.conftest import AppCtx

HOLD_S = 0.4
SHORT_S = 0.25  # a bucket bound below HOLD_S; an unqueued acquisition stays far below it
REQUESTS = 30
WAIT = "db_pool_wait_seconds"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (the worker's own URL)
        body: str = resp.read().decode()
        return body


def pool_acquisitions(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == f"{WAIT}_count"
    )


def test_pool_wait_grows_with_the_api_traffic(info: TargetInfo, app: AppCtx) -> None:
    """Without it, a pool too small for the load hides inside slow requests."""
    before = sum(pool_acquisitions(scrape(url)) for url in info.observability.metrics_urls)
    for _ in range(REQUESTS):
        app.user()  # POST /v1/tokens: at least one acquisition on some worker
    after = sum(pool_acquisitions(scrape(url)) for url in info.observability.metrics_urls)
    # Idle, the workers acquire a few times a second at most (readiness, scrapes): far fewer.
    assert after - before >= REQUESTS, (
        f"db_pool_wait_seconds_count over the workers must grow by >= {REQUESTS} across "
        f"{REQUESTS} token requests (got {after - before})"
    )


def test_the_exposition_stays_clean_for_promtool(info: TargetInfo) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/setup.sh installs it)")
    for url in info.observability.metrics_urls:
        done = subprocess.run(
            [promtool, "check", "metrics"],
            input=scrape(url),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, (
            f"promtool check metrics on {url} must be clean (got {done.stdout}{done.stderr})"
        )


# A pool of one connection, in an app of our own beside the stack's workers (same database and
# Redis), with two extra routes: one holds the connection, the other queues behind it.


@dataclass
class Hold:
    held: asyncio.Event = field(default_factory=asyncio.Event)
    queued: asyncio.Event = field(default_factory=asyncio.Event)


def hold_routes(hold: Hold) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/_test/hold")
    async def hold_connection(request: web.Request) -> web.Response:
        async with db.pool(request).acquire():
            hold.held.set()
            # The event loop runs one task at a time: the waiter has started its clock and is
            # queued by the time this resumes, so its wait is at least HOLD_S.
            await hold.queued.wait()
            await asyncio.sleep(HOLD_S)
        return web.json_response({"held_s": HOLD_S})

    @routes.get("/_test/query")
    async def query(request: web.Request) -> web.Response:
        hold.queued.set()
        value = await db.pool(request).fetchval("SELECT 1")  # the pool's shortcut
        return web.json_response({"value": value})

    return routes


@dataclass(frozen=True)
class Waits:
    count: float
    above_short: float  # observations longer than SHORT_S
    total_s: float


def waits(metrics: Metrics) -> Waits:
    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    count = value(f"{WAIT}_count")
    return Waits(count, count - value(f"{WAIT}_bucket", le=str(SHORT_S)), value(f"{WAIT}_sum"))


@pytest.fixture
def one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dependencies, "POOL_MAX_SIZE", 1)


def queued_wait(info: TargetInfo, upload_dir: Path, *, held: bool) -> tuple[Waits, Waits]:
    """The app's waits before and after GET /_test/query, with the pool held meanwhile or not."""
    assert info.stores.postgres_dsn
    assert info.stores.redis_url
    settings = Settings(
        database_url=info.stores.postgres_dsn,
        redis_url=info.stores.redis_url,
        admin_key=secrets.token_urlsafe(32),
        jwt_secret=secrets.token_urlsafe(48),
        port=0,
        drain_delay=0,
        shutdown_timeout=2,
        upload_dir=upload_dir,
    )

    async def main() -> tuple[Waits, Waits]:
        hold = Hold()
        app = create_app(settings)
        app.router.add_routes(hold_routes(hold))
        async with (
            running(settings, app) as server,
            aiohttp.ClientSession(
                base_url=server.url, timeout=aiohttp.ClientTimeout(total=10)
            ) as client,
        ):
            for _ in range(100):
                async with client.get("/v1/health/ready") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.1)
            assert app[DEPENDENCIES].pool.get_max_size() == 1

            async def get(path: str) -> None:
                async with client.get(path) as resp:
                    assert resp.status == 200, f"GET {path} must answer 200 (got {resp.status})"

            holder = asyncio.create_task(get("/_test/hold")) if held else None
            if held:
                await asyncio.wait_for(hold.held.wait(), 5)
            before = waits(app[METRICS])
            await get("/_test/query")
            after = waits(app[METRICS])
            if holder is not None:
                await holder
            return before, after

    return asyncio.run(main())


@pytest.mark.usefixtures("one_connection")
def test_a_request_queued_behind_a_held_pool_waits_at_least_the_hold(
    info: TargetInfo, tmp_path: Path
) -> None:
    """The histogram must show the queue, or a saturated pool passes PERF-POOL-SATURATION."""
    before, after = queued_wait(info, tmp_path, held=True)
    assert after.above_short - before.above_short >= 1, (
        f"a request queued {HOLD_S} s behind the only connection must be observed above "
        f"{SHORT_S} s in {WAIT} (got {after.above_short - before.above_short} such waits)"
    )
    assert after.total_s - before.total_s >= HOLD_S, (
        f"{WAIT}_sum must grow by >= {HOLD_S} s across a {HOLD_S} s hold "
        f"(got {after.total_s - before.total_s:.3f} s)"
    )


@pytest.mark.usefixtures("one_connection")
def test_control_the_same_request_with_the_pool_free_waits_little(
    info: TargetInfo, tmp_path: Path
) -> None:
    before, after = queued_wait(info, tmp_path, held=False)
    assert after.count - before.count >= 1, f"GET /_test/query must be observed in {WAIT}"
    assert after.above_short == before.above_short, (
        f"with the pool free, no wait in {WAIT} may exceed {SHORT_S} s "
        f"(got {after.above_short - before.above_short})"
    )


# TimedPool on its own, over a real pool of one connection.


async def timed_pool(info: TargetInfo) -> tuple[TimedPool, Metrics]:
    metrics = Metrics()
    pool = await asyncpg.create_pool(info.stores.postgres_dsn, min_size=1, max_size=1, timeout=5)
    return TimedPool(pool, metrics.db_pool_wait, metrics.db_pool_acquire_failures), metrics


def failures(metrics: Metrics, reason: str) -> float:
    found = metrics.registry.get_sample_value("db_pool_acquire_failures_total", {"reason": reason})
    return found or 0.0


def test_every_shortcut_and_both_acquire_forms_are_observed(info: TargetInfo) -> None:
    async def main() -> float:
        pool, metrics = await timed_pool(info)
        try:
            assert await pool.fetchval("SELECT $1::int", 7) == 7
            assert (await pool.fetchrow("SELECT 1 AS one"))["one"] == 1
            assert len(await pool.fetch("SELECT generate_series(1, 3)")) == 3
            assert await pool.execute("SELECT 1") == "SELECT 1"
            await pool.executemany("SELECT $1::int", [(1,), (2,)])
            async with pool.acquire(timeout=1) as conn:
                assert await conn.fetchval("SELECT 2") == 2
            conn = await pool.acquire(timeout=1)
            await pool.release(conn)
            return waits(metrics).count
        finally:
            await pool.close()

    assert asyncio.run(main()) == 7, f"each of 7 acquisitions must be observed once in {WAIT}"


def test_a_timed_out_acquire_is_counted_apart_and_leaks_nothing(info: TargetInfo) -> None:
    async def main() -> None:
        pool, metrics = await timed_pool(info)
        try:
            async with pool.acquire() as conn:
                with pytest.raises(TimeoutError):
                    async with pool.acquire(timeout=0.1):
                        pass
                with pytest.raises(TimeoutError):
                    await pool.acquire(timeout=0.1)
                assert await conn.fetchval("SELECT 1") == 1
            assert waits(metrics).count == 1, "a timed-out acquire must not count as a wait"
            assert failures(metrics, "timeout") == 2
            async with pool.acquire(timeout=1) as conn:  # the one connection came back
                assert await conn.fetchval("SELECT 1") == 1
            assert pool.get_size() == 1
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_cancelled_acquire_is_counted_apart_and_leaks_nothing(info: TargetInfo) -> None:
    async def main() -> None:
        pool, metrics = await timed_pool(info)
        try:
            async with pool.acquire():
                queued = asyncio.create_task(pool.fetchval("SELECT 1"))
                await asyncio.sleep(0.1)
                queued.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await queued
            assert waits(metrics).count == 1, "a cancelled acquire must not count as a wait"
            assert failures(metrics, "cancelled") == 1
            assert await asyncio.wait_for(pool.fetchval("SELECT 1"), 1) == 1
            assert pool.get_idle_size() == 1
        finally:
            await pool.close()

    asyncio.run(main())

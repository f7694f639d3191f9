"""The data-store, host and credential probes against deliberately broken variants of the
bundled system: each seeded defect turns exactly its items red, and the reason names it."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import asyncpg
import pytest

from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTestOptions
from tests.checks.support import failing, native, probe

PROBES = (
    "infrastructure/test_postgres.py",
    "infrastructure/test_redis.py",
    "infrastructure/test_resources.py",
    "security/test_credentials.py",
    "security/test_db_tls.py",
    "performance/test_database.py",
)
# What the bundled system honestly lacks on a machine like this one (2 cores, a disk the kernel
# reports rotational, Debian's PostgreSQL 15, one host for every worker, processes without limits
# of their own): red there without any defect.
HONEST_GAPS = {
    "INF-RES-CPU",
    "INF-RES-MEM",
    "INF-RES-DISK",
    "INF-DB-VERSION",
    "INF-HA-NODES",
    "PERF-RESOURCE-LIMITS",
}


@pytest.fixture(scope="module")
def healthy() -> Iterator[tuple[TargetInfo, dict[str, str]]]:
    with native() as info:
        yield info, failing(probe(info, *PROBES))


def assert_exactly(
    red: Mapping[str, str], healthy: Mapping[str, str], named: Mapping[str, str]
) -> None:
    """The defects add exactly the `named` items to the healthy system's red ones, and each
    reason contains the named words."""
    assert set(red) == set(healthy) | set(named), red
    for item, words in named.items():
        assert words in red[item], (item, red[item])


def test_the_bundled_system_fails_only_what_it_honestly_lacks(
    healthy: tuple[TargetInfo, dict[str, str]],
) -> None:
    assert set(healthy[1]) <= HONEST_GAPS, healthy[1]


# Each variant seeds several defects whose items do not overlap (one target start each, not one
# per defect): every defect must turn exactly its own items red, with a reason naming it.
@pytest.mark.parametrize(
    ("options", "named"),
    [
        pytest.param(
            {
                "test": NativeTestOptions(
                    postgres_auth_method="md5",
                    postgres_settings=["password_encryption=md5", "fsync=off"],
                    postgres_sql=["ALTER ROLE chatsdk RESET idle_in_transaction_session_timeout"],
                    redis_settings=["appendonly no", "maxmemory 0"],
                ),
                "workers": 1,
            },
            {
                "SEC-PASSWORDS-STRONG": "password_encryption = md5",
                "INF-DB-EXISTS": "fsync = off",
                "INF-DB-POOL": "idle_in_transaction_session_timeout set",
                "INF-REDIS-AOF": "aof_enabled = 0",
                "INF-REDIS-MAXMEM": "must have maxmemory set",
            },
            marks=pytest.mark.turns_red(
                "SEC-PASSWORDS-STRONG",
                "INF-DB-EXISTS",
                "INF-DB-POOL",
                "INF-REDIS-AOF",
                "INF-REDIS-MAXMEM",
                defect="PostgreSQL with md5 passwords, fsync off and no idle-in-transaction "
                "timeout for the application role, and Redis without AOF or maxmemory.",
            ),
            id="md5-fsync-off-no-idle-timeout-aof-off-unbounded-redis-one-worker",
        ),
        pytest.param(
            {
                "test": NativeTestOptions(
                    postgres_settings=["listen_addresses=*", "shared_preload_libraries="],
                    postgres_tls=False,
                    # Later than requirepass: the default user takes any password or none.
                    redis_settings=["user default on nopass ~* &* +@all"],
                ),
            },
            {
                "INF-DB-EXISTS": "listen_addresses = '*'",
                "SEC-DB-TLS": "must have ssl on (got off)",
                "PERF-DB-SLOW-QUERIES": "pg_stat_statements",
                "POST-OPTIMISE-FIND": "pg_stat_statements",
                "INF-REDIS-AUTH": "must answer NOAUTH",
                "SEC-REDIS-PASSWORD": "wrong password",
            },
            marks=pytest.mark.turns_red(
                "INF-DB-EXISTS",
                "SEC-DB-TLS",
                "PERF-DB-SLOW-QUERIES",
                "POST-OPTIMISE-FIND",
                "INF-REDIS-AUTH",
                "SEC-REDIS-PASSWORD",
                defect="PostgreSQL listening on every address, without TLS or pg_stat_statements, "
                "and a Redis whose default user takes any password or none.",
            ),
            id="listens-everywhere-no-tls-no-statistics-redis-without-password",
        ),
        pytest.param(
            {
                "test": NativeTestOptions(
                    postgres_sql=["ALTER ROLE chatsdk SUPERUSER"],
                    redis_settings=["maxmemory-policy allkeys-lru"],
                ),
                "standby": False,
            },
            {
                "INF-DB-EXISTS": "holds rolsuper",
                "INF-REDIS-MAXMEM": "allkeys-lru",
                "INF-DB-REPLICA": "must have a streaming replica connected",
            },
            marks=pytest.mark.turns_red(
                "INF-DB-EXISTS",
                "INF-REDIS-MAXMEM",
                "INF-DB-REPLICA",
                defect="An application role that is a PostgreSQL superuser, a Redis that evicts "
                "any key (allkeys-lru) and no streaming standby.",
            ),
            id="app-role-superuser-redis-evicts-any-key-no-standby",
        ),
    ],
)
def test_configuration_defects_turn_exactly_their_items_red(
    healthy: tuple[TargetInfo, dict[str, str]], options: dict[str, object], named: dict[str, str]
) -> None:
    with native(**options) as info:
        red = failing(probe(info, *PROBES))
    assert_exactly(red, healthy[1], named)


@pytest.mark.turns_red(
    "INF-DB-VERSION",
    defect="PostgreSQL 15, the version this machine's set-up installs for the native target, older "
    "than the 16 the item asks for.",
)
def test_postgres_older_than_16_fails_inf_db_version(
    healthy: tuple[TargetInfo, dict[str, str]],
) -> None:
    """The native target runs the host's PostgreSQL (scripts/debian-packages.txt pins 15)."""
    assert "must be version 16 or later (got 15." in healthy[1]["INF-DB-VERSION"], healthy[1]


RAM_DISK = Path("/dev/shm")  # noqa: S108 (a tmpfs on purpose: the defect)


@pytest.mark.turns_red(
    "INF-RES-CPU",
    "INF-RES-DISK",
    defect="A node that gives the system one CPU core and keeps its data on a small RAM disk.",
)
def test_one_core_and_data_on_a_ram_disk_fail_the_host_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole system (PostgreSQL, Redis, workers, edge) starts pinned to one core, with its
    temp dir, where the native target keeps its data, on a tmpfs far smaller than 100 GB."""
    assert shutil.disk_usage(RAM_DISK).total < 100 * 10**9, "the RAM disk is small"
    cores = os.sched_getaffinity(0)
    data = Path(tempfile.mkdtemp(prefix="redvariant-", dir=RAM_DISK))
    data.chmod(0o1777)  # like /tmp: PostgreSQL runs as its own user and must reach its dirs
    monkeypatch.setenv("TMPDIR", str(data))
    monkeypatch.setattr(tempfile, "tempdir", str(data))
    os.sched_setaffinity(0, {min(cores)})
    try:
        with native(workers=2) as info:
            red = failing(probe(info, "infrastructure/test_resources.py"))
    finally:
        os.sched_setaffinity(0, cores)
        shutil.rmtree(data, ignore_errors=True)
    # INF-HA-NODES and PERF-RESOURCE-LIMITS fail on every native target (one host, processes
    # without limits of their own: HONEST_GAPS); INF-RES-MEM on a host with little memory.
    on_native = {"INF-HA-NODES", "PERF-RESOURCE-LIMITS"}
    expected = {"INF-RES-CPU", "INF-RES-DISK"} | on_native | ({"INF-RES-MEM"} & set(red))
    assert set(red) == expected, red
    assert "at least 4 CPU cores (got 1)" in red["INF-RES-CPU"], red
    assert "must hold at least 100 GB" in red["INF-RES-DISK"], red


def _break_live_database(info: TargetInfo) -> None:
    """As the application role: forget an applied migration, drop the index behind a foreign
    key, and run a slow statement often enough to count as a hot path."""

    async def run() -> None:
        conn = await asyncpg.connect(info.stores.postgres_dsn, timeout=10)
        try:
            await conn.execute("DELETE FROM schema_migrations WHERE version = 5")
            await conn.execute("DROP INDEX messages_replies")
            for _ in range(5):
                await conn.execute("SELECT pg_sleep(0.06)")
        finally:
            await conn.close(timeout=10)

    asyncio.run(run())


@pytest.mark.turns_red(
    "INF-DB-MIGRATED",
    "PERF-DB-INDEXES",
    "PERF-DB-SLOW-QUERIES",
    defect="A live database with an applied migration forgotten, the index behind "
    "messages(parent_id) dropped and a slow statement run often.",
)
def test_defects_in_the_live_database_turn_exactly_their_items_red(
    healthy: tuple[TargetInfo, dict[str, str]],
) -> None:
    """Last in this module: it breaks the shared healthy target for good."""
    info, healthy_red = healthy
    _break_live_database(info)
    red = failing(probe(info, *PROBES))
    assert_exactly(
        red,
        healthy_red,
        {
            "INF-DB-MIGRATED": "not applied: 0005_uploads_gdpr_webhooks",
            "PERF-DB-INDEXES": "messages(parent_id)",
            "PERF-DB-SLOW-QUERIES": "pg_sleep",
        },
    )

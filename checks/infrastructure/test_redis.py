"""Redis of the target: version, authentication, persistence and its memory bound."""

from __future__ import annotations

import pytest

from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

MIN_MAJOR = 7
# Policies that evict keys without a TTL: Redis here holds rate-limit buckets and cached
# memberships; an eviction policy must only drop what was meant to expire.
EVICTS_PERSISTENT_KEYS = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


@pytest.mark.checklist("INF-REDIS-VERSION")
def test_redis_is_version_7_or_later(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """An old Redis lacks ACLs and fixes the deployment depends on."""
    version = str(target.redis.info("server")["redis_version"])
    evidence.note(f"Redis at {target.redis.where} reports {version}")
    assert int(version.split(".", maxsplit=1)[0]) >= MIN_MAJOR, (
        f"Redis at {target.redis.where} must be version 7 or later (got {version})"
    )


@pytest.mark.checklist("INF-REDIS-AUTH")
def test_redis_refuses_unauthenticated_clients(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """An open Redis lets anyone read or flush state and is a known remote-code path."""
    got = target.redis.unauthenticated()
    evidence.note(f"PING without credentials to {target.redis.where}: {got}")
    assert got.startswith("-NOAUTH"), (
        f"Redis at {target.redis.where} must answer NOAUTH to a client without "
        f"credentials (got {got})"
    )


@pytest.mark.checklist("INF-REDIS-AOF")
def test_redis_appends_every_write_to_its_log(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Without persistence a Redis restart drops rate-limit and presence state at once."""
    info = target.redis.info("persistence")
    enabled, status = int(info["aof_enabled"]), str(info.get("aof_last_write_status", "?"))
    evidence.note(f"aof_enabled = {enabled}, aof_last_write_status = {status}")
    assert enabled == 1, (
        f"Redis at {target.redis.where} must have append-only persistence on "
        f"(aof_enabled = {enabled})"
    )
    assert status == "ok", (
        f"Redis at {target.redis.where} must be writing its append-only file "
        f"(aof_last_write_status = {status})"
    )


@pytest.mark.checklist("INF-REDIS-MAXMEM")
def test_redis_has_a_memory_bound_and_a_deliberate_policy(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Without a limit Redis grows until the kernel kills it."""
    info = target.redis.info("memory")
    limit, policy = int(info["maxmemory"]), str(info["maxmemory_policy"])
    evidence.figure("maxmemory", limit, "bytes")
    evidence.note(f"maxmemory_policy = {policy}")
    where = target.redis.where
    assert limit > 0, f"Redis at {where} must have maxmemory set (got 0, unbounded)"
    assert policy not in EVICTS_PERSISTENT_KEYS, (
        f"Redis at {where} must not evict keys without a TTL (maxmemory-policy = {policy}); "
        "use noeviction or a volatile-* policy"
    )

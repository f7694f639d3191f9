"""What the primary says of its standbys: each standby's state and replication lag, from the
primary's pg_stat_replication through `monitoring.replication()` (a function the deployment's
provisioning makes, since the application role may not read the replication role's rows of that
view itself). For the runtime report and the replication gauges; readiness does not depend on
it, since a worker serves as well while a standby is away."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from chatsdk.metrics import Metrics

log = logging.getLogger("chatsdk.replication")

PROVISIONING = "system/deploy/postgres/20-monitoring.sql"
QUERY = (
    "SELECT standby, state, sync_state, replay_lag_s, lag_bytes FROM monitoring.replication() "
    "ORDER BY standby"
)


async def report(pool: Any, wait_s: float) -> dict[str, Any]:
    """{"standbys": [{name, state, sync_state, replay_lag_s, lag_bytes}, ...]}, or {"error": why}
    when the primary cannot be asked. A replay lag PostgreSQL no longer shows (a standby caught
    up and idle) is 0 when no byte is outstanding."""
    if pool is None:
        return {"error": "the database is not connected"}
    try:
        async with asyncio.timeout(wait_s), pool.acquire(timeout=wait_s) as conn:
            rows = await conn.fetch(QUERY, timeout=wait_s)
    except asyncpg.UndefinedFunctionError:
        return {"error": f"monitoring.replication() is missing ({PROVISIONING})"}
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.debug("replication report failed: %s", type(exc).__name__)
        return {"error": f"the primary could not be asked ({type(exc).__name__})"}
    standbys = []
    for row in rows:
        lag_bytes = row["lag_bytes"]
        lag_s = row["replay_lag_s"]
        if lag_s is None and lag_bytes == 0:
            lag_s = 0.0
        standbys.append(
            {
                "name": row["standby"],
                "state": row["state"],
                "sync_state": row["sync_state"],
                "replay_lag_s": lag_s,
                "lag_bytes": lag_bytes,
            }
        )
    return {"standbys": standbys}


def record(metrics: Metrics, replication: dict[str, Any]) -> None:
    """The replication gauges from a report (left as they were when it has an error)."""
    if "standbys" not in replication:
        return
    standbys = replication["standbys"]
    metrics.db_standbys_streaming.set(sum(1 for s in standbys if s["state"] == "streaming"))
    metrics.db_replication_lag.clear()
    metrics.db_replication_lag_bytes.clear()
    for standby in standbys:
        if standby["replay_lag_s"] is not None:
            metrics.db_replication_lag.labels(standby["name"]).set(standby["replay_lag_s"])
        if standby["lag_bytes"] is not None:
            metrics.db_replication_lag_bytes.labels(standby["name"]).set(standby["lag_bytes"])

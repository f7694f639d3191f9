"""The PostgreSQL failover drill (checks/drills/test_failover.py) against the bundled system and
deliberately broken variants. On the bundled system (its guard makes every commit wait for the
streaming standby) it passes and leaves the target whole for what runs after it. Without the
guard the pair replicates asynchronously, and the sends the primary acknowledged while its
standby was behind are lost with it. With workers whose DSN names the old primary alone the
drill turns red earlier: they never follow."""

from __future__ import annotations

import pytest

from preflight.outcomes import Outcome
from preflight.targets.native import NativeTestOptions
from tests.checks.support import native, outcomes, primary_sql, probe
from tests.drills.test_fault_variants import drills

FAILOVER = "killed_primary"
SYNC_STATE = "SELECT sync_state FROM pg_stat_replication"


def test_the_failover_drill_passes_and_leaves_the_target_whole() -> None:
    with native() as info:
        sql = primary_sql(info)
        sync = sql(SYNC_STATE)
        first = outcomes(drills(info, ["test_failover.py"], FAILOVER))
        # What runs after it finds the primary, its standby and the workers as they were: the
        # replica probe, and the drill that kills the primary and starts it again.
        after = outcomes(probe(info, "infrastructure/test_postgres.py", items={"INF-DB-REPLICA"}))
        kill = outcomes(drills(info, ["test_faults.py"], "killed_component and postgres"))
        sync_after = sql(SYNC_STATE)
    assert (sync, sync_after) == ("quorum", "quorum"), "every commit waits for the standby"
    assert first["BAK-FAILOVER-DRILL"][0] is Outcome.PASS, first
    assert after["INF-DB-REPLICA"][0] is Outcome.PASS, after
    assert kill["BAK-FAILOVER-DRILL"][0] is Outcome.PASS, kill


@pytest.mark.turns_red(
    "BAK-FAILOVER-DRILL",
    defect="A primary that acknowledges commits before its standby has them (asynchronous "
    "replication: no guard beside the pair).",
)
def test_asynchronous_replication_loses_the_sends_of_a_lagging_standby() -> None:
    reason = red_failover_drill(NativeTestOptions(asynchronous_replication=True), "async")
    # Every check before the loss passed: the workers followed the promotion, unrestarted.
    assert "while its standby received nothing were lost with it" in reason, reason


@pytest.mark.turns_red(
    "BAK-FAILOVER-DRILL",
    defect="API workers whose database URL names the primary alone, so they cannot follow a "
    "failover.",
)
def test_workers_that_name_only_the_primary_fail_the_failover_drill() -> None:
    reason = red_failover_drill(NativeTestOptions(workers_primary_only=True), "quorum")
    assert "the workers did not follow the failover" in reason, reason


def red_failover_drill(variant: NativeTestOptions, sync_state: str) -> str:
    """The failover drill on a native target with `variant`, whose primary shows its standby in
    `sync_state`; the drill's reason, once it is sure the drill failed."""
    with native(test=variant) as info:
        assert primary_sql(info)(SYNC_STATE) == sync_state
        decided = outcomes(drills(info, ["test_failover.py"], FAILOVER))
    outcome, reason = decided["BAK-FAILOVER-DRILL"]
    assert outcome is Outcome.FAIL, reason
    return reason

"""The PostgreSQL failover drill (checks/drills/test_failover.py) against the bundled system and a
deliberately broken variant. The bundled system replicates asynchronously, so the sends its
primary acknowledged while the standby was behind are lost with the primary: the drill says so
every time, the workers follow the promotion, and the target is left whole for what runs after
it; with its primary made to wait for the standby (synchronous replication) the drill passes.
With workers whose DSN names the old primary alone it turns red earlier: they never follow."""

from __future__ import annotations

import pytest

from preflight.outcomes import Outcome
from preflight.polling import until
from preflight.targets.native import NativeTestOptions
from preflight.targets.native.standby import Failover
from tests.checks.support import native, outcomes, probe
from tests.drills.test_fault_variants import drills

FAILOVER = "killed_primary"


def test_the_failover_drill_finds_the_asynchronous_loss_and_leaves_the_target_whole() -> None:
    with native() as info:
        first = outcomes(drills(info, ["test_failover.py"], FAILOVER))
        # What runs after it finds the primary, its standby and the workers as they were: the
        # replica probe, and the drill that kills the primary and starts it again.
        after = outcomes(probe(info, "infrastructure/test_postgres.py", items={"INF-DB-REPLICA"}))
        kill = outcomes(drills(info, ["test_faults.py"], "killed_component and postgres"))
    outcome, reason = first["BAK-FAILOVER-DRILL"]
    assert outcome is Outcome.FAIL, reason
    # Every check before the loss passed: the workers followed the promotion, unrestarted.
    assert "while its standby received nothing were lost with it" in reason, reason
    assert "lost 0" not in reason, reason
    assert after["INF-DB-REPLICA"][0] is Outcome.PASS, after
    assert kill["BAK-FAILOVER-DRILL"][0] is Outcome.PASS, kill


def test_a_primary_that_waits_for_its_standby_loses_nothing_in_the_failover_drill() -> None:
    """The drill is not impossible: once a commit waits for the standby (synchronous
    replication), the sends of the held second are not acknowledged before the kill; they are
    retried on the promoted standby and stored once, and the drill passes."""
    with native() as info:
        failover = info.drills.failover
        assert isinstance(failover, Failover)
        primary, password = failover.primary, failover.primary.superuser_password
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'", password)
        primary.psql("SELECT pg_reload_conf()", password)
        assert until(
            lambda: primary.psql("SELECT sync_state FROM pg_stat_replication", password) == "sync",
            10,
        )
        decided = outcomes(drills(info, ["test_failover.py"], FAILOVER))
    assert decided["BAK-FAILOVER-DRILL"][0] is Outcome.PASS, decided


@pytest.mark.turns_red(
    "BAK-FAILOVER-DRILL",
    defect="API workers whose database URL names the primary alone, so they cannot follow a "
    "failover.",
)
def test_workers_that_name_only_the_primary_fail_the_failover_drill() -> None:
    with native(test=NativeTestOptions(workers_primary_only=True)) as info:
        decided = outcomes(drills(info, ["test_failover.py"], FAILOVER))
    outcome, reason = decided["BAK-FAILOVER-DRILL"]
    assert outcome is Outcome.FAIL, reason
    assert "the workers did not follow the failover" in reason

"""The PostgreSQL failover drill (checks/drills/test_failover.py) against the bundled system and a
deliberately broken variant: on the bundled system it passes and leaves the target whole for
what runs after it; with workers whose DSN names the old primary alone it turns red."""

from __future__ import annotations

import pytest

from preflight.outcomes import Outcome
from preflight.targets.native import NativeTestOptions
from tests.checks.support import native, outcomes, probe
from tests.drills.test_fault_variants import drills

FAILOVER = "killed_primary"


def test_the_failover_drill_passes_and_leaves_the_target_whole() -> None:
    with native() as info:
        first = outcomes(drills(info, ["test_failover.py"], FAILOVER))
        # What runs after it finds the primary, its standby and the workers as they were: the
        # replica probe, and the drill that kills the primary and starts it again.
        after = outcomes(probe(info, "infrastructure/test_postgres.py", items={"INF-DB-REPLICA"}))
        kill = outcomes(drills(info, ["test_faults.py"], "killed_component and postgres"))
    assert first["BAK-FAILOVER-DRILL"][0] is Outcome.PASS, first
    assert after["INF-DB-REPLICA"][0] is Outcome.PASS, after
    assert kill["BAK-FAILOVER-DRILL"][0] is Outcome.PASS, kill


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

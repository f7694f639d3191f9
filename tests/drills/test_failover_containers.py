"""The PostgreSQL failover drill (checks/drills/test_failover.py) on the containers target, against
a deliberately broken deployment: API workers whose database URL names the primary alone cannot
follow the standby's promotion, so the drill turns red; its rejoin still puts the pair back
(the old primary rebuilt and primary again, the standby streaming from it), so the replica probe
after it passes. On the deployment system/deploy ships the same drill passes (`preflight run
--target containers --area backup --drills failover`)."""

from __future__ import annotations

import pytest

from preflight.outcomes import Outcome
from preflight.targets.containers import ContainersTarget, docker_available
from tests.checks.support import outcomes, probe
from tests.drills.test_failover_variants import FAILOVER
from tests.drills.test_fault_variants import drills

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")


@pytest.mark.turns_red(
    "BAK-FAILOVER-DRILL",
    defect="API containers whose database URL names the primary alone, so they cannot follow a "
    "failover.",
)
def test_workers_that_name_only_the_primary_fail_the_failover_drill_on_containers() -> None:
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"
    with ContainersTarget(timeout=600, workers_primary_only=True) as info:
        decided = outcomes(drills(info, ["test_failover.py"], FAILOVER))
        after = outcomes(probe(info, "infrastructure/test_postgres.py", items={"INF-DB-REPLICA"}))
    outcome, why = decided["BAK-FAILOVER-DRILL"]
    assert outcome is Outcome.FAIL, why
    assert "the workers did not follow the failover" in why
    assert after["INF-DB-REPLICA"][0] is Outcome.PASS, after

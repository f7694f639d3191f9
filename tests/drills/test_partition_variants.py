"""The partition drills of checks/drills/test_partitions.py against a deliberately broken system
on the containers target (the only one that can cut its network): each seeded defect turns its
drill's item red, and the reason names it. Without a defect both pass on this same target, with
the same drills (checks/drills/test_partitions.py, `--target containers`).

The defects are real configurations of the system, off in every deployment (chatsdk/faults.py):
- CHATSDK_FAULTS=unbounded_db_waits: PostgreSQL connections without a statement timeout or
  TCP_USER_TIMEOUT, so a statement on a connection that meets the partition waits until the
  client gives up.
Its Redis counterpart (CHATSDK_FAULTS=unbounded_redis_waits, a client without socket
timeouts) is not shown here: whether a command meets the partition on a pooled connection,
and waits, or opens a new one, whose name no longer resolves, and fails at once, is up to
timing, so it turned OPS-PARTITION-REDIS red in some runs and not in others."""

from __future__ import annotations

import pytest

from preflight.outcomes import Outcome
from preflight.targets.containers import ContainersTarget, docker_available
from tests.checks.support import outcomes, probe

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")


def test_unbounded_database_waits_turn_the_database_partition_drill_red() -> None:
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"
    faults = {"CHATSDK_FAULTS": "unbounded_db_waits"}
    with ContainersTarget(timeout=600, api_env=faults) as info:
        decided = outcomes(probe(info, "drills/test_partitions.py"))
    red = {item: why for item, (outcome, why) in decided.items() if outcome is Outcome.FAIL}
    assert set(red) == {"OPS-PARTITION-DB"}, decided
    # a send that met the partition got no answer before the client gave up
    assert "every failing request must answer 503" in red["OPS-PARTITION-DB"], red
    assert "no answer (TimeoutError)" in red["OPS-PARTITION-DB"], red

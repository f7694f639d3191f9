"""The partition drills of checks/drills/test_partitions.py against a deliberately broken system
on the containers target (the only one that can cut its network): each seeded defect turns its
drill's item red, and the reason names it. Without a defect both pass on this same target, with
the same drills (checks/drills/test_partitions.py, `--target containers`).

The defects are real configurations of the system, off in every deployment (chatsdk/faults.py):
- CHATSDK_FAULTS=unbounded_db_waits: PostgreSQL connections without a statement timeout or
  TCP_USER_TIMEOUT, so a statement on a connection that meets the partition waits until the
  client gives up;
- CHATSDK_FAULTS=unbounded_redis_waits: a Redis client without socket timeouts, so every
  command across the partition (the rate limiter's, on each send) waits as long.
They share one target: each drill cuts only its own store off."""

from __future__ import annotations

import pytest

from preflight.outcomes import Outcome
from preflight.targets.containers import ContainersTarget, docker_available
from tests.checks.support import outcomes, probe

# Containers targets of the suite's processes start one module at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_stack_at_a_time")


def test_unbounded_waits_turn_the_partition_drills_red() -> None:
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"
    faults = {"CHATSDK_FAULTS": "unbounded_db_waits,unbounded_redis_waits"}
    with ContainersTarget(timeout=600, api_env=faults) as info:
        decided = outcomes(probe(info, "drills/test_partitions.py"))
    red = {item: why for item, (outcome, why) in decided.items() if outcome is Outcome.FAIL}
    assert set(red) == {"OPS-PARTITION-DB", "OPS-PARTITION-REDIS"}, decided
    # the database: a send that met the partition got no answer before the client gave up
    assert "every failing request must answer 503" in red["OPS-PARTITION-DB"], red
    assert "no answer (TimeoutError)" in red["OPS-PARTITION-DB"], red
    # Redis: sends waited on the rate limiter's command to a vanished Redis as long
    assert "message writes must be unaffected" in red["OPS-PARTITION-REDIS"], red
    assert "no answer (TimeoutError)" in red["OPS-PARTITION-REDIS"], red

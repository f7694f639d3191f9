"""The partition drills of checks/drills/test_partitions.py against a deliberately broken system
on the containers target (the only one that can cut its network): each seeded defect turns its
drill's item red, and the reason names it. Without a defect both pass on this same target, with
the same drills (checks/drills/test_partitions.py, `--target containers`).

The defects are real configurations of the system, off in every deployment (chatsdk/faults.py),
each seeded in a deployment of its own:
- CHATSDK_FAULTS=unbounded_db_waits: PostgreSQL connections without a connect timeout of their
  own (asyncpg's 60 s), a statement timeout or TCP_USER_TIMEOUT, so a request that meets the
  partition (on a pooled connection, or on a new one whose SYN goes unanswered) waits until the
  client gives up. (With the 3 s connect timeout kept, only the requests that found a pooled
  connection before the readiness check did would hang, and whether any did was a race.)
- CHATSDK_FAULTS=unbounded_redis_waits: a Redis client without socket timeouts, so a command
  that meets the partition (on a held connection, or on a new one whose SYN goes unanswered)
  waits until the network heals."""

from __future__ import annotations

import pytest

from preflight.outcomes import Outcome
from preflight.targets.containers import ContainersTarget, docker_available
from tests.checks.support import outcomes, probe

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")


@pytest.mark.parametrize(
    ("fault", "item", "named"),
    [
        # sends that met the partition got no answer before the client gave up
        pytest.param(
            "unbounded_db_waits",
            "OPS-PARTITION-DB",
            "no answer (TimeoutError)",
            marks=pytest.mark.turns_red(
                "OPS-PARTITION-DB",
                defect="API containers whose PostgreSQL connections have no statement timeout or "
                "TCP_USER_TIMEOUT.",
            ),
            id="unbounded_db_waits",
        ),
        pytest.param(
            "unbounded_redis_waits",
            "OPS-PARTITION-REDIS",
            "no answer (TimeoutError)",
            marks=pytest.mark.turns_red(
                "OPS-PARTITION-REDIS",
                defect="API containers whose Redis client has no socket timeouts.",
            ),
            id="unbounded_redis_waits",
        ),
    ],
)
def test_unbounded_waits_turn_their_partition_drill_red(fault: str, item: str, named: str) -> None:
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"
    with ContainersTarget(timeout=600, api_env={"CHATSDK_FAULTS": fault}) as info:
        decided = outcomes(probe(info, "drills/test_partitions.py", items=[item]))
    outcome, why = decided[item]
    assert outcome is Outcome.FAIL, why
    assert named in why, why

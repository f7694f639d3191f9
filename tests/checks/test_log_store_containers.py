"""The central log store of the deployment system/deploy ships (its logstore and log-shipper
services), on this machine's Docker engine: every component's fresh event reaches it over the
deployment's `logging` network, and the audit records of administrative actions are written;
without the log-shipper, PostgreSQL's and Redis's events never arrive and the item names them."""

from __future__ import annotations

from pathlib import Path

import pytest

from preflight.outcomes import Outcome
from preflight.targets.containers import ContainersTarget
from tests.checks.support import containers, failing, outcomes, probe
from tests.checks.test_container_metrics_variants import compose_without

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")

LOGS = "monitoring/test_logs.py"


def test_every_container_ships_its_logs_to_the_central_store() -> None:
    with containers() as info:
        decided = outcomes(probe(info, LOGS, items={"MON-LOG-CENTRAL", "MON-AUDIT-LOG"}))
    assert decided["MON-LOG-CENTRAL"][0] is Outcome.PASS, decided["MON-LOG-CENTRAL"]
    assert decided["MON-AUDIT-LOG"][0] is Outcome.PASS, decided["MON-AUDIT-LOG"]


@pytest.mark.turns_red(
    "MON-LOG-CENTRAL",
    defect="the compose file runs no log-shipper, so PostgreSQL's and Redis's log files never "
    "leave their volumes",
)
def test_without_the_shipper_postgres_and_redis_are_named(tmp_path: Path) -> None:
    compose = compose_without(tmp_path, "log-shipper")
    with ContainersTarget(timeout=600, compose_path=compose) as info:
        red = failing(probe(info, LOGS, items={"MON-LOG-CENTRAL"}))
    assert "MON-LOG-CENTRAL" in red, red
    missing = red["MON-LOG-CENTRAL"].split("nothing arrived from", 1)[1]
    assert "postgres" in missing, red["MON-LOG-CENTRAL"]
    assert "redis" in missing, red["MON-LOG-CENTRAL"]
    assert "edge" not in missing, red["MON-LOG-CENTRAL"]

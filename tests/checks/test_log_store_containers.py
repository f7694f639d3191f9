"""The central log store of the deployment system/deploy ships (its logstore and log-shipper
services), on this machine's Docker engine: every component's fresh event reaches it over the
deployment's `logging` network, and the audit records of administrative actions are written."""

from __future__ import annotations

import pytest

from preflight.outcomes import Outcome
from tests.checks.support import containers, outcomes, probe

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")


def test_every_container_ships_its_logs_to_the_central_store() -> None:
    with containers() as info:
        decided = outcomes(
            probe(info, "monitoring/test_logs.py", items={"MON-LOG-CENTRAL", "MON-AUDIT-LOG"})
        )
    assert decided["MON-LOG-CENTRAL"][0] is Outcome.PASS, decided["MON-LOG-CENTRAL"]
    assert decided["MON-AUDIT-LOG"][0] is Outcome.PASS, decided["MON-AUDIT-LOG"]

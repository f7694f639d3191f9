"""MON-ERROR-TRACKING's probe (checks/monitoring/test_error_tracking.py) against the bundled
system, whose workers report to the native target's stand-in for Sentry, and against workers
started without CHATSDK_SENTRY_DSN: the unhandled error is still answered as a JSON 500, but no
event reaches the tracker, and the probe says so."""

from __future__ import annotations

import dataclasses

import pytest

from preflight.outcomes import Outcome
from preflight.targets.base import TargetInfo
from tests.checks.support import native, outcomes, probe

pytestmark = pytest.mark.native

ITEM = "MON-ERROR-TRACKING"
PROBE = "monitoring/test_error_tracking.py"


def decide(info: TargetInfo) -> tuple[Outcome, str]:
    return outcomes(probe(info, PROBE, items={ITEM}))[ITEM]


def test_the_bundled_configuration_reports_the_error_with_its_request_id() -> None:
    with native(workers=1) as info:
        outcome, reason = decide(info)
        # A target that names no events file (an external one) skips, and says what to add.
        unknown, why = decide(
            dataclasses.replace(
                info, observability=dataclasses.replace(info.observability, error_events=None)
            )
        )
    assert outcome is Outcome.PASS, reason
    assert unknown is Outcome.SKIP, why
    assert "gives no error_events" in why


@pytest.mark.turns_red(
    "MON-ERROR-TRACKING",
    defect="Workers started without CHATSDK_SENTRY_DSN: unhandled errors reach no tracker.",
)
def test_workers_without_a_dsn_fail_naming_the_event_that_never_arrived() -> None:
    with native(workers=1, worker_env={"CHATSDK_SENTRY_DSN": ""}) as info:
        outcome, reason = decide(info)
    assert outcome is Outcome.FAIL, reason
    assert "the error tracker must receive an event tagged request_id=" in reason
    assert "got no such event; 0 events received in all" in reason

"""The fault, rollout and alert drills of checks/drills against deliberately broken variants of
the bundled system: each seeded defect turns its drill's items red, and the reason names it.

The defects are real configurations of the system, off in every deployment:
- CHATSDK_FAULTS=exit_on_sigterm: the worker has no SIGTERM handler and dies without draining;
- CHATSDK_FAULTS=quit_on_sigterm: the worker exits 0 at once on SIGTERM, without draining;
- CHATSDK_FAULTS=ack_before_commit: a send answers 201 before its transaction commits;
- a rollout candidate whose migration renames a column the previous release still uses;
- an Alertmanager whose critical alerts no longer page (the pager route is gone);
- a Redis that refuses PUBLISH, so fan-out never resumes.
They share one target where they do not get in each other's way."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from preflight.outcomes import Outcome, ProbeResults
from preflight.plugin import RunContext, run_probes
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTestOptions
from tests.checks.support import CHECKLIST, CHECKS, REPO, apply_edits, native, outcomes

PAGER_ROUTE = """    - receiver: pager
      matchers: ['severity="critical"']
      continue: true
"""
BREAKING_MIGRATION = "ALTER TABLE messages RENAME COLUMN text TO body;\n"


def drills(info: TargetInfo, files: list[str], keyword: str) -> ProbeResults:
    """Run the drills in checks/drills/<files> whose test names match `keyword` (pytest -k)."""
    results = run_probes(
        [CHECKS / "drills" / f for f in files], RunContext(target=info), CHECKLIST, ["-k", keyword]
    )
    if results.errors:
        raise AssertionError("the drills do not collect: " + "; ".join(results.errors))
    return results


def pagerless(tmp: Path) -> Path:
    copy = tmp / "monitoring"
    shutil.copytree(REPO / "system" / "monitoring", copy)
    return apply_edits(copy, {"alertmanager.yml": lambda text: text.replace(PAGER_ROUTE, "")})


def test_seeded_defects_turn_their_drills_red(tmp_path: Path) -> None:
    faults = "exit_on_sigterm,ack_before_commit"
    with native(
        worker_env={"CHATSDK_FAULTS": faults},
        observability=True,
        test=NativeTestOptions(
            rehearsal_migration=BREAKING_MIGRATION, monitoring_dir=pagerless(tmp_path)
        ),
    ) as info:
        results = drills(
            info,
            ["test_alert_drill.py", "test_faults.py", "test_rollout.py"],
            "error_burst or stopped_worker or drains_on_sigterm or draining_worker "
            "or (killed_component and postgres) or rolling_restart or halted_rollout "
            "or migrated_schema or rollback_restores or after_rollback",
        )
    decided = outcomes(results)
    red = {item: reason for item, (outcome, reason) in decided.items() if outcome is Outcome.FAIL}
    assert set(red) == {
        "POST-ALERT-DRILL",
        "APP-GRACEFUL-SHUTDOWN",
        "OPS-GRACEFUL-WS-DRAIN",
        "BAK-FAILOVER-DRILL",
        "DEP-ZERO-DOWNTIME",
        "DEP-MIGRATION-COMPAT",
        "RB-EXECUTE",
        "RB-VERIFY-OLD",
    }, decided
    assert decided["RB-STOP-ROLLOUT"][0] is Outcome.PASS, decided["RB-STOP-ROLLOUT"]
    # no pager: critical alerts reach chat only
    assert "must reach exactly chat, pager (got chat)" in red["POST-ALERT-DRILL"]
    # exit_on_sigterm: no readiness 503, no close frame, a killed process
    assert "readiness 503 after SIGTERM before it stops listening" in red["APP-GRACEFUL-SHUTDOWN"]
    assert "1006" in red["OPS-GRACEFUL-WS-DRAIN"]
    assert any(w in red["DEP-ZERO-DOWNTIME"] for w in ("in flight", "502", "exit 0")), red
    # ack_before_commit: PostgreSQL crashed under acknowledged but uncommitted sends
    assert "acknowledged sends lost" in red["BAK-FAILOVER-DRILL"]
    # the renamed column: the previous release fails on the migrated schema, so does the rollback
    assert "500 internal_error" in red["DEP-MIGRATION-COMPAT"]
    assert "500 internal_error" in red["RB-EXECUTE"]
    assert "500 internal_error" in red["RB-VERIFY-OLD"]


@pytest.mark.turns_red(
    "APP-GRACEFUL-SHUTDOWN",
    "DEP-ZERO-DOWNTIME",
    "RB-EXECUTE",
    defect="the API worker exits 0 at once on SIGTERM, without draining",
)
def test_a_worker_that_does_not_drain_fails_the_restart_drills() -> None:
    """The point of the worker's own drain: nothing takes a worker out of the edge before a
    graceful stop, so a worker that exits at once on SIGTERM, with a clean exit code, cuts
    the requests in flight at it, and the rolling restart, the rollout rehearsal and the
    SIGTERM drill say so (each stop holds a send in flight at the worker it stops)."""
    with native(worker_env={"CHATSDK_FAULTS": "quit_on_sigterm"}) as info:
        results = drills(
            info,
            ["test_faults.py", "test_rollout.py"],
            "drains_on_sigterm or rolling_restart or rollback_restores",
        )
    decided = outcomes(results)
    red = {item: reason for item, (outcome, reason) in decided.items() if outcome is Outcome.FAIL}
    assert set(red) == {"APP-GRACEFUL-SHUTDOWN", "DEP-ZERO-DOWNTIME", "RB-EXECUTE"}, decided
    # The exit codes were 0: what turned the deploy items red is what clients lost.
    for item in ("DEP-ZERO-DOWNTIME", "RB-EXECUTE"):
        assert "must exit 0" not in red[item], red[item]
        assert "in flight" in red[item] or "must fail no request" in red[item], red[item]
    assert "readiness 503 after SIGTERM" in red["APP-GRACEFUL-SHUTDOWN"]


def test_a_redis_without_publish_fails_the_redis_drill() -> None:
    with native(test=NativeTestOptions(redis_settings=['rename-command PUBLISH ""'])) as info:
        decided = outcomes(drills(info, ["test_faults.py"], "losing_redis and restart"))
    outcome, reason = decided["OPS-REDIS-LOSS"]
    assert outcome is Outcome.FAIL, reason
    assert "fan-out must resume once Redis is back" in reason


def test_limits_that_let_everything_through_fail_the_redis_drill() -> None:
    """The drill's limit check can fail: a worker whose per-user limits let every request
    through (Redis up or down) never answers the channel burst with 429."""
    with native(worker_env={"CHATSDK_FAULTS": "no_rate_limits"}) as info:
        decided = outcomes(drills(info, ["test_faults.py"], "losing_redis and crash"))
    outcome, reason = decided["OPS-REDIS-LOSS"]
    assert outcome is Outcome.FAIL, reason
    assert "per-user limits must still hold" in reason or "the user's own limit" in reason

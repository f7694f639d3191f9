"""APP-SUPERVISED's probe against the native target with its supervisor and without it: the
probe kills an API worker by pid, from outside the drill control, and passes only when the
worker serves again with a new pid and its restart is counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from preflight.outcomes import Outcome
from tests.checks.support import native, outcomes, probe

PROBE = "deployment/test_artefacts.py"
ITEM = "APP-SUPERVISED"


def _supervisor_log(log_files: tuple[Path, ...]) -> str:
    return next(p for p in log_files if p.name == "supervisor.log").read_text()


def test_a_supervised_worker_comes_back_and_app_supervised_passes() -> None:
    with native() as info:
        assert info.drills.processes is not None
        assert info.drills.restarts is not None
        before = dict(info.drills.processes())
        decided = outcomes(probe(info, PROBE, items={ITEM}))
        after = dict(info.drills.processes())
        restarts = dict(info.drills.restarts())
        log = _supervisor_log(info.observability.log_files)
    assert decided[ITEM][0] is Outcome.PASS, decided[ITEM]
    assert after["api-0"] != before["api-0"]
    assert after["api-1"] == before["api-1"]
    assert restarts == {"api-0": 1, "api-1": 0}
    assert f"api-0 (pid {before['api-0']}) exited unasked with signal SIGKILL" in log
    assert f"api-0 restarted (pid {before['api-0']} -> {after['api-0']}), restart 1" in log


@pytest.mark.turns_red(
    "APP-SUPERVISED", defect="API workers without a supervisor: a killed worker stays dead."
)
def test_without_supervision_app_supervised_fails_and_the_worker_is_started_again() -> None:
    with native(supervise=False) as info:
        assert info.drills.processes is not None
        assert info.drills.restarts is None
        before = dict(info.drills.processes())
        decided = outcomes(probe(info, PROBE, items={ITEM}))
        after = dict(info.drills.processes())
    outcome, reason = decided[ITEM]
    assert outcome is Outcome.FAIL, decided[ITEM]
    assert "must be restarted by a supervisor within 30 s of a SIGKILL" in reason
    assert "nothing restarted it" in reason
    # The probe leaves the target as it found it: the worker runs again, started by its control.
    assert set(after) == set(before)
    assert after["api-0"] != before["api-0"]

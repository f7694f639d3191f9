"""The rollout rehearsal (checks/drills/test_rollout.py) against a rollout procedure that does not
stop: asked to put one worker on a release, it goes on to every other worker, one at a time,
each once the one before is ready, as a deploy tool without a pause would. The halt the
rehearsal asks for never happens, and RB-STOP-ROLLOUT says so."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from checks.drills._drills import wait_worker_ready
from preflight.probe.target import ProbeTarget
from preflight.targets.base import ReleaseControl
from tests.checks.support import failing, native, probe


@dataclass(frozen=True)
class CarriesOn:
    """A ReleaseControl whose every deploy runs on to the other workers."""

    own: ReleaseControl
    target: ProbeTarget

    @property
    def workers(self) -> tuple[str, ...]:
        return self.own.workers

    def candidate(self) -> Path | None:
        return self.own.candidate()

    def deploy(self, worker: str, release: Path | None) -> int | None:
        code = self.own.deploy(worker, release)
        previous = worker
        for other in (w for w in self.own.workers if w != worker):
            wait_worker_ready(self.target, previous)
            self.own.deploy(other, release)
            previous = other
        return code


@pytest.mark.turns_red(
    "RB-STOP-ROLLOUT",
    defect="the rollout procedure, asked to deploy the candidate to the first worker, carries "
    "on to every other worker instead of halting there",
)
def test_a_rollout_that_does_not_halt_fails_rb_stop_rollout() -> None:
    with native() as info:
        releases = info.drills.releases
        assert releases is not None, "the native target offers releases"
        hands = ProbeTarget(info)
        try:
            nonstop = dataclasses.replace(
                info, drills=dataclasses.replace(info.drills, releases=CarriesOn(releases, hands))
            )
            red = failing(probe(nonstop, "drills/test_rollout.py", items={"RB-STOP-ROLLOUT"}))
        finally:
            hands.close()
    assert set(red) == {"RB-STOP-ROLLOUT"}, red
    assert "every other worker must still run" in red["RB-STOP-ROLLOUT"], red
    assert "the rollout did not stop" in red["RB-STOP-ROLLOUT"], red

"""What runs a run's load stage: the LoadRunner signature (the Locust runner, locust.py, is the
real one) and the runner of `preflight run --no-load`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from preflight.checklist import Item
from preflight.load.results import LoadResults
from preflight.targets.base import TargetInfo

# (target, profile name, load-generator processes, the selected load items) -> what it measured
LoadRunner = Callable[[TargetInfo, str, int, Sequence[Item]], LoadResults]


def no_load_runner(
    _info: TargetInfo, profile: str, _workers: int, items: Sequence[Item]
) -> LoadResults:
    """`preflight run --no-load`: load items stay unverified, and say why."""
    reason = "the load profile was not run (--no-load)"
    return LoadResults(profile=profile, ran=False, reason=reason if items else "no load items")

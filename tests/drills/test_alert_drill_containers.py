"""The alert drill (POST-ALERT-DRILL) on the containers target, against one deployment of
system/deploy: it passes with system/monitoring as shipped, and turns red with an APIServiceDown
that waits for `up == 0` alone, which a stopped container never gives under the compose file's
DNS discovery (it leaves the targets instead of going down)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from preflight.outcomes import Outcome
from preflight.targets.alerting import DrillRouting
from preflight.targets.base import TargetInfo
from tests.checks.support import REPO, containers, outcomes, probe

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")

DRILL = "drills/test_alert_drill.py"
ITEM = "POST-ALERT-DRILL"


@pytest.fixture(scope="module")
def target() -> Iterator[TargetInfo]:
    with containers() as info:
        yield info


def _with_monitoring(info: TargetInfo, source: Path) -> TargetInfo:
    """The same deployment, whose alert drill renders its rules and routes from `source`."""
    routing = info.drills.alert_routing
    assert isinstance(routing, DrillRouting), "the containers target offers alert_routing"
    drills = dataclasses.replace(
        info.drills, alert_routing=dataclasses.replace(routing, source=source)
    )
    return dataclasses.replace(info, drills=drills)


def _up_only(tmp: Path) -> Path:
    """system/monitoring with APIServiceDown as `up == 0` alone."""
    copy = tmp / "monitoring"
    shutil.copytree(REPO / "system" / "monitoring", copy)
    path = copy / "alerts.yml"
    rules: dict[str, Any] = yaml.safe_load(path.read_text())
    down = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "APIServiceDown"]
    assert len(down) == 1, "alerts.yml has one APIServiceDown"
    down[0]["expr"] = 'up{job="chatsdk-api"} == 0'
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return copy


def test_the_shipped_monitoring_pages_for_an_error_burst_and_a_stopped_container(
    target: TargetInfo,
) -> None:
    routing = target.drills.alert_routing
    assert routing is not None
    assert routing.listen_host != "127.0.0.1", "Alertmanager's container reaches no loopback"
    decided = outcomes(probe(target, DRILL, items=[ITEM]))
    assert decided[ITEM][0] is Outcome.PASS, decided


def test_an_api_service_down_on_up_zero_alone_misses_a_stopped_container(
    target: TargetInfo, tmp_path: Path
) -> None:
    results = probe(_with_monitoring(target, _up_only(tmp_path)), DRILL, items=[ITEM])
    red = {r.nodeid.rsplit("::", 1)[1]: r for r in results.results}
    burst = red["test_an_error_burst_pages_through_high_error_rate"]
    down = red["test_a_stopped_worker_pages_through_api_service_down"]
    assert burst.outcome is Outcome.PASS, burst.message
    assert down.outcome is Outcome.FAIL, down.message
    assert "no receiver got it; the alert was never firing" in down.message

"""MON-CONTAINER-METRICS on the containers target: the shipped compose file's container exporter
gives every container CPU and memory series and the system dashboard's container panels data;
the same deployment without it turns exactly that item red, and the reason names the series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from preflight.outcomes import Outcome
from preflight.targets.containers import ContainersTarget
from preflight.targets.containers.compose import COMPOSE_FILE
from preflight.targets.containers.engine import docker_available
from tests.checks.support import outcomes, probe

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")

ITEMS = {"MON-CONTAINER-METRICS", "MON-PROM-SCRAPES", "MON-DASH-SYSTEM"}
# Mounts the target replaces with the run's own (OVERRIDES): kept as written.
REPLACED_MOUNTS = {"./edge", "../monitoring"}


def compose_without(tmp: Path, service: str) -> Path:
    """The shipped compose file without `service`, written to `tmp`: build contexts and the
    files it mounts still point into this repository."""
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    assert service in doc["services"], f"the compose file has no service {service}"
    del doc["services"][service]
    for spec in doc["services"].values():
        if isinstance(build := spec.get("build"), dict):
            build["context"] = str((COMPOSE_FILE.parent / build["context"]).resolve())
        spec["volumes"] = [_absolute(v) for v in spec.get("volumes") or []]
    path = tmp / "docker-compose.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _absolute(volume: str) -> str:
    source, _, rest = volume.partition(":")
    if source.startswith(".") and source.rstrip("/") not in REPLACED_MOUNTS:
        source = str((COMPOSE_FILE.parent / source).resolve())
    return f"{source}:{rest}"


def decided(compose: Path) -> dict[str, tuple[Outcome, str]]:
    """Item -> (outcome, the failing probes' messages) of the live items on this deployment."""
    with ContainersTarget(timeout=600, compose_path=compose) as info:
        results = probe(info, "monitoring/test_live.py", items=ITEMS)
    found = {
        item: (
            outcome,
            " | ".join(r.message for r in results.for_item(item) if r.outcome is Outcome.FAIL),
        )
        for item, (outcome, _reason) in outcomes(results).items()
    }
    assert set(found) == ITEMS, f"every item is decided (got {sorted(found)})"
    return found


@pytest.mark.turns_red(
    "MON-CONTAINER-METRICS",
    defect="The compose deployment without its container exporter.",
)
def test_the_shipped_deployment_has_per_container_metrics_and_without_its_exporter_none(
    tmp_path: Path,
) -> None:
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"
    shipped = decided(COMPOSE_FILE)
    assert {item: o for item, (o, _m) in shipped.items()} == dict.fromkeys(ITEMS, Outcome.PASS), (
        shipped
    )

    broken = decided(compose_without(tmp_path, "container-exporter"))
    red = {item: message for item, (o, message) in broken.items() if o is Outcome.FAIL}
    assert set(red) == {"MON-CONTAINER-METRICS"}, broken
    assert "container_cpu_usage_seconds_total" in red["MON-CONTAINER-METRICS"]
    assert "container_memory_working_set_bytes" in red["MON-CONTAINER-METRICS"]

"""The live monitoring probes (checks/monitoring/test_live.py) against a real Prometheus and
Alertmanager next to the native target, rendered from deliberately broken copies of
system/monitoring: each defect turns exactly its items red and the reason names it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from preflight.outcomes import Outcome
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTestOptions
from tests.checks.support import REPO, failing, native, probe

LIVE_ITEMS = {
    "MON-PROM-SCRAPES",
    "MON-ALERTMANAGER",
    "MON-NO-FIRING-ALERTS",
    "MON-DASH-OVERVIEW",
    "MON-DASH-API",
    "MON-DASH-DB",
    "MON-DASH-SYSTEM",
    "MON-NODE-METRICS",
    "MON-CONTAINER-METRICS",  # skipped on the native target: it runs no containers
}
# Without its backup job (NativeOptions.backups) nothing writes the backup gauge, so
# BackupMetricMissing is pending from the first evaluation on: the alert doing its job.
NO_BACKUPS_RED = {"MON-NO-FIRING-ALERTS"}


def copy_with(tmp: Path, relative: str, edit: Callable[[Any], None]) -> Path:
    """A copy of system/monitoring with one YAML or JSON file changed by `edit` in place, in a
    repository of its own (tmp/repo, for --repo-dir)."""
    copy = tmp / "repo" / "system" / "monitoring"
    if not copy.exists():
        shutil.copytree(REPO / "system" / "monitoring", copy)
    path = copy / relative
    is_json = path.suffix == ".json"
    data = json.loads(path.read_text()) if is_json else yaml.safe_load(path.read_text())
    before = json.dumps(data, sort_keys=True)
    edit(data)
    assert json.dumps(data, sort_keys=True) != before, f"the edit of {relative} changed nothing"
    path.write_text(json.dumps(data) if is_json else yaml.safe_dump(data, sort_keys=False))
    return copy


def red(info: TargetInfo, repo: Path | None = None) -> dict[str, str]:
    results = probe(info, "monitoring/test_live.py", items=LIVE_ITEMS, repo_dir=repo)
    decided = {i for r in results.results for i in r.items}
    assert decided == LIVE_ITEMS, f"every live item is decided (got {sorted(decided)})"
    return {
        item: " | ".join(r.message for r in results.for_item(item) if r.outcome is Outcome.FAIL)
        for item in failing(results)
    }


@pytest.mark.turns_red(
    "MON-DASH-OVERVIEW",
    defect="An overview dashboard panel that queries a metric Prometheus does not have.",
)
def test_the_bundled_system_and_a_dashboard_naming_a_missing_metric(tmp_path: Path) -> None:
    def missing_metric(dashboard: dict[str, Any]) -> None:
        dashboard["panels"][0]["targets"][0]["expr"] = 'sum(chatsdk_no_such_metric{job="x"})'

    copy = copy_with(tmp_path, "grafana/dashboards/overview.json", missing_metric)
    with native(observability=True, backups=True) as info:
        assert info.observability.prometheus_url
        assert info.observability.alertmanager_url
        bundled = red(info)
        assert not bundled, "the bundled system, with its backup job, is green"

        broken = red(info, repo=copy.parents[1])
    assert set(broken) == {"MON-DASH-OVERVIEW"}, broken
    assert "chatsdk_no_such_metric" in broken["MON-DASH-OVERVIEW"]


@pytest.mark.turns_red(
    "MON-ALERTMANAGER",
    "MON-NO-FIRING-ALERTS",
    "MON-NODE-METRICS",
    "MON-DASH-SYSTEM",
    "MON-DASH-DB",
    defect="A Prometheus without Alertmanager, node or PostgreSQL exporter jobs, and an alert rule "
    "that always fires.",
)
def test_prometheus_without_alertmanager_node_or_postgres_exporters_and_an_alert_that_always_fires(
    tmp_path: Path,
) -> None:
    def no_alerting_node_or_postgres(config: dict[str, Any]) -> None:
        del config["alerting"]
        jobs = config["scrape_configs"]
        config["scrape_configs"] = [j for j in jobs if j["job_name"] not in ("node", "postgres")]

    def always(rules: dict[str, Any]) -> None:
        rules["groups"][0]["rules"].append(
            {
                "alert": "SeededAlwaysTrue",
                "expr": "vector(1)",
                "labels": {"severity": "warning"},
                "annotations": {"summary": "seeded", "runbook_url": "system/docs/runbooks/x.md"},
            }
        )

    copy_with(tmp_path, "prometheus.yml", no_alerting_node_or_postgres)
    copy = copy_with(tmp_path, "alerts.yml", always)
    with native(observability=True, test=NativeTestOptions(monitoring_dir=copy)) as info:
        broken = red(info)
    assert set(broken) == {
        "MON-ALERTMANAGER",
        "MON-NO-FIRING-ALERTS",
        "MON-NODE-METRICS",
        "MON-DASH-SYSTEM",
        "MON-DASH-DB",
    }, broken
    assert "no active Alertmanager" in broken["MON-ALERTMANAGER"]
    assert "SeededAlwaysTrue" in broken["MON-NO-FIRING-ALERTS"]
    assert set(broken) >= NO_BACKUPS_RED
    assert "BackupMetricMissing" in broken["MON-NO-FIRING-ALERTS"]
    assert "no healthy node target for 127.0.0.1" in broken["MON-NODE-METRICS"]
    assert "node_load1" in broken["MON-DASH-SYSTEM"]
    assert "pg_stat_activity_count" in broken["MON-DASH-DB"]


@pytest.mark.turns_red(
    "MON-PROM-SCRAPES",
    "MON-NO-FIRING-ALERTS",
    "MON-DASH-OVERVIEW",
    "MON-DASH-API",
    "MON-DASH-DB",
    defect="A Prometheus that scrapes the API workers at a wrong metrics path.",
)
def test_prometheus_scraping_the_workers_at_a_wrong_path(tmp_path: Path) -> None:
    def wrong_path(config: dict[str, Any]) -> None:
        config["scrape_configs"][0]["metrics_path"] = "/v1/metrics"

    copy = copy_with(tmp_path, "prometheus.yml", wrong_path)
    with native(observability=True, test=NativeTestOptions(monitoring_dir=copy)) as info:
        broken = red(info)
    # Nothing from the API reaches Prometheus: the dashboards go blank and APIServiceDown
    # becomes pending, as they would in production.
    assert set(broken) == {
        "MON-PROM-SCRAPES",
        "MON-NO-FIRING-ALERTS",
        "MON-DASH-OVERVIEW",
        "MON-DASH-API",
        "MON-DASH-DB",  # its API-side panels
    }, broken
    assert "/v1/metrics" in broken["MON-PROM-SCRAPES"]
    assert "no target for" in broken["MON-PROM-SCRAPES"]
    assert "APIServiceDown" in broken["MON-NO-FIRING-ALERTS"]

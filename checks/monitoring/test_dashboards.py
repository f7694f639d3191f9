"""The Grafana dashboards committed in system/monitoring/grafana: the five the original ChatSDK
monitoring guide listed exist as JSON, every query parses (promtool) and names only metrics that
exist."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml

from checks.monitoring._monitoring import (
    Monitoring,
    last_lines,
    metric_names,
    queries,
    run,
    tool,
    without_grafana_variables,
)
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

# The original guide's dashboards: overview, API performance, database, system resources,
# realtime.
DASHBOARDS = ("overview", "api", "database", "system", "realtime")


@pytest.mark.checklist("MON-DASH-IN-REPO")
def test_dashboards_are_in_the_repository_and_query_real_metrics(
    monitoring: Monitoring, target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Dashboards over metrics the code never emits are empty when they are needed."""
    folder = monitoring.dir / "grafana" / "dashboards"
    every: list[tuple[str, str, str]] = []
    for name in DASHBOARDS:
        path = folder / f"{name}.json"
        assert path.is_file(), f"dashboard {name} must be committed as {path} (got no file)"
        every += [(name, title, expr) for title, expr in queries(path)]
    provisioning = monitoring.dir / "grafana" / "provisioning"
    providers = list((provisioning / "dashboards").glob("*.yml"))
    assert providers, f"{provisioning}/dashboards must provision the dashboards (got no file)"
    assert any(
        p.get("type") == "file"
        for f in providers
        for p in (yaml.safe_load(f.read_text()) or {}).get("providers") or []
    ), f"{provisioning}/dashboards must hold a file provider (got none)"
    evidence.figure("dashboard queries", len(every))

    # Every query parses: promtool checks them as recording rules.
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": without_grafana_variables(e)}
                    for i, (_n, _t, e) in enumerate(every)
                ],
            }
        ]
    }
    with tempfile.TemporaryDirectory(prefix="preflight-dash-") as tmp:
        path = Path(tmp) / "dashboards.rules.yml"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
        code, out = run([tool("promtool"), "check", "rules", str(path)])
    assert code == 0, f"every dashboard query must be valid PromQL (promtool: {last_lines(out)})"

    exposed = target.metrics.exposed()
    used: dict[str, tuple[str, str]] = {}
    for name, title, expr in every:
        for metric in metric_names(without_grafana_variables(expr)):
            used.setdefault(metric, (name, title))
    unknown = monitoring.unknown_metrics(used, exposed)
    assert not unknown, "; ".join(
        f"panel {used[m][1]!r} of dashboard {used[m][0]} must query metrics that exist ({m}: {why})"
        for m, why in unknown.items()
    )

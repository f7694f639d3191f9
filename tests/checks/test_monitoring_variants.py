"""The monitoring probes against deliberately broken variants: a copy of system/monitoring with
one defect (judged through --repo-dir), an edge that serves /metrics, and workers
that log too little. Each defect turns exactly its items red and the reason names it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from preflight.outcomes import Outcome
from preflight.targets.base import Deployment, Edge, Observability, TargetInfo
from preflight.targets.native import NativeTestOptions
from preflight.targets.native.target import RUNS_WITHOUT
from preflight.targets.procs import free_port
from tests.checks.support import (
    REPO,
    apply_edits,
    edge_templates,
    failing,
    native,
    outcomes,
    probe,
)

# The items decided from the artefacts in system/monitoring.
ARTEFACT_ITEMS = {
    "MON-ALERT-RULES",
    "MON-ALERT-RULES-LINT",
    "MON-ALERT-RUNBOOKS",
    "MON-ALERT-ROUTES",
    "MON-DASH-IN-REPO",
    "POST-ERROR-WATCH",
    "POST-LATENCY-WATCH",
    "BAK-FRESHNESS-ALERT",
}
LOG_ITEMS = {"MON-ACCESS-LOG", "DEP-LOGS-FLOWING", "MON-AUDIT-LOG", "MON-LOG-CENTRAL"}


@pytest.fixture(scope="module")
def target() -> Iterator[TargetInfo]:
    with native() as info:
        yield info


def broken_copy(tmp: Path, relative: str, edit: Callable[[str], str]) -> Path:
    """A repository holding a copy of system/monitoring with one file edited (for --repo-dir)."""
    copy = tmp / "repo" / "system" / "monitoring"
    shutil.copytree(REPO / "system" / "monitoring", copy)
    apply_edits(copy, {relative: edit})
    return tmp / "repo"


def replace_once(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert text.count(old) >= 1, f"{old!r} is not in the file any more"
        return text.replace(old, new, 1)

    return edit


def red_artefact_items(target: TargetInfo, repo: Path) -> dict[str, str]:
    """Item id -> every failure message of its probes against `repo`'s artefacts, joined."""
    results = probe(target, "monitoring", items=ARTEFACT_ITEMS, repo_dir=repo)
    return {
        item: " | ".join(r.message for r in results.for_item(item) if r.outcome is Outcome.FAIL)
        for item in failing(results)
    }


def test_the_bundled_artefacts_pass(target: TargetInfo) -> None:
    assert failing(probe(target, "monitoring", items=ARTEFACT_ITEMS)) == {}


def null_pager(text: str) -> str:
    """alertmanager.yml with the pager receiver (critical alerts) left without integrations."""
    return re.sub(r"(?ms)^  - name: pager\n.*?(?=^  - name: chat)", "  - name: pager\n", text)


def without_redis_memory_alert(text: str) -> str:
    """alerts.yml without RedisMemoryFull (nor its unit tests: only the rule is missing)."""
    return re.sub(r"(?ms)^      # Used memory as a share of maxmemory.*?(?=^  - name: )", "", text)


@pytest.mark.parametrize(
    ("relative", "edit", "reasons"),
    [
        pytest.param(
            "alerts.yml",
            replace_once("> 0.01", "> 1"),
            {
                "MON-ALERT-RULES": ["promtool test rules"],
                "POST-ERROR-WATCH": ["1.5 % of requests failing"],
            },
            id="an-error-ratio-compared-to-1-instead-of-1-percent-cannot-fire",
            marks=pytest.mark.turns_red(
                "MON-ALERT-RULES",
                "POST-ERROR-WATCH",
                defect="The error-ratio alert compares with 1, not 0.01: it never fires.",
            ),
        ),
        pytest.param(
            "alerts.yml",
            replace_once("http_request_duration_seconds_bucket{", "http_request_duration_bucket{"),
            {
                "MON-ALERT-RULES": ["http_request_duration_bucket"],
                "POST-LATENCY-WATCH": ["p95 stays at 0.65 s"],
            },
            id="a-metric-name-typo-in-the-latency-alert-is-caught",
            marks=pytest.mark.turns_red(
                "MON-ALERT-RULES",
                "POST-LATENCY-WATCH",
                defect="The latency alert selects a metric nobody exports (a name typo).",
            ),
        ),
        pytest.param(
            "alerts.yml",
            replace_once(
                '(max_over_time(up{job="chatsdk-api"}[10m]) unless',
                '(max_over_time(up{job="chatsdk-api"}[10m]) and',
            ),
            {"MON-ALERT-RULES": ["promtool test rules"]},
            id="a-service-down-alert-blind-to-workers-that-left-discovery-fails-its-unit-test",
            marks=pytest.mark.turns_red(
                "MON-ALERT-RULES",
                defect="APIServiceDown ignores workers that left discovery: none pages.",
            ),
        ),
        pytest.param(
            "alerts.yml",
            replace_once("          runbook_url: system/docs/runbooks/disk-usage-high.md\n", ""),
            {"MON-ALERT-RUNBOOKS": ["DiskUsageHigh", "runbook_url"]},
            id="an-alert-without-a-runbook-link-fails-only-the-runbook-item",
            marks=pytest.mark.turns_red(
                "MON-ALERT-RUNBOOKS",
                defect="DiskUsageHigh carries no runbook_url annotation.",
            ),
        ),
        pytest.param(
            "alerts.yml",
            replace_once("> 25 * 3600", "> 48 * 3600"),
            {"BAK-FRESHNESS-ALERT": ["older than 25 hours"], "MON-ALERT-RULES": []},
            id="a-backup-alert-at-48-hours-fails-the-freshness-item",
            marks=pytest.mark.turns_red(
                "BAK-FRESHNESS-ALERT",
                defect="The backup-age alert waits for 48 hours instead of 25.",
            ),
        ),
        pytest.param(
            "grafana/dashboards/realtime.json",
            replace_once("sum(rate(messages_sent_total{", "sum(rate(chat_messages_sent_total{"),
            {"MON-DASH-IN-REPO": ["chat_messages_sent_total", "realtime"]},
            id="a-dashboard-querying-a-missing-metric-fails-only-the-dashboard-item",
            marks=pytest.mark.turns_red(
                "MON-DASH-IN-REPO",
                defect="The realtime dashboard queries a metric that nothing exports.",
            ),
        ),
        pytest.param(
            "alerts.yml",
            without_redis_memory_alert,
            {"MON-ALERT-RULES": ["Redis memory near maxmemory (RedisMemoryFull)"]},
            id="alerts-without-the-redis-memory-alert-of-the-original-fail-the-rules-item",
            marks=pytest.mark.turns_red(
                "MON-ALERT-RULES",
                defect="alerts.yml leaves out RedisMemoryFull, one of the original guide's eight.",
            ),
        ),
        pytest.param(
            "alertmanager.yml",
            null_pager,
            {"MON-ALERT-ROUTES": ["pager receiver"]},
            id="critical-alerts-routed-to-a-receiver-without-integrations-fail-the-routes-item",
            marks=pytest.mark.turns_red(
                "MON-ALERT-ROUTES",
                defect="The pager receiver that critical alerts route to has no integration.",
            ),
        ),
    ],
)
def test_a_defect_in_the_artefacts_turns_exactly_its_items_red(
    target: TargetInfo,
    tmp_path: Path,
    *,
    relative: str,
    edit: Callable[[str], str],
    reasons: dict[str, list[str]],
) -> None:
    """`reasons`: each item the defect turns red -> what its failure message must say."""
    red = red_artefact_items(target, broken_copy(tmp_path, relative, edit))
    assert set(red) == set(reasons), red
    for item, phrases in reasons.items():
        for phrase in phrases:
            assert phrase in red[item], (item, phrase, red[item])


def test_an_edge_that_serves_metrics_fails_the_metrics_endpoint_item(tmp_path: Path) -> None:
    deny = (
        "        location ~ ^/(?:v1/)?metrics(?:/|$) {\n"
        "            include security/headers.conf;\n"
        "            return 404;\n"
    )
    proxied = deny.replace("return 404;", "proxy_pass http://api;")
    templates = edge_templates(tmp_path, {"nginx.conf.j2": lambda t: t.replace(deny, proxied, 1)})
    with native(test=NativeTestOptions(edge_template_dir=templates)) as info:
        red = failing(probe(info, "monitoring/test_metrics.py"))
    assert set(red) == {"MON-METRICS-ENDPOINT"}, red
    assert "must not serve metrics from the public edge" in red["MON-METRICS-ENDPOINT"]


def test_workers_that_log_only_warnings_fail_the_request_log_items() -> None:
    with native(worker_env={"CHATSDK_LOG_LEVEL": "WARNING"}) as info:
        red = failing(probe(info, "monitoring/test_logs.py", items=LOG_ITEMS))
    # Audit records do not depend on the log level; request records do.
    assert set(red) == {"DEP-LOGS-FLOWING", "MON-LOG-CENTRAL"}, red
    assert "API's logs must hold a record with request_id" in red["DEP-LOGS-FLOWING"]


def grafana_target(
    name: str, grafana_url: str | None, runs_without: Mapping[str, str] | None = None
) -> TargetInfo:
    """A target whose only part MON-GRAFANA's probe uses is its Grafana (no edge behind it)."""
    return TargetInfo(
        name=name,
        kind="external",
        edge=Edge("https://127.0.0.1:9"),
        admin_key="unused",
        observability=Observability(grafana_url=grafana_url),
        deployment=Deployment(runs_without=runs_without or {}),
    )


def test_grafana_is_judged_only_where_the_target_names_one_and_a_dead_one_fails() -> None:
    # The native target says it runs no Grafana; a target file that names none is asked for one.
    native = grafana_target("native", None, RUNS_WITHOUT)
    outcome, reason = outcomes(probe(native, "monitoring/test_grafana.py"))["MON-GRAFANA"]
    assert outcome is Outcome.SKIP, (outcome, reason)
    assert "runs no Grafana" in reason
    unnamed = grafana_target("staging", None)
    outcome, reason = outcomes(probe(unnamed, "monitoring/test_grafana.py"))["MON-GRAFANA"]
    assert outcome is Outcome.SKIP, (outcome, reason)
    assert "gives no grafana_url" in reason

    port = free_port()  # nothing listens: Grafana is down
    down = grafana_target("staging", f"http://viewer:s3cret-pw@127.0.0.1:{port}")
    outcome, reason = outcomes(probe(down, "monitoring/test_grafana.py"))["MON-GRAFANA"]
    assert outcome is Outcome.FAIL, (outcome, reason)
    assert f"Grafana at http://127.0.0.1:{port} must answer /api/health" in reason
    assert "no answer" in reason
    assert "s3cret-pw" not in reason

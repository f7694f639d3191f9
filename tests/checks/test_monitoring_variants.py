"""The monitoring probes against deliberately broken variants: a copy of system/monitoring with
one defect (judged through --repo-dir), an edge that serves /metrics, and workers
that log too little. Each defect turns exactly its items red and the reason names it."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from preflight.outcomes import Outcome
from preflight.targets.base import Deployment, Edge, Observability, TargetInfo
from preflight.targets.native import NativeTestOptions
from preflight.targets.native.target import RUNS_WITHOUT
from preflight.targets.procs import free_port
from tests.checks.history import Operation, Week, prometheus_with_history
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
    "OPS-MTTD-MTTR",
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
            marks=pytest.mark.turns_red(
                "MON-ALERT-RULES",
                "POST-ERROR-WATCH",
                defect="An error-ratio alert compared with 1 instead of 0.01: it can never fire.",
            ),
            id="an-error-ratio-compared-to-1-instead-of-1-percent-cannot-fire",
        ),
        pytest.param(
            "alerts.yml",
            replace_once("http_request_duration_seconds_bucket{", "http_request_duration_bucket{"),
            {
                "MON-ALERT-RULES": ["http_request_duration_bucket"],
                "POST-LATENCY-WATCH": ["p95 stays at 0.65 s"],
            },
            marks=pytest.mark.turns_red(
                "MON-ALERT-RULES",
                "POST-LATENCY-WATCH",
                defect="A latency alert querying a misspelt metric name "
                "(http_request_duration_bucket).",
            ),
            id="a-metric-name-typo-in-the-latency-alert-is-caught",
        ),
        pytest.param(
            "alerts.yml",
            replace_once(
                '(max_over_time(up{job="chatsdk-api"}[10m]) unless',
                '(max_over_time(up{job="chatsdk-api"}[10m]) and',
            ),
            {"MON-ALERT-RULES": ["promtool test rules"]},
            marks=pytest.mark.turns_red(
                "MON-ALERT-RULES",
                defect="A service-down alert blind to workers that left service discovery.",
            ),
            id="a-service-down-alert-blind-to-workers-that-left-discovery-fails-its-unit-test",
        ),
        pytest.param(
            "alerts.yml",
            replace_once("          runbook_url: system/docs/runbooks/disk-usage-high.md\n", ""),
            {"MON-ALERT-RUNBOOKS": ["DiskUsageHigh", "runbook_url"]},
            marks=pytest.mark.turns_red(
                "MON-ALERT-RUNBOOKS",
                defect="An alert (DiskUsageHigh) without its runbook_url.",
            ),
            id="an-alert-without-a-runbook-link-fails-only-the-runbook-item",
        ),
        pytest.param(
            "alerts.yml",
            replace_once("> 25 * 3600", "> 48 * 3600"),
            {"BAK-FRESHNESS-ALERT": ["older than 25 hours"], "MON-ALERT-RULES": []},
            marks=pytest.mark.turns_red(
                "BAK-FRESHNESS-ALERT",
                defect="A backup freshness alert that waits 48 hours instead of 25.",
            ),
            id="a-backup-alert-at-48-hours-fails-the-freshness-item",
        ),
        pytest.param(
            "grafana/dashboards/realtime.json",
            replace_once("sum(rate(messages_sent_total{", "sum(rate(chat_messages_sent_total{"),
            {"MON-DASH-IN-REPO": ["chat_messages_sent_total", "realtime"]},
            marks=pytest.mark.turns_red(
                "MON-DASH-IN-REPO",
                defect="A dashboard panel querying a metric nothing exports.",
            ),
            id="a-dashboard-querying-a-missing-metric-fails-only-the-dashboard-item",
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
            "slo.yml",
            replace_once("mttd: 5m", "mttd: 15m"),
            {"OPS-MTTD-MTTR": ["incidents.mttd of at most 5 minutes (got 15 minutes)"]},
            id="a-detection-target-of-15-minutes-fails-the-mttd-item",
            marks=pytest.mark.turns_red(
                "OPS-MTTD-MTTR",
                defect="slo.yml declares a 15-minute detection target, not the original's 5.",
            ),
        ),
        pytest.param(
            "alertmanager.yml",
            null_pager,
            {"MON-ALERT-ROUTES": ["pager receiver"]},
            marks=pytest.mark.turns_red(
                "MON-ALERT-ROUTES",
                defect="Critical alerts routed to a pager receiver without integrations.",
            ),
            id="critical-alerts-routed-to-a-receiver-without-integrations-fail-the-routes-item",
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


@pytest.mark.turns_red(
    "MON-METRICS-ENDPOINT",
    defect="An edge that proxies /metrics from the public side to the API workers.",
)
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


@pytest.mark.turns_red(
    "DEP-LOGS-FLOWING",
    "MON-LOG-CENTRAL",
    defect="API workers that log only warnings, so no request record reaches the logs.",
)
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


@pytest.mark.turns_red(
    "MON-GRAFANA",
    defect="A target whose named Grafana does not answer.",
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


# -- the items read from the target's Prometheus over a window of production history ---------

HISTORY_ITEMS = {"POST-PERF-REVIEW", "POST-REAL-USAGE", "MON-UPTIME-SLO", "MON-PROM-RETENTION"}


ALL_UP = {"api": "up", "database": "up", "redis": "up", "realtime": "up"}


@contextmanager
def serving_status_page(components: Mapping[str, str]) -> Iterator[str]:
    """A status page on this machine's loopback that reads a JSON reporting `components`, for a
    repository copy that declares it."""
    report = json.dumps({"status": "up", "components": components, "checked_at": "now"})
    pages = {
        "/status": ("text/html", '<main data-status-source="/status.json"></main>'),
        "/status.json": ("application/json", report),
    }

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            kind, body = pages.get(self.path, ("text/plain", ""))
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/status"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def status_page() -> Iterator[str]:
    """A status page reporting every component up."""
    with serving_status_page(ALL_UP) as url:
        yield url


def history_outcomes(
    tmp: Path, week: Week | None, page: str, retention: str = "30d"
) -> dict[str, tuple[Outcome, str]]:
    """The history items' outcomes against a Prometheus holding `week`, judging a repository
    whose slo.yml declares the status page `page`."""
    repo = broken_copy(tmp, "slo.yml", replace_once("status_page: /status", f"status_page: {page}"))
    with prometheus_with_history(tmp / "prometheus", week, retention) as info:
        results = probe(info, "monitoring/test_history.py", items=HISTORY_ITEMS, repo_dir=repo)
    return outcomes(results)


def test_a_week_within_every_target_passes_the_history_items(
    tmp_path: Path, status_page: str
) -> None:
    found = history_outcomes(tmp_path, Week(), status_page)
    assert {item: o for item, (o, _) in found.items()} == dict.fromkeys(
        HISTORY_ITEMS, Outcome.PASS
    ), found


def test_without_a_week_of_history_the_history_items_are_unverified_saying_so(
    tmp_path: Path, status_page: str
) -> None:
    found = history_outcomes(tmp_path, Week(days=0.5), status_page)
    for item in ("POST-PERF-REVIEW", "POST-REAL-USAGE", "MON-UPTIME-SLO"):
        outcome, reason = found[item]
        assert outcome is Outcome.UNVERIFIED, (item, outcome, reason)
        assert "no production history over the window" in reason, (item, reason)
    assert found["MON-PROM-RETENTION"][0] is Outcome.PASS, found


@pytest.mark.parametrize(
    ("week", "retention", "red", "phrase"),
    [
        pytest.param(
            Week(slow_days=2),
            "30d",
            "POST-PERF-REVIEW",
            "p95 latency below 500 ms",
            id="two-slow-days-in-the-first-week-fail-the-performance-review",
            marks=pytest.mark.turns_red(
                "POST-PERF-REVIEW",
                defect="The API's p95 latency was about 0.9 s on the last two days of the week.",
            ),
        ),
        pytest.param(
            Week(
                operations=(
                    Operation("GET", "/v1/channels", 0.9),
                    Operation("POST", "/v1/channels/{channel_id}/messages", 0.1, 0.05),
                )
            ),
            "30d",
            "POST-REAL-USAGE",
            "POST /v1/channels/{channel_id}/messages 5.00%",
            id="one-operation-failing-five-percent-under-the-observed-mix-fails-real-usage",
            marks=pytest.mark.turns_red(
                "POST-REAL-USAGE",
                defect="Sending messages, a tenth of the traffic, failed 5 % all week.",
            ),
        ),
        pytest.param(
            Week(down_minutes=30),
            "30d",
            "MON-UPTIME-SLO",
            "must be up 99.9%",
            id="thirty-minutes-down-in-a-week-fail-the-uptime-objective",
            marks=pytest.mark.turns_red(
                "MON-UPTIME-SLO", defect="Every API worker was down for 30 minutes of the week."
            ),
        ),
        pytest.param(
            Week(),
            "15d",
            "MON-PROM-RETENTION",
            "at least 30d",
            id="a-prometheus-keeping-15-days-fails-the-retention-item",
            marks=pytest.mark.turns_red(
                "MON-PROM-RETENTION", defect="Prometheus runs with its default retention, 15 days."
            ),
        ),
    ],
)
def test_a_breach_in_the_history_turns_exactly_its_item_red(
    tmp_path: Path, status_page: str, *, week: Week, retention: str, red: str, phrase: str
) -> None:
    found = history_outcomes(tmp_path, week, status_page, retention)
    failed = {item: reason for item, (o, reason) in found.items() if o is Outcome.FAIL}
    assert set(failed) == {red}, found
    assert phrase in failed[red], failed[red]


@pytest.mark.turns_red(
    "MON-UPTIME-SLO", defect="slo.yml declares no status page that publishes the uptime."
)
def test_no_status_page_fails_the_uptime_item(tmp_path: Path) -> None:
    repo = broken_copy(tmp_path, "slo.yml", replace_once("status_page: /status", "status_page:"))
    with prometheus_with_history(tmp_path / "prometheus", Week()) as info:
        red = failing(
            probe(info, "monitoring/test_history.py", items={"MON-UPTIME-SLO"}, repo_dir=repo)
        )
    assert set(red) == {"MON-UPTIME-SLO"}, red
    assert "must declare the status page" in red["MON-UPTIME-SLO"]


@pytest.mark.turns_red(
    "MON-UPTIME-SLO",
    defect="The status page's JSON reports the API, PostgreSQL and the WebSocket but not Redis.",
)
def test_a_status_page_that_leaves_out_a_component_fails_the_uptime_item(tmp_path: Path) -> None:
    without_redis = {name: state for name, state in ALL_UP.items() if name != "redis"}
    with serving_status_page(without_redis) as page:
        found = history_outcomes(tmp_path, Week(), page)
    outcome, reason = found["MON-UPTIME-SLO"]
    assert outcome is Outcome.FAIL, found
    assert "must report each of api, database, redis, realtime" in reason, reason


# -- the bundled system's status page (/status on the edge, reading /v1/status) ----------------

STATUS_PAGE_TEST = "monitoring/test_history.py::test_a_status_page_publishes_the_uptime"


def test_the_bundled_status_page_passes(target: TargetInfo) -> None:
    results = probe(target, STATUS_PAGE_TEST)
    assert [r.outcome for r in results.for_item("MON-UPTIME-SLO")] == [Outcome.PASS], results


def test_the_bundled_status_page_passes_showing_redis_down_while_it_is_stopped() -> None:
    with native() as info:
        info.drills.control["redis"].stop()
        results = probe(info, STATUS_PAGE_TEST)
    assert [r.outcome for r in results.for_item("MON-UPTIME-SLO")] == [Outcome.PASS], results


@pytest.mark.turns_red(
    "MON-UPTIME-SLO", defect="The edge serves no status page: the web client ships no status.html."
)
def test_a_missing_status_page_fails_the_uptime_item(tmp_path: Path) -> None:
    web = tmp_path / "web"
    shutil.copytree(REPO / "system" / "web", web)
    (web / "status.html").unlink()
    with native(test=NativeTestOptions(web_dir=web)) as info:
        red = failing(probe(info, STATUS_PAGE_TEST))
    assert set(red) == {"MON-UPTIME-SLO"}, red
    assert "/status must answer 200 (got 404)" in red["MON-UPTIME-SLO"]


@pytest.mark.turns_red(
    "MON-UPTIME-SLO",
    defect="GET /v1/status reports every component up while Redis is stopped.",
)
def test_a_status_page_that_says_all_up_while_redis_is_down_fails_the_uptime_item() -> None:
    with native(worker_env={"CHATSDK_FAULTS": "status_always_up"}) as info:
        info.drills.control["redis"].stop()
        red = failing(probe(info, STATUS_PAGE_TEST))
    assert set(red) == {"MON-UPTIME-SLO"}, red
    assert "redis up while it does not answer" in red["MON-UPTIME-SLO"]
    assert "realtime up while Redis" in red["MON-UPTIME-SLO"]

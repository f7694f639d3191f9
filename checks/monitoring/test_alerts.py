"""Alert rules, their unit tests, runbooks and routes (system/monitoring), checked with promtool
and amtool; the launch watches (error ratio, latency) and the backup-age alert are proven to fire
by promtool evaluating the real rules over series these probes make up."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from checks.monitoring._history import duration_s, slo
from checks.monitoring._monitoring import (
    API_JOB,
    PAGER_CONFIGS,
    RECEIVER_CONFIGS,
    REPO,
    SEVERITIES,
    Monitoring,
    Rule,
    describe_routes,
    fires,
    last_lines,
    metric_names,
    routes,
    run,
    severity_routes,
    tool,
)
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

# The eight alerts of the original monitoring guide (MON-ALERT-RULES), each recognised by what
# its expression measures, whatever it is called.
REQUIRED_ALERTS: dict[str, Callable[[Rule], bool]] = {
    "API service down (APIServiceDown)": lambda r: "up" in metric_names(r.expr),
    "high error ratio (HighErrorRate)": lambda r: (
        "http_requests_total" in metric_names(r.expr) and "5.." in r.expr
    ),
    "high response time (HighResponseTime)": lambda r: (
        "http_request_duration_seconds_bucket" in metric_names(r.expr)
        and "histogram_quantile" in r.expr
    ),
    "high memory usage (HighMemoryUsage)": lambda r: bool(
        {"container_memory_working_set_bytes", "node_memory_MemAvailable_bytes"}
        & metric_names(r.expr)
    ),
    "high CPU usage (HighCPUUsage)": lambda r: bool(
        {"container_cpu_usage_seconds_total", "node_cpu_seconds_total"} & metric_names(r.expr)
    ),
    "database connections near max_connections (DatabasePoolExhausted)": lambda r: (
        {"pg_stat_activity_count", "pg_settings_max_connections"} <= metric_names(r.expr)
    ),
    "Redis memory near maxmemory (RedisMemoryFull)": lambda r: (
        "redis_memory_used_bytes" in metric_names(r.expr)
    ),
    "disk almost full (DiskUsageHigh)": lambda r: (
        "node_filesystem_avail_bytes" in metric_names(r.expr)
    ),
}


@pytest.mark.checklist("MON-ALERT-RULES-LINT")
def test_alert_rules_pass_promtool_check_rules(
    monitoring: Monitoring, evidence: EvidenceLog
) -> None:
    """Rules that do not parse are never loaded, so they never fire."""
    rules = monitoring.artefact("alerts.yml")
    code, out = run([tool("promtool"), "check", "rules", str(rules)])
    evidence.attach("promtool check rules", out, "text/plain")
    assert code == 0, (
        f"promtool check rules {rules} must succeed (got exit {code}: {last_lines(out)})"
    )


@pytest.mark.checklist("MON-ALERT-RULES")
def test_alert_rules_cover_the_critical_cases_and_their_unit_tests_pass(
    monitoring: Monitoring,
    evidence: EvidenceLog,
) -> None:
    """Without tested alerts for the original guide's eight cases, users find the outage."""
    rules = monitoring.alert_rules()
    for what, recognise in REQUIRED_ALERTS.items():
        found = sorted({r.alert for r in rules if recognise(r)})
        evidence.note(f"{what}: {', '.join(found) or 'none'}")
        assert found, (
            f"alerts.yml in {monitoring.dir} must hold an alert on {what} (got none among "
            f"{', '.join(sorted({r.alert for r in rules}))})"
        )
    for rule in rules:
        severity = rule.labels.get("severity")
        assert severity in SEVERITIES, (
            f"alert {rule.alert} must have a severity label in {sorted(SEVERITIES)} "
            f"(got {severity!r})"
        )
        assert rule.raw.get("for"), f"alert {rule} must have a `for` duration (got none)"
    tests = monitoring.artefact("alerts.test.yml")
    untested = sorted({r.alert for r in rules if r.alert not in tests.read_text()})
    assert not untested, f"{tests} must test every alert (got no test of {', '.join(untested)})"
    code, out = run([tool("promtool"), "test", "rules", tests.name], cwd=tests.parent)
    evidence.attach("promtool test rules", out, "text/plain")
    assert code == 0, (
        f"promtool test rules {tests} must pass, proving each alert fires on a breach and stays "
        f"quiet below it (got exit {code}: {last_lines(out, 8)})"
    )


@pytest.mark.checklist("MON-ALERT-RULES")
def test_alert_rules_use_only_metrics_that_exist(
    monitoring: Monitoring, target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """An expression over a metric nobody exports is empty and can never fire."""
    exposed = target.metrics.exposed()
    used = {name: rule for rule in monitoring.alert_rules() for name in metric_names(rule.expr)}
    evidence.figure("metric names used by alerts", len(used))
    unknown = monitoring.unknown_metrics(used, exposed)
    assert not unknown, "; ".join(
        f"alert {used[name].alert} must use metrics that exist ({name}: {why})"
        for name, why in unknown.items()
    )


@pytest.mark.checklist("MON-ALERT-RUNBOOKS")
def test_every_alert_links_an_existing_runbook(
    monitoring: Monitoring, evidence: EvidenceLog
) -> None:
    """A page without a runbook slows whoever is on call."""
    for rule in monitoring.alert_rules():
        url = str(rule.annotations.get("runbook_url", "")).strip()
        assert url, f"alert {rule} must carry a runbook_url annotation (got none)"
        match = re.search(r"(?:^|/)(system/docs/runbooks/[\w.-]+\.md)$", url)
        assert match, (
            f"runbook_url of alert {rule} must point at system/docs/runbooks/*.md (got {url!r})"
        )
        runbook = REPO / match[1]
        assert runbook.is_file(), f"runbook of alert {rule} must exist at {runbook} (got no file)"
        text = runbook.read_text()
        assert rule.alert in text, (
            f"runbook {match[1]} linked by alert {rule.alert} must be about it (it never names "
            f"{rule.alert})"
        )
        evidence.note(f"{rule}: {match[1]}")


@pytest.mark.checklist("MON-ALERT-ROUTES")
def test_every_alert_routes_to_a_real_receiver(
    monitoring: Monitoring, evidence: EvidenceLog
) -> None:
    """An alert routed to a receiver without integrations is silence."""
    config = monitoring.artefact("alertmanager.yml")
    code, out = run([tool("amtool"), "check-config", str(config)])
    evidence.attach("amtool check-config", out, "text/plain")
    assert code == 0, (
        f"amtool check-config {config} must succeed (got exit {code}: {last_lines(out)})"
    )
    receivers = {
        str(r.get("name")): r
        for r in (monitoring.load_yaml("alertmanager.yml").get("receivers") or [])
    }
    rules = monitoring.alert_rules()
    # What the real routes do for each severity alerts.yml uses (the alert drill delivers to a
    # webhook sink instead, and names these receivers in its evidence).
    for line in describe_routes(
        config, severity_routes(config, {str(r.labels.get("severity")) for r in rules})
    ):
        evidence.note(line)
    for rule in rules:
        labels = {"alertname": rule.alert, "job": API_JOB, "service": "chatsdk"}
        labels.update({str(k): str(v) for k, v in rule.labels.items()})
        names = routes(config, labels)
        evidence.note(f"{rule} -> {', '.join(names) or 'nothing'}")
        real = [n for n in names if any(receivers.get(n, {}).get(c) for c in RECEIVER_CONFIGS)]
        assert real, (
            f"alert {rule} must reach a receiver with a chat, pager or email integration "
            f"(got routed to {', '.join(names) or 'nothing'}, which has none)"
        )
        if rule.labels.get("severity") == "critical":
            pagers = [n for n in names if any(receivers.get(n, {}).get(c) for c in PAGER_CONFIGS)]
            assert pagers, (
                f"critical alert {rule.alert} must reach a pager receiver "
                f"({', '.join(PAGER_CONFIGS)}) (got routed to {', '.join(names) or 'nothing'})"
            )
    inhibit = monitoring.load_yaml("alertmanager.yml").get("inhibit_rules") or []
    assert inhibit, (
        f"{config} must inhibit warnings while the matching critical alert fires "
        "(got no inhibit_rules)"
    )


def _error_series(instances: int, per_minute: int, errors_per_minute: float) -> dict[str, str]:
    series = {}
    for i in range(instances):
        base = f'job="{API_JOB}", instance="api-{i}:8080", method="GET", route="/v1/channels"'
        series[f'http_requests_total{{{base}, status="200"}}'] = (
            f"0+{per_minute - errors_per_minute}x60"
        )
        series[f'http_requests_total{{{base}, status="500"}}'] = f"0+{errors_per_minute}x60"
    return series


def _one_of(monitoring: Monitoring, rules: list[Rule], what: str) -> list[str]:
    __tracebackhide__ = True
    assert rules, f"alerts.yml in {monitoring.dir} must hold an alert on {what} (got none)"
    return [r.alert for r in rules]


@pytest.mark.checklist("POST-ERROR-WATCH")
def test_error_ratio_alert_fires_above_one_percent_within_five_minutes(
    monitoring: Monitoring,
    evidence: EvidenceLog,
) -> None:
    """Error spikes after launch must page someone rather than wait for a human to look."""
    alerts = _one_of(
        monitoring,
        monitoring.rules_using("http_requests_total", lambda r: "5.." in r.expr),
        "the 5xx error ratio",
    )
    rules = monitoring.artefact("alerts.yml")
    # 1.5 % of 1000 requests a minute on each of two workers, from t=0.
    fired, out = fires(rules, _error_series(2, 1000, 15), "1m", alerts, "7m")
    evidence.attach("promtool, 1.5 % errors", out, "text/plain")
    assert fired, (
        f"an error-ratio alert ({', '.join(alerts)}) must fire within 5 minutes of 1.5 % of "
        "requests failing (got none firing after 7 minutes)"
    )
    fired, out = fires(rules, _error_series(2, 1000, 8), "1m", alerts, "30m")
    evidence.attach("promtool, 0.8 % errors", out, "text/plain")
    assert not fired, (
        f"error-ratio alerts ({', '.join(alerts)}) must stay quiet at 0.8 % errors (got one "
        "firing after 30 minutes)"
    )


def _latency_series(cumulative: dict[str, int]) -> dict[str, str]:
    base = f'job="{API_JOB}", instance="api-0:8080", method="GET", route="/v1/channels"'
    return {
        f'http_request_duration_seconds_bucket{{{base}, le="{le}"}}': f"0+{count}x60"
        for le, count in cumulative.items()
    }


@pytest.mark.checklist("POST-LATENCY-WATCH")
def test_latency_alert_fires_when_p95_exceeds_500_ms_for_ten_minutes(
    monitoring: Monitoring,
    evidence: EvidenceLog,
) -> None:
    """Gradual degradation after launch goes unnoticed without a latency alert."""
    alerts = _one_of(
        monitoring,
        monitoring.rules_using(
            "http_request_duration_seconds_bucket", lambda r: "histogram_quantile" in r.expr
        ),
        "p95 latency from the request-duration histogram",
    )
    rules = monitoring.artefact("alerts.yml")
    # p95 about 0.65 s and about 0.48 s (linear interpolation inside the buckets).
    slow = {"0.25": 50, "0.5": 88, "0.75": 100, "1.0": 100, "+Inf": 100}
    fast = {"0.25": 80, "0.5": 96, "0.75": 100, "1.0": 100, "+Inf": 100}
    fired, out = fires(rules, _latency_series(slow), "1m", alerts, "12m")
    evidence.attach("promtool, p95 0.65 s", out, "text/plain")
    assert fired, (
        f"a latency alert ({', '.join(alerts)}) must fire when p95 stays at 0.65 s for 10 "
        "minutes (got none firing after 12 minutes)"
    )
    fired, out = fires(rules, _latency_series(fast), "1m", alerts, "40m")
    evidence.attach("promtool, p95 0.48 s", out, "text/plain")
    assert not fired, (
        f"latency alerts ({', '.join(alerts)}) must stay quiet at p95 0.48 s (got one firing)"
    )


BACKUP_METRIC = "chatsdk_backup_last_success_timestamp_seconds"


@pytest.mark.checklist("BAK-FRESHNESS-ALERT")
def test_backup_age_alert_fires_after_25_hours(
    monitoring: Monitoring, evidence: EvidenceLog
) -> None:
    """A broken backup job is otherwise discovered at restore time."""
    alerts = _one_of(
        monitoring, monitoring.rules_using(BACKUP_METRIC), f"the backup age ({BACKUP_METRIC})"
    )
    rules = monitoring.artefact("alerts.yml")
    # One backup at t=0, none after.
    series = {f'{BACKUP_METRIC}{{job="node", instance="n1:9100"}}': "0x400"}
    fired, out = fires(rules, series, "5m", alerts, "24h30m")
    evidence.attach("promtool, backup 24.5 h old", out, "text/plain")
    assert not fired, (
        f"backup alerts ({', '.join(alerts)}) must stay quiet while the newest backup is 24.5 "
        "hours old (got one firing)"
    )
    fired, out = fires(rules, series, "5m", alerts, "26h")
    evidence.attach("promtool, backup 26 h old", out, "text/plain")
    assert fired, (
        f"a backup alert ({', '.join(alerts)}) must fire once the newest backup is older than "
        "25 hours (got none firing at 26 hours)"
    )


INCIDENT_DOC = "system/docs/operations/runbooks.md"
# The original launch document's operational targets.
MTTD_TARGET_S = 5 * 60
MTTR_TARGET_S = 60 * 60


@pytest.mark.checklist("OPS-MTTD-MTTR")
def test_detection_and_resolution_targets_are_declared_and_documented(
    monitoring: Monitoring, evidence: EvidenceLog
) -> None:
    """Targets nobody wrote down are neither measured nor kept."""
    declared = {
        "mttd": (duration_s(str(slo(monitoring, "incidents", "mttd"))), MTTD_TARGET_S),
        "mttr": (duration_s(str(slo(monitoring, "incidents", "mttr"))), MTTR_TARGET_S),
    }
    for name, (seconds, most) in declared.items():
        evidence.figure(f"declared {name}", seconds / 60, "min")
        assert seconds <= most, (
            f"slo.yml in {monitoring.dir} must declare incidents.{name} of at most "
            f"{most / 60:g} minutes (got {seconds / 60:g} minutes)"
        )
    doc = (REPO / INCIDENT_DOC).read_text()
    for phrase in ("Mean time to detect (MTTD)", "Mean time to resolve (MTTR)"):
        assert phrase in doc, f"{INCIDENT_DOC} must state the {phrase} target (got no such line)"

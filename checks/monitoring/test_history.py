"""What production did, read from the target's own Prometheus over the declared window
(system/monitoring/slo.yml): the first week's latency and errors (POST-PERF-REVIEW), the
observed mix of operations and each one's errors (POST-REAL-USAGE), the uptime against its
objective with the status page that publishes it (MON-UPTIME-SLO), and how long Prometheus keeps
its samples (MON-PROM-RETENTION). Without the window's history in Prometheus these probes skip:
the pre-launch load figures do not stand in for production."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from checks.monitoring import _status_page as status_page
from checks.monitoring._history import (
    DAY_S,
    by_day,
    day,
    duration_s,
    held_window,
    human,
    slo,
)
from checks.monitoring._monitoring import (
    API_JOB,
    Monitoring,
    last_lines,
    prom,
    promql,
    run,
    tool,
)
from preflight.evidence import EvidenceLog
from preflight.probe import undecided
from preflight.probe.target import ProbeTarget

# The launch targets the first week is held to (PERF-API-P95, PERF-MIXED-ERRORS).
P95_LIMIT_S = 0.5
ERROR_RATIO_LIMIT = 0.01
MIX_FLOOR = 0.01  # operations with less of the traffic than this are not judged alone
REQUESTS = f'http_requests_total{{job="{API_JOB}"}}'
ERRORS = f'http_requests_total{{job="{API_JOB}", status=~"5.."}}'
BUCKETS = f'http_request_duration_seconds_bucket{{job="{API_JOB}", route!="/v1/realtime"}}'
DEFAULT_RETENTION_S = 15 * DAY_S  # Prometheus' own when neither retention flag is set


def _window_s(monitoring: Monitoring, *keys: str) -> float:
    return duration_s(str(slo(monitoring, *keys)))


@pytest.mark.checklist("POST-PERF-REVIEW")
def test_first_week_latency_and_errors_stay_within_targets(
    monitoring: Monitoring, target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Data growth in the first week can move latency past its targets."""
    window = held_window(target, _window_s(monitoring, "post_launch", "window"))
    evidence.note(f"Prometheus at {target.prometheus_url}, {human(window.length_s)} of history")
    p95 = by_day(
        target,
        window,
        f"histogram_quantile(0.95, sum by (le) (increase({BUCKETS}[1d])))",
    )
    ratio = by_day(target, window, f"sum(increase({ERRORS}[1d])) / sum(increase({REQUESTS}[1d]))")
    days_p95 = [point for points in p95.values() for point in points]
    days_errors = [point for points in ratio.values() for point in points]
    if not days_p95 or not days_errors:
        undecided(
            f"Prometheus at {target.prometheus_url} holds no API requests over the window: "
            "nothing to review"
        )
    for stamp, value in days_p95:
        evidence.figure(f"p95 latency, {day(stamp, window)}", round(value * 1000, 1), "ms")
    for stamp, value in days_errors:
        evidence.figure(f"error ratio, {day(stamp, window)}", round(value * 100, 3), "%")
    slow = [f"{day(t, window)} {v * 1000:.0f} ms" for t, v in days_p95 if v >= P95_LIMIT_S]
    failing = [f"{day(t, window)} {v:.2%}" for t, v in days_errors if v >= ERROR_RATIO_LIMIT]
    breaches = [f"p95 {', '.join(slow)}"] if slow else []
    breaches += [f"errors {', '.join(failing)}"] if failing else []
    assert not breaches, (
        f"every day of the last {human(window.length_s)} must keep the API's p95 latency below "
        f"{P95_LIMIT_S * 1000:.0f} ms and its 5xx ratio below {ERROR_RATIO_LIMIT:.0%} (got "
        f"{'; '.join(breaches)})"
    )


def _operation(labels: tuple[tuple[str, str], ...]) -> str:
    named = dict(labels)
    return f"{named.get('method', '?')} {named.get('route', '?')}"


@pytest.mark.checklist("POST-REAL-USAGE")
def test_every_operation_of_the_observed_mix_stays_below_one_percent_errors(
    monitoring: Monitoring, target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """An operation failing under real usage hides behind a healthy total error ratio."""
    window = held_window(target, _window_s(monitoring, "post_launch", "window"))
    length = f"{window.length_s:.0f}s"
    share = promql(
        target,
        f"sum by (method, route) (increase({REQUESTS}[{length}])) "
        f"/ on () group_left sum(increase({REQUESTS}[{length}]))",
    )
    mix = {
        f"{s['metric'].get('method', '?')} {s['metric'].get('route', '?')}": float(s["value"][1])
        for s in share
    }
    if not mix:
        undecided(
            f"Prometheus at {target.prometheus_url} holds no API requests over the window: no "
            "observed mix"
        )
    for operation, part in sorted(mix.items(), key=lambda kv: -kv[1]):
        evidence.figure(f"observed share, {operation}", round(part * 100, 2), "%")
    ratio = by_day(
        target,
        window,
        f"sum by (method, route) (increase({ERRORS}[1d])) "
        f"/ sum by (method, route) (increase({REQUESTS}[1d]))",
    )
    breaches = []
    for labels, points in ratio.items():
        operation = _operation(labels)
        if mix.get(operation, 0.0) < MIX_FLOOR or not points:
            continue
        worst_at, worst = max(points, key=lambda p: p[1])
        evidence.figure(f"worst daily error ratio, {operation}", round(worst * 100, 3), "%")
        if worst >= ERROR_RATIO_LIMIT:
            breaches.append(f"{operation} {worst:.2%} on {day(worst_at, window)}")
    assert not breaches, (
        f"every operation with at least {MIX_FLOOR:.0%} of the observed traffic of the last "
        f"{human(window.length_s)} must answer below {ERROR_RATIO_LIMIT:.0%} 5xx on every day "
        f"(got {'; '.join(sorted(breaches))})"
    )


def _recorded(monitoring: Monitoring, record: str) -> list[str]:
    """The expressions of alerts.yml's recording rules named `record`."""
    rules = monitoring.load_yaml("alerts.yml") or {}
    return [
        str(rule.get("expr", ""))
        for group in rules.get("groups") or []
        for rule in group.get("rules") or []
        if isinstance(rule, dict) and rule.get("record") == record
    ]


@pytest.mark.checklist("MON-UPTIME-SLO")
def test_the_availability_record_is_defined_and_unit_tested(
    monitoring: Monitoring, evidence: EvidenceLog
) -> None:
    """An uptime objective nobody measures is a wish."""
    objective = float(slo(monitoring, "availability", "objective"))
    record = str(slo(monitoring, "availability", "record"))
    evidence.note(f"objective {objective:.3%} over {slo(monitoring, 'availability', 'window')}")
    assert objective >= 0.999, (
        f"slo.yml must declare an availability objective of at least 99.9 % (got {objective:.3%})"
    )
    exprs = _recorded(monitoring, record)
    assert exprs, (
        f"alerts.yml in {monitoring.dir} must hold the recording rule {record} that slo.yml "
        "names for availability (got none)"
    )
    evidence.note(f"{record} = {exprs[0].strip()}")
    tests = monitoring.artefact("alerts.test.yml")
    assert record in tests.read_text(), f"{tests} must test the recording rule {record} (got none)"
    code, out = run([tool("promtool"), "test", "rules", tests.name], cwd=tests.parent)
    evidence.attach("promtool test rules", out, "text/plain")
    assert code == 0, (
        f"promtool test rules {tests} must pass (got exit {code}: {last_lines(out, 8)})"
    )


@pytest.mark.checklist("MON-UPTIME-SLO")
def test_uptime_over_the_window_meets_the_objective(
    monitoring: Monitoring, target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Users judge the service by the time it answers."""
    objective = float(slo(monitoring, "availability", "objective"))
    window = held_window(target, _window_s(monitoring, "availability", "window"))
    record = str(slo(monitoring, "availability", "record"))
    exprs = _recorded(monitoring, record)
    assert exprs, f"alerts.yml must hold the recording rule {record} (got none)"
    expr = exprs[0]
    # The record's own expression over the raw history, so it counts from the window's start
    # even where the record itself was evaluated for less of it.
    result = promql(target, f"avg_over_time(({expr})[{window.length_s:.0f}s:1m])")
    assert result, f"Prometheus must answer the uptime of {record} (got no sample)"
    uptime = float(result[0]["value"][1])
    evidence.figure("uptime", round(uptime * 100, 4), "%")
    evidence.figure("downtime", round((1 - uptime) * window.length_s / 60, 1), "min")
    assert uptime >= objective, (
        f"the API must be up {objective:.1%} of the last {human(window.length_s)} ({record}) "
        f"(got {uptime:.3%}: {(1 - uptime) * window.length_s / 60:.0f} minutes down)"
    )


@pytest.mark.checklist("MON-UPTIME-SLO")
def test_a_status_page_publishes_the_uptime(
    monitoring: Monitoring, target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Users who cannot tell an outage from their own network flood support instead."""
    page = slo(monitoring, "availability", "status_page")
    assert page, (
        f"slo.yml in {monitoring.dir} must declare the status page that publishes the uptime "
        "(availability.status_page) (got none)"
    )
    url = status_page.page_url(str(page), target.edge_url)
    evidence.note(f"status page: {url}")
    if not status_page.on_loopback(url):
        pytest.skip(f"the status page {url} is outside what this machine may reach: not fetched")
    context = target.ssl_context() if urlsplit(url).scheme == "https" else None
    published = status_page.read(url, context)
    states = ", ".join(f"{name} {state}" for name, state in published.components.items())
    evidence.note(f"{published.source} (checked {published.checked_at or '?'}): {states}")
    seen = status_page.observed(target)
    if not seen:
        evidence.note("the target gives no stores: the published states are not compared")
    wrong = status_page.misreported(published, seen)
    assert not wrong, (
        f"the status page {url} must show each component as it is (got {'; '.join(wrong)} "
        f"from {published.source})"
    )


@pytest.mark.checklist("MON-PROM-RETENTION")
def test_prometheus_keeps_samples_as_long_as_required(
    monitoring: Monitoring, target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Samples Prometheus deleted cannot explain last month's incident or show a trend."""
    required = str(slo(monitoring, "prometheus", "retention"))
    flags = prom(target, "/api/v1/status/flags")
    value = str(flags.get("storage.tsdb.retention.time") or "0s")
    size = str(flags.get("storage.tsdb.retention.size") or "0B")
    evidence.note(f"--storage.tsdb.retention.time={value} --storage.tsdb.retention.size={size}")
    kept = duration_s(value) or duration_s(str(flags.get("storage.tsdb.retention") or "0s"))
    kept = kept or DEFAULT_RETENTION_S
    evidence.figure("retention", round(kept / DAY_S, 2), "days")
    assert kept >= duration_s(required), (
        f"Prometheus at {target.prometheus_url} must keep its samples for at least {required} "
        f"(slo.yml prometheus.retention) (got --storage.tsdb.retention.time={value}: "
        f"{human(kept)})"
    )
    assert size in ("0B", "0", ""), (
        f"Prometheus at {target.prometheus_url} must not cut its samples by size before "
        f"{required} (got --storage.tsdb.retention.size={size})"
    )

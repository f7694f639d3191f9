"""The live Prometheus and Alertmanager watching the target (prometheus_url, alertmanager_url):
every worker scraped and up, alerts delivered to Alertmanager, none firing after the deploy, and
the overview and API dashboards' queries answered with data after a little traffic."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from checks._chat import Tenant, send
from checks.monitoring._monitoring import (
    API_JOB,
    get_json,
    metrics_urls,
    monitoring_dir,
    prom,
    prometheus_url,
    promql,
    queries,
    until,
    without_grafana_variables,
)
from preflight.evidence import EvidenceLog
from preflight.probe_target import ProbeTarget
from preflight.targets.observability import WATCHDOG_LABEL

NEVER = "0001-01-01T00:00:00Z"


def active_targets(target: ProbeTarget) -> list[dict[str, Any]]:
    """Prometheus' active scrape targets, once each has been scraped at least once."""
    found: list[dict[str, Any]] = []

    def scraped() -> bool:
        found[:] = prom(target, "/api/v1/targets", state="active")["activeTargets"]
        return bool(found) and all(t["health"] != "unknown" for t in found)

    until(scraped)
    return found


def address(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc, parts.path or "/"


@pytest.mark.checklist("MON-PROM-SCRAPES")
def test_prometheus_scrapes_every_worker_and_every_target_is_up(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Metrics that are not collected cannot alert anyone."""
    workers = metrics_urls(target)
    targets = active_targets(target)
    for t in targets:
        evidence.note(f"{t['labels'].get('job')} {t['scrapeUrl']}: {t['health']} {t['lastError']}")
    api = {address(t["scrapeUrl"]): t for t in targets if t["labels"].get("job") == API_JOB}
    missing = [url for url in workers if address(url) not in api]
    assert not missing, (
        f"Prometheus at {prometheus_url(target)} must scrape every API worker under job "
        f"{API_JOB} (got no target for {', '.join(missing)}; scraped: "
        f"{', '.join(t['scrapeUrl'] for t in api.values()) or 'none'})"
    )
    down = [t for t in targets if t["health"] != "up"]
    assert not down, (
        "every scrape target of Prometheus must be up (got "
        + "; ".join(
            f"{t['labels'].get('job')} {t['scrapeUrl']} {t['health']}: {t['lastError']}"
            for t in down
        )
        + ")"
    )
    evidence.figure("targets up", len(targets))


def firing(target: ProbeTarget) -> list[dict[str, Any]]:
    alerts = prom(target, "/api/v1/alerts")["alerts"]
    return [a for a in alerts if a["state"] == "firing"]


@pytest.mark.checklist("MON-ALERTMANAGER")
def test_alertmanager_runs_and_receives_the_alerts_prometheus_fires(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Alert rules that never reach a receiver page nobody."""
    managers = prom(target, "/api/v1/alertmanagers")["activeAlertmanagers"]
    urls = [m["url"] for m in managers]
    evidence.note(f"Alertmanagers Prometheus sends to: {urls or 'none'}")
    assert urls, (
        f"Prometheus at {prometheus_url(target)} must send alerts to an Alertmanager "
        "(got no active Alertmanager: its alerting section names none)"
    )
    am = target.info.alertmanager_url
    if am is not None:
        assert any(u.startswith(am) for u in urls), (
            f"Prometheus must send alerts to the target's Alertmanager {am} (got {urls})"
        )
        status = get_json(f"{am}/api/v2/status")
        evidence.note(f"Alertmanager {am} cluster status {status.get('cluster', {}).get('status')}")
    # Delivery: each alert Prometheus has firing must arrive in Alertmanager.
    received: set[str] = set()
    wanted: set[str] = set()

    def delivered() -> bool:
        wanted.clear()
        wanted.update(a["labels"]["alertname"] for a in firing(target))
        if am is not None:
            alerts = get_json(f"{am}/api/v2/alerts")
            received.clear()
            received.update(a["labels"].get("alertname", "") for a in alerts)
        return bool(wanted) and wanted <= received

    if not until(delivered) and not wanted:
        evidence.note("no alert is firing: delivery decided from the Alertmanager list alone")
        return
    if am is None:
        evidence.note("the target gives no alertmanager_url: delivery not followed")
        return
    sent = promql(target, "sum(prometheus_notifications_sent_total)")
    evidence.figure("notifications sent", float(sent[0]["value"][1]) if sent else 0.0)
    assert wanted <= received, (
        f"Alertmanager {am} must receive every alert Prometheus fires (got "
        f"{sorted(received) or 'none'}, missing {sorted(wanted - received)})"
    )


def instant(stamp: str) -> datetime:
    """An RFC 3339 time of Prometheus' API (nanoseconds cut to what Python parses)."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp.replace("Z", "+00:00")))


def evaluated(target: ProbeTarget, since: datetime) -> bool:
    groups = prom(target, "/api/v1/rules", type="alert")["groups"]
    return bool(groups) and all(
        instant(r.get("lastEvaluation", NEVER)) > since for g in groups for r in g["rules"]
    )


@pytest.mark.checklist("MON-NO-FIRING-ALERTS")
def test_no_alert_is_firing_or_pending(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Deploying on top of a firing alert hides whether the deploy made things worse."""
    # Every rule evaluated once after every target was scraped: the alerts see the system.
    scraped = max((instant(t["lastScrape"]) for t in active_targets(target)), default=None)
    assert scraped is not None, (
        f"Prometheus at {prometheus_url(target)} must scrape the system (got no targets)"
    )
    assert until(lambda: evaluated(target, scraped)), (
        f"every alert rule of Prometheus at {prometheus_url(target)} must be evaluated within "
        f"15 s after the scrape of {scraped.isoformat()} (got rules not evaluated since)"
    )
    key, value = WATCHDOG_LABEL
    alerts = [
        a
        for a in prom(target, "/api/v1/alerts")["alerts"]
        if a["labels"].get(key) != value  # the target's own delivery check, always firing
    ]
    for a in alerts:
        evidence.note(f"{a['labels']['alertname']} ({a['labels'].get('severity')}): {a['state']}")
    evidence.figure("alerts firing or pending", len(alerts))
    # Pending counts: its condition holds now, and it fires once its `for` has passed.
    assert not alerts, (
        "no alert may be firing or pending after the deploy (got "
        + "; ".join(
            f"{a['labels']['alertname']} {a['labels'].get('severity', '')} {a['state']}"
            f" since {a.get('activeAt', '?')}"
            for a in alerts
        )
        + ")"
    )


def traffic(target: ProbeTarget) -> None:
    """What the panels show: requests through the edge, a refused one, a message sent."""
    world = Tenant.create(target)
    alice, bob = world.user("dash"), world.user("dash")
    channel = world.channel(alice, bob)
    send(alice, channel, f"dashboard traffic {secrets.token_hex(4)}")
    target.http.get("/v1/channels")  # 401: the error side of the request counter
    for _ in range(5):
        target.http.get("/v1/health/live")


def no_data(target: ProbeTarget, dashboard: str) -> list[tuple[str, str]]:
    """The panels of `dashboard` whose queries return no sample from the live Prometheus,
    waiting (bounded) for fresh scrapes to fill the rates."""
    path = monitoring_dir() / "grafana" / "dashboards" / f"{dashboard}.json"
    panels = queries(path)
    empty: list[tuple[str, str]] = []

    def answered() -> bool:
        empty[:] = [(t, e) for t, e in panels if not promql(target, without_grafana_variables(e))]
        return not empty

    until(answered)
    return empty


@pytest.mark.parametrize(
    "dashboard",
    [
        pytest.param("overview", marks=pytest.mark.checklist("MON-DASH-OVERVIEW")),
        pytest.param("api", marks=pytest.mark.checklist("MON-DASH-API")),
    ],
)
def test_every_panel_query_returns_data(
    target: ProbeTarget, evidence: EvidenceLog, dashboard: str
) -> None:
    """A dashboard whose panels show no data helps nobody during an incident."""
    prometheus_url(target)
    traffic(target)
    empty = no_data(target, dashboard)
    evidence.figure("panels without data", len(empty))
    assert not empty, (
        f"every panel query of the {dashboard} dashboard must return data from Prometheus "
        "after traffic (got none for "
        + "; ".join(f"{title!r}: {expr}" for title, expr in empty)
        + ")"
    )

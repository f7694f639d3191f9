"""The live Prometheus and Alertmanager watching the target (prometheus_url, alertmanager_url):
every worker scraped and up, host metrics for every host of a worker, alerts delivered to
Alertmanager, none firing after the deploy, and every dashboard's queries answered with data
after a little traffic. Per-container metrics are looked for where the target runs containers."""

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
    SCRAPE_POLL_S,
    WATCH_TIMEOUT_S,
    Monitoring,
    get_json,
    prom,
    promql,
    queries,
    without_grafana_variables,
)
from preflight.evidence import EvidenceLog
from preflight.polling import until
from preflight.probe.target import ProbeTarget
from preflight.targets.base import WATCHDOG_LABEL

NEVER = "0001-01-01T00:00:00Z"


def active_targets(target: ProbeTarget) -> list[dict[str, Any]]:
    """Prometheus' active scrape targets, once each has been scraped at least once."""
    found: list[dict[str, Any]] = []

    def scraped() -> bool:
        found[:] = prom(target, "/api/v1/targets", state="active")["activeTargets"]
        return bool(found) and all(t["health"] != "unknown" for t in found)

    until(scraped, WATCH_TIMEOUT_S, interval=SCRAPE_POLL_S)
    return found


def address(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc, parts.path or "/"


def seen_by_prometheus(target: ProbeTarget, url: str) -> set[tuple[str, str]]:
    """A URL's address and path, and the same path at the address Prometheus reaches it at
    where the target names one (its network differs from this machine's: containers)."""
    netloc, path = address(url)
    other = target.info.observability.network_addresses.get(url)
    return {(netloc, path), *([(other, path)] if other else [])}


@pytest.mark.checklist("MON-PROM-SCRAPES")
def test_prometheus_scrapes_every_worker_and_every_target_is_up(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Metrics that are not collected cannot alert anyone."""
    workers = target.metrics.urls
    targets = active_targets(target)
    for t in targets:
        evidence.note(f"{t['labels'].get('job')} {t['scrapeUrl']}: {t['health']} {t['lastError']}")
    api = {address(t["scrapeUrl"]): t for t in targets if t["labels"].get("job") == API_JOB}
    missing = [url for url in workers if not seen_by_prometheus(target, url) & set(api)]
    assert not missing, (
        f"Prometheus at {target.prometheus_url} must scrape every API worker under job "
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
        f"Prometheus at {target.prometheus_url} must send alerts to an Alertmanager "
        "(got no active Alertmanager: its alerting section names none)"
    )
    am = target.info.observability.alertmanager_url
    if am is not None:
        inside = target.info.observability.network_addresses.get("alertmanager")
        assert any(u.startswith(am) or urlsplit(u).netloc == inside for u in urls), (
            f"Prometheus must send alerts to the target's Alertmanager {am}"
            + (f" (at {inside} on its network)" if inside else "")
            + f" (got {urls})"
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

    if not until(delivered, WATCH_TIMEOUT_S, interval=SCRAPE_POLL_S) and not wanted:
        pytest.skip(
            f"no alert fired within {WATCH_TIMEOUT_S:g} s: delivery to Alertmanager not seen"
        )
    if am is None:
        pytest.skip("the target gives no alertmanager_url: delivery of firing alerts not followed")
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
        f"Prometheus at {target.prometheus_url} must scrape the system (got no targets)"
    )
    assert until(lambda: evaluated(target, scraped), WATCH_TIMEOUT_S, interval=SCRAPE_POLL_S), (
        f"every alert rule of Prometheus at {target.prometheus_url} must be evaluated within "
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
    for _ in range(2):  # the second send finds the membership in the cache (a hit)
        send(alice, channel, f"dashboard traffic {secrets.token_hex(4)}")
    target.http.get("/v1/channels")  # 401: the error side of the request counter
    for _ in range(5):
        target.http.get("/v1/health/live")


def dashboard_queries(monitoring: Monitoring, dashboard: str) -> list[tuple[str, str]]:
    return queries(monitoring.dir / "grafana" / "dashboards" / f"{dashboard}.json")


def no_data(target: ProbeTarget, panels: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The panels whose queries return no sample from the live Prometheus, waiting (bounded)
    for fresh scrapes to fill the rates."""
    empty: list[tuple[str, str]] = []

    def answered() -> bool:
        empty[:] = [(t, e) for t, e in panels if not promql(target, without_grafana_variables(e))]
        return not empty

    until(answered, WATCH_TIMEOUT_S, interval=SCRAPE_POLL_S)
    return empty


@pytest.mark.parametrize(
    "dashboard",
    [
        pytest.param("overview", marks=pytest.mark.checklist("MON-DASH-OVERVIEW")),
        pytest.param("api", marks=pytest.mark.checklist("MON-DASH-API")),
        pytest.param("database", marks=pytest.mark.checklist("MON-DASH-DB")),
        pytest.param("system", marks=pytest.mark.checklist("MON-DASH-SYSTEM")),
    ],
)
def test_every_panel_query_returns_data(
    monitoring: Monitoring, target: ProbeTarget, evidence: EvidenceLog, dashboard: str
) -> None:
    """A dashboard whose panels show no data helps nobody during an incident."""
    evidence.note(f"Prometheus at {target.prometheus_url}")
    panels, containers = split_container_panels(
        monitoring, dashboard_queries(monitoring, dashboard)
    )
    for title, expr in containers:
        evidence.note(f"decided under MON-CONTAINER-METRICS: {title!r}: {expr}")
    traffic(target)
    empty = no_data(target, panels)
    evidence.figure("panels with data", len(panels) - len(empty))
    evidence.figure("panels without data", len(empty))
    assert not empty, (
        f"every panel query of the {dashboard} dashboard must return data from Prometheus "
        "after traffic (got none for "
        + "; ".join(f"{title!r}: {expr}" for title, expr in empty)
        + ")"
    )


# -- host and container metrics --------------------------------------------------------------

NODE_JOB = "node"
CONTAINER_JOB = "cadvisor"
# What the item names: CPU, memory, disk and network of every host.
HOST_SERIES = {
    "CPU": "node_cpu_seconds_total",
    "memory": "node_memory_MemAvailable_bytes",
    "disk": "node_filesystem_avail_bytes",
    "network": "node_network_receive_bytes_total",
}
CONTAINER_SERIES = {
    "CPU": "container_cpu_usage_seconds_total",
    "memory": "container_memory_working_set_bytes",
}


def split_container_panels(
    monitoring: Monitoring,
    panels: list[tuple[str, str]],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(other panels, panels fed by per-container metrics): the latter need a container
    runtime and are decided under MON-CONTAINER-METRICS."""
    container_metrics = {
        name for name, job in monitoring.declared_exporter_metrics().items() if job == CONTAINER_JOB
    }
    fed = [(t, e) for t, e in panels if any(m in e for m in container_metrics)]
    return [p for p in panels if p not in fed], fed


def host(address: str) -> str:
    return (urlsplit(address if "//" in address else f"//{address}").hostname or "").lower()


@pytest.mark.checklist("MON-NODE-METRICS")
def test_every_host_of_a_worker_has_cpu_memory_disk_and_network_metrics(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Resource exhaustion on a host goes unseen until it causes an outage."""
    workers = target.metrics.urls
    nodes = [t for t in active_targets(target) if t["labels"].get("job") == NODE_JOB]
    evidence.note(
        "node targets: "
        + (", ".join(f"{t['labels'].get('instance')} {t['health']}" for t in nodes) or "none")
    )
    hosts = {host(t["labels"].get("instance", "")) for t in nodes if t["health"] == "up"}
    # Where one node exporter watches the one host every component runs on (containers), the
    # target names it: that is every worker's host.
    node = target.info.observability.network_addresses.get(NODE_JOB)
    unwatched = sorted({host(node or url) for url in workers} - hosts)
    assert not unwatched, (
        f"every host that runs an API worker must be scraped by Prometheus under job "
        f"{NODE_JOB} and be up (got no healthy node target for {', '.join(unwatched)}; "
        f"node targets: {[t['labels'].get('instance') for t in nodes] or 'none'})"
    )
    missing: dict[str, list[str]] = {}
    for what, series in HOST_SERIES.items():
        found = {host(s["metric"].get("instance", "")) for s in promql(target, series)}
        for h in sorted(hosts - found):
            missing.setdefault(h, []).append(f"{what} ({series})")
    evidence.figure("hosts with host metrics", len(hosts) - len(missing))
    assert not missing, (
        "Prometheus must hold CPU, memory, disk and network series for every node (got none of "
        + "; ".join(f"{h}: {', '.join(w)}" for h, w in missing.items())
        + ")"
    )


@pytest.mark.checklist("MON-CONTAINER-METRICS")
def test_every_container_has_cpu_and_memory_metrics(
    monitoring: Monitoring, target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A single container's leak is invisible in host totals."""
    prometheus = target.prometheus_url
    target.runs("containers")
    jobs = {t["labels"].get("job") for t in active_targets(target)}
    evidence.note(f"scrape jobs: {sorted(j for j in jobs if j)}")
    empty = [
        f"{what} ({series})"
        for what, series in CONTAINER_SERIES.items()
        if not promql(target, f'{series}{{name!=""}}')
    ]
    assert not empty, (
        f"Prometheus at {prometheus} must hold per-container series (got none for "
        f"{', '.join(empty)}; is cAdvisor or the kubelet scraped, as job {CONTAINER_JOB!r}?)"
    )
    _, panels = split_container_panels(monitoring, dashboard_queries(monitoring, "system"))
    blank = no_data(target, panels)
    evidence.figure("container panels with data", len(panels) - len(blank))
    assert not blank, (
        "every per-container panel of the system dashboard must return data (got none for "
        + "; ".join(f"{title!r}: {expr}" for title, expr in blank)
        + ")"
    )

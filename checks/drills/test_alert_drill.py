"""The alert drill (POST-ALERT-DRILL): the target's own Prometheus and Alertmanager, running
system/monitoring's rules and routes, watch an error burst (PostgreSQL stopped while users keep
asking, so the API answers 503) and an API worker going down; HighErrorRate and APIServiceDown
must reach the receivers the shipped alertmanager.yml routes a critical alert to (asked of
`amtool config routes test`: the pager and the team's chat).

A webhook of the drill stands in for pager and chat: Alertmanager delivers every receiver there
(`/<receiver>`), with its routes and inhibition as written. It listens where the target says
Alertmanager reaches this machine (AlertRouting.listen_host: loopback natively, the gateway of
Alertmanager's network for containers). So that the drill takes seconds, not
the minutes of production `for` durations, the rules' `for`, their longer range windows and the
routes' waits are shortened (TargetInfo.alert_routing; the evidence says exactly what changed).
The drill restores PostgreSQL, the worker and the real configuration, also when it fails.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from checks._chat import Actor, Tenant
from checks.drills._drills import api_workers, wait_edge_ready, wait_worker_ready
from checks.monitoring._history import duration_s
from checks.monitoring._monitoring import (
    API_JOB,
    REPO,
    describe_routes,
    promql,
    severity_routes,
)
from preflight.evidence import EvidenceLog
from preflight.polling import until
from preflight.probe.target import ProbeTarget
from preflight.targets.alerting import DRILL_HOLD, DRILL_ROUTE_TIMING, SCRAPE_INTERVAL

# The drill's time budget per phase, with room for a busy machine: a fault held until Prometheus
# fires and Alertmanager delivers.
pytestmark = pytest.mark.budget(600)

# The shipped routes the drill's alerts take (the drill's sink stands in for their receivers).
ALERTMANAGER_CONFIG = REPO / "system" / "monitoring" / "alertmanager.yml"
SLO = REPO / "system" / "monitoring" / "slo.yml"  # incidents.mttd: the detection target
FIRE_TIMEOUT_S = 60.0  # fault to the first delivery, with the drill's shortened timings
GRACE_S = 2.0  # after the first receiver got the alert, how long the others get
BURST_INTERVAL_S = 0.05


class Webhook:
    """Alertmanager's webhook receiver: keeps every notification with its time of arrival."""

    def __init__(self, host: str) -> None:
        self.deliveries: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    payload = json.loads(self.rfile.read(length))
                except ValueError:
                    payload = {}
                with webhook._lock:
                    webhook.deliveries.append((time.monotonic(), self.path.strip("/"), payload))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reached(
        self, alert: str, since: float, severity: str = "critical", instance: str | None = None
    ) -> dict[str, float]:
        """Receiver -> seconds from `since` to the first firing notification of `alert`."""
        found: dict[str, float] = {}
        with self._lock:
            deliveries = list(self.deliveries)
        for at, receiver, payload in deliveries:
            for a in payload.get("alerts", []):
                labels = a.get("labels", {})
                if (
                    at >= since
                    and a.get("status") == "firing"
                    and labels.get("alertname") == alert
                    and labels.get("severity") == severity
                    and (instance is None or labels.get("instance") == instance)
                ):
                    found.setdefault(receiver, round(at - since, 3))
        return found

    def summary(self) -> list[dict[str, Any]]:
        with self._lock:
            deliveries = list(self.deliveries)
        t0 = deliveries[0][0] if deliveries else 0.0
        return [
            {
                "at_s": round(at - t0, 3),
                "receiver": receiver,
                "alerts": [
                    {k: a.get("labels", {}).get(k) for k in ("alertname", "severity", "instance")}
                    for a in payload.get("alerts", [])
                ],
            }
            for at, receiver, payload in deliveries
        ]


@dataclass
class Phase:
    alert: str
    instance: str | None
    reached: dict[str, float] = field(default_factory=dict)
    firing_in_prometheus: bool = False
    note: str = ""


@dataclass
class AlertDrill:
    routing: str
    real_route: str  # what the shipped alertmanager.yml does with a critical alert
    sink: str  # the drill's webhook, which every receiver delivered to instead
    expected: frozenset[str]  # the receivers the shipped routes choose for a critical alert
    burst: Phase
    down: Phase
    deliveries: list[dict[str, Any]]
    duration_s: float  # the whole drill (a fixture's time is not the test's)


@pytest.fixture(scope="module")
def alert_drill(target: ProbeTarget) -> Iterator[AlertDrill]:
    info = target.info
    if not info.observability.prometheus_url or not info.observability.alertmanager_url:
        pytest.skip(
            f"target {target.name} names no Prometheus and Alertmanager (prometheus_url, "
            "alertmanager_url): the alert drill needs the monitoring that watches the system"
        )
    if info.drills.alert_routing is None:
        pytest.skip(
            f"target {target.name} gives no way to route its alerts to the drill's receiver "
            "(TargetInfo.alert_routing); run the drill against a staging Alertmanager whose "
            "receivers you can point at a test webhook"
        )
    routing = info.drills.alert_routing
    chosen = severity_routes(ALERTMANAGER_CONFIG, ["critical"])
    expected = frozenset(chosen["critical"])
    real_route = describe_routes(ALERTMANAGER_CONFIG, chosen)[0]
    worker = api_workers(target)[0]
    instance = _instance(target, worker)
    postgres = target.control("postgres")
    tenant = Tenant.create(target, "drill-alerts")
    user = tenant.user("asker")
    drill_started = time.monotonic()
    with Webhook(routing.listen_host) as webhook:
        changed = routing.divert(webhook.url)
        try:
            burst = Phase("HighErrorRate", None)
            started = time.monotonic()
            postgres.stop()
            try:
                with _Burst(user):
                    _await(webhook, burst, started, target, expected)
            finally:
                postgres.start()
                wait_edge_ready(target)
            down = Phase("APIServiceDown", instance)
            control = target.control(worker)
            started = time.monotonic()
            control.stop()
            try:
                _await(webhook, down, started, target, expected)
            finally:
                control.start()
                wait_worker_ready(target, worker)
        finally:
            routing.restore()
        duration = round(time.monotonic() - drill_started, 3)
        yield AlertDrill(
            changed, real_route, webhook.url, expected, burst, down, webhook.summary(), duration
        )


def _instance(target: ProbeTarget, worker: str) -> str | None:
    """The `instance` label Prometheus gives the worker: the address it scrapes, which is the
    worker's own where the target names no other (network_addresses: containers)."""
    address = target.worker_url(worker)
    if address is None:
        return None
    inside = target.info.observability.network_addresses.get(f"{address}/metrics")
    return inside or urlsplit(address).netloc


class _Burst:
    """A user keeps asking for their channels through the edge until the block ends."""

    def __init__(self, user: Actor) -> None:
        self.user = user
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="error burst", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.statuses.append(self.user.client.get("/v1/channels").status)
            except OSError:
                self.user.client.close()
            self._stop.wait(BURST_INTERVAL_S)

    def __enter__(self) -> _Burst:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _await(
    webhook: Webhook, phase: Phase, since: float, target: ProbeTarget, expected: frozenset[str]
) -> None:
    """Until the alert reached a receiver (and the others had GRACE_S more), or the timeout."""
    first: float | None = None

    def settled() -> bool:
        nonlocal first
        phase.reached = webhook.reached(phase.alert, since, instance=phase.instance)
        if phase.reached and first is None:
            first = time.monotonic()
        return first is not None and (
            time.monotonic() - first >= GRACE_S or set(phase.reached) >= expected
        )

    until(settled, since + FIRE_TIMEOUT_S - time.monotonic(), interval=0.2)
    phase.firing_in_prometheus = _firing(target, phase)


def _firing(target: ProbeTarget, phase: Phase) -> bool:
    """Whether Prometheus has the alert firing (to tell a rule that never fired from a route
    that did not deliver)."""
    query = f'ALERTS{{alertname="{phase.alert}",alertstate="firing",severity="critical"}}'
    try:
        result = promql(target, query)
    except (OSError, RuntimeError, ValueError, KeyError):
        return False
    return bool(result)


def _check(drill: AlertDrill, phase: Phase, evidence: EvidenceLog) -> None:
    __tracebackhide__ = True
    evidence.note(drill.routing)
    evidence.note(
        f"real route (amtool config routes test on the shipped {ALERTMANAGER_CONFIG.name}): "
        f"{drill.real_route}; the drill's sink instead: every receiver delivered to the webhook "
        f"{drill.sink}/<receiver>"
    )
    for receiver, seconds in sorted(phase.reached.items()):
        evidence.figure(f"{phase.alert} reached {receiver} after", seconds, "s")
    where = f" for {phase.instance}" if phase.instance else ""
    expected = drill.expected
    if not phase.reached:
        fired = "firing in Prometheus" if phase.firing_in_prometheus else "never firing"
        raise AssertionError(
            f"{phase.alert} (critical){where} must reach {', '.join(sorted(expected))} within "
            f"{FIRE_TIMEOUT_S:g} s (no receiver got it; the alert was {fired})"
        )
    assert set(phase.reached) == expected, (
        f"{phase.alert} (critical){where} must reach exactly {', '.join(sorted(expected))} "
        f"(got {', '.join(sorted(phase.reached))})"
    )


@pytest.mark.checklist("POST-ALERT-DRILL")
def test_an_error_burst_pages_through_high_error_rate(
    alert_drill: AlertDrill, evidence: EvidenceLog
) -> None:
    """Alerting that was never exercised is assumed, not known, to work."""
    evidence.figure("drill duration", alert_drill.duration_s, "s")
    evidence.note(
        "error burst: PostgreSQL stopped while a user kept listing channels through the edge "
        "(the API answers 503); restored after the alert arrived"
    )
    evidence.attach(
        "webhook deliveries", json.dumps(alert_drill.deliveries, indent=1), "application/json"
    )
    _check(alert_drill, alert_drill.burst, evidence)


@pytest.mark.checklist("POST-ALERT-DRILL")
def test_a_stopped_worker_pages_through_api_service_down(
    alert_drill: AlertDrill, evidence: EvidenceLog
) -> None:
    """Alerting that was never exercised is assumed, not known, to work."""
    evidence.note(
        f"worker down: {alert_drill.down.instance or 'an API worker'} stopped (SIGTERM) until "
        "the alert arrived, then started again"
    )
    _check(alert_drill, alert_drill.down, evidence)


def _production_extra_s(alert: str) -> tuple[float, str]:
    """Seconds the shipped configuration waits, beyond the drill's shortened one, between a
    fault and the page for `alert` (critical): its rule's `for` and group evaluation interval,
    the API's scrape interval and discovery refresh, and Alertmanager's group_wait; and how
    that sum was made. The
    shortened range windows are not added: a fault that fails most requests crosses a ratio
    threshold within the first evaluations of any window."""
    monitoring = REPO / "system" / "monitoring"
    rules = yaml.safe_load((monitoring / "alerts.yml").read_text()) or {}
    group, rule = next(
        (g, r)
        for g in rules.get("groups") or []
        for r in g.get("rules") or []
        if r.get("alert") == alert and (r.get("labels") or {}).get("severity") == "critical"
    )
    prometheus = yaml.safe_load((monitoring / "prometheus.yml").read_text()) or {}
    glob = prometheus.get("global") or {}
    job = next(j for j in prometheus.get("scrape_configs") or [] if j.get("job_name") == API_JOB)
    route = (yaml.safe_load(ALERTMANAGER_CONFIG.read_text()) or {}).get("route") or {}
    waits = [route.get("group_wait", "30s")] + [
        r["group_wait"] for r in route.get("routes") or [] if "group_wait" in r
    ]
    shipped = {
        "for": rule.get("for", "0s"),
        "evaluation interval": group.get("interval") or glob.get("evaluation_interval", "1m"),
        "scrape interval": job.get("scrape_interval") or glob.get("scrape_interval", "1m"),
        "group_wait": max(waits, key=duration_s),
        # A stopped worker leaves DNS discovery at its next refresh (Prometheus' default 30 s).
        "discovery refresh": max(
            (str(d.get("refresh_interval", "30s")) for d in job.get("dns_sd_configs") or []),
            key=duration_s,
            default="0s",
        ),
    }
    drill = {
        "discovery refresh": SCRAPE_INTERVAL,
        "for": DRILL_HOLD,
        "evaluation interval": SCRAPE_INTERVAL,
        "scrape interval": SCRAPE_INTERVAL,
        "group_wait": DRILL_ROUTE_TIMING["group_wait"],
    }
    extra = sum(max(0.0, duration_s(shipped[k]) - duration_s(drill[k])) for k in shipped)
    how = ", ".join(f"{k} {shipped[k]} (drill {drill[k]})" for k in shipped)
    return extra, how


@pytest.mark.checklist("OPS-MTTD-MTTR")
def test_the_drills_pages_come_within_the_detection_target_at_production_timings(
    alert_drill: AlertDrill, evidence: EvidenceLog
) -> None:
    """A page that comes after the detection target leaves users to report the outage."""
    target_s = duration_s(str(yaml.safe_load(SLO.read_text())["incidents"]["mttd"]))
    late = []
    for phase in (alert_drill.burst, alert_drill.down):
        assert phase.reached, (
            f"{phase.alert} must reach a receiver for detection to be measured (got none within "
            f"{FIRE_TIMEOUT_S:g} s)"
        )
        measured = min(phase.reached.values())
        extra, how = _production_extra_s(phase.alert)
        evidence.figure(f"{phase.alert} detected in the drill after", measured, "s")
        evidence.figure(f"{phase.alert} detection at production timings", measured + extra, "s")
        evidence.note(f"{phase.alert}: {how}")
        if measured + extra > target_s:
            late.append(f"{phase.alert} {measured + extra:.0f} s ({measured:.0f} s in the drill)")
    assert not late, (
        f"every incident of the drill must page within the MTTD target of {target_s:.0f} s "
        f"(slo.yml incidents.mttd) at production timings (got {'; '.join(late)})"
    )

"""The compose file's monitoring as the containers target runs it: Prometheus, Alertmanager and
the exporters are services of system/deploy/docker-compose.yml like any other; this module holds
what the target does differently for them, and what it tells the probes.

- Prometheus and Alertmanager mount the run's rendered copy of system/monitoring where the compose
  file mounts `../monitoring`: prometheus.yml as written (same jobs, discovery and targets, which
  resolve on the run's networks) but with every scrape (the container exporter's every 5 s),
  evaluation and DNS refresh every 2 s,
  jobs whose service the compose file does not run left out, and the watchdog rule added;
  alerts.yml with every group evaluated every 2 s (expressions and `for` as written);
  alertmanager.yml with its routes and inhibition as written and receivers that deliver nowhere.
  The renderings are the native target's (targets/native/observability.py), and Prometheus
  sends firing alerts again every 2 s, as there.
- The container exporter reports this run's containers only (the engine is shared).
- Prometheus and Alertmanager are published on 127.0.0.1 (`PUBLISHED`), for the probes.
- The alert drill's routing (`drill_routing`) renders the drill's rules and routes into the same
  folder and reloads both with SIGHUP (`docker kill -s HUP`); the drill's webhook listens on this
  machine's address on a network Alertmanager joins that is not internal (its gateway).

Prometheus reaches the workers and Alertmanager at their addresses on the run's networks, not
at the 127.0.0.1 ports the probes use: `watch` names both (Observability.network_addresses),
and says that one node exporter watches the one host every container runs on."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from preflight.errors import TargetUnavailable
from preflight.polling import until
from preflight.targets.alerting import (
    SCRAPE_INTERVAL,
    DrillRouting,
    render_alertmanager,
    render_rules,
)
from preflight.targets.native.health import http_ok
from preflight.targets.native.observability import MONITORING_DIR, render_watchdog

MONITORING_MOUNT = "../monitoring"  # what the compose file mounts into Prometheus, Alertmanager
PROMETHEUS, ALERTMANAGER = "prometheus", "alertmanager"
PUBLISHED = {PROMETHEUS: 9090, ALERTMANAGER: 9093}  # service -> its port in the container
CONTAINER_EXPORTER = "container-exporter"
EXPORTER_LABEL_ENV = "CONTAINER_EXPORTER_LABEL"
NODE_JOB = "node"
RULE_FILES = ("alerts.yml", "watchdog.yml")
# Jobs scraped less often than SCRAPE_INTERVAL: the container exporter asks the engine for every
# container's stats at each scrape, which took up to 2 s on a busy 2-core machine.
SLOW_JOBS = {"cadvisor": "5s"}


def render(folder: Path, services: Collection[str], source: Path = MONITORING_DIR) -> Path:
    """The run's copy of system/monitoring for the `../monitoring` mounts (readable by the
    containers' users)."""
    folder.mkdir(mode=0o755, exist_ok=True)
    folder.chmod(0o755)
    render_prometheus(source / "prometheus.yml", folder / "prometheus.yml", services)
    render_rules(source / "alerts.yml", folder / "alerts.yml")
    render_watchdog(folder / "watchdog.yml")
    render_alertmanager(source / "alertmanager.yml", folder / "alertmanager.yml")
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def render_prometheus(source: Path, out: Path, services: Collection[str]) -> dict[str, Any]:
    """prometheus.yml with short intervals, the rule files next to it, and only the jobs and
    Alertmanagers whose service the compose file runs."""
    config: dict[str, Any] = yaml.safe_load(source.read_text()) or {}
    config["global"] = {
        **(config.get("global") or {}),
        "scrape_interval": SCRAPE_INTERVAL,
        "evaluation_interval": SCRAPE_INTERVAL,
    }
    config["rule_files"] = list(RULE_FILES)
    for manager in (config.get("alerting") or {}).get("alertmanagers") or []:
        for static in manager.get("static_configs") or []:
            static["targets"] = _running(static.get("targets") or [], services)
    jobs = []
    for job in config.get("scrape_configs") or []:
        interval = SLOW_JOBS.get(str(job.get("job_name")), SCRAPE_INTERVAL)
        job["scrape_interval"] = job["scrape_timeout"] = interval
        for dns in job.get("dns_sd_configs") or []:
            dns["names"] = [n for n in dns.get("names") or [] if n in services]
            dns["refresh_interval"] = SCRAPE_INTERVAL
        for static in job.get("static_configs") or []:
            static["targets"] = _running(static.get("targets") or [], services)
        if any(dns["names"] for dns in job.get("dns_sd_configs") or []) or any(
            static["targets"] for static in job.get("static_configs") or []
        ):
            jobs.append(job)
    config["scrape_configs"] = jobs
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def _running(targets: list[str], services: Collection[str]) -> list[str]:
    """The targets whose host is a service of the compose file (or Prometheus itself)."""
    return [t for t in targets if t.rpartition(":")[0] in {*services, "localhost"}]


def command(service: str, words: list[str]) -> list[str]:
    """What the target adds to a service's command: Prometheus sends firing alerts again every
    2 s (default: a minute), so an alert that fired before it discovered Alertmanager is not
    held back, as on the native target."""
    if service == PROMETHEUS and words:
        return [*words, f"--rules.alert.resend-delay={SCRAPE_INTERVAL}"]
    return words


def environment(service: str, run_label: str) -> dict[str, str]:
    """What the target adds to a service's environment: the container exporter watches the
    run's containers only."""
    return {EXPORTER_LABEL_ENV: run_label} if service == CONTAINER_EXPORTER else {}


@dataclass(frozen=True)
class Watching:
    """The monitoring a run started, as the probes reach it."""

    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    network_addresses: Mapping[str, str] = field(default_factory=dict)


def watch(
    containers: Mapping[str, Any],
    metrics_urls: Mapping[str, str],
    *,
    worker_port: int,
    config: Path,
    catalogue: Path | None,
    timeout: float,
) -> Watching:
    """Wait for Prometheus and Alertmanager to answer on their published ports, and (with a
    backup service) for its first backup, whose gauge an alert waits for; say where Prometheus
    reaches what the probes reach on 127.0.0.1. `containers`: replica name (api-1,
    prometheus-1, ...) -> the docker SDK's container; `metrics_urls`: API replica -> its
    /metrics here, served on `worker_port` in its container; `config`: the rendered
    prometheus.yml; `catalogue`: the backup repository's catalogue.json."""
    urls = {
        service: _ready_url(service, container, PUBLISHED[service], timeout)
        for service in PUBLISHED
        if (container := containers.get(f"{service}-1")) is not None
    }
    prometheus = containers.get(f"{PROMETHEUS}-1")
    if prometheus is None:
        return Watching(alertmanager_url=urls.get(ALERTMANAGER))
    addresses = {
        url: f"{ip}:{worker_port}"
        for replica, url in metrics_urls.items()
        if (ip := _shared_address(containers[replica], prometheus)) is not None
    }
    addresses.update(_configured(yaml.safe_load(config.read_text()) or {}))
    if catalogue is not None and not until(lambda: first_backup_done(catalogue), timeout):
        raise TargetUnavailable(
            f"containers target: the backup service did not finish its first backup within "
            f"{timeout:.0f} s (until then the alert on its missing gauge is pending)"
        )
    return Watching(urls.get(PROMETHEUS), urls.get(ALERTMANAGER), addresses)


def _ready_url(service: str, container: Any, port: int, timeout: float) -> str:
    url = f"http://127.0.0.1:{_host_port(container, port)}"
    if not until(lambda: http_ok(f"{url}/-/ready"), timeout):
        tail = container.logs(tail=5).decode(errors="replace").strip()
        raise TargetUnavailable(
            f"containers target: {service} at {url} is not ready within {timeout:.0f} s "
            f"(its last lines: {tail[-400:]})"
        )
    return url


def _configured(config: Mapping[str, Any]) -> dict[str, str]:
    """Alertmanager's and the node exporter's addresses as prometheus.yml names them."""
    managers = [
        target
        for manager in (config.get("alerting") or {}).get("alertmanagers") or []
        for static in manager.get("static_configs") or []
        for target in static.get("targets") or []
    ]
    nodes = [
        target
        for job in config.get("scrape_configs") or []
        if job.get("job_name") == NODE_JOB
        for static in job.get("static_configs") or []
        for target in static.get("targets") or []
    ]
    found = {ALERTMANAGER: managers[0]} if managers else {}
    if len(nodes) == 1:  # one node exporter: the one host every container runs on
        found[NODE_JOB] = nodes[0]
    return found


def _host_port(container: Any, port: int) -> int:
    container.reload()
    bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp") or []
    return int(bindings[0]["HostPort"])


def _shared_address(container: Any, prometheus: Any) -> str | None:
    """The container's address on a network Prometheus shares with it (where Prometheus' DNS
    discovery finds it). Its port stays the one inside the container."""
    container.reload()
    prometheus.reload()
    mine = container.attrs["NetworkSettings"]["Networks"] or {}
    theirs = prometheus.attrs["NetworkSettings"]["Networks"] or {}
    for name in sorted(set(mine) & set(theirs)):
        if ip := mine[name].get("IPAddress"):
            return str(ip)
    return None


def first_backup_done(catalogue: Path) -> bool:
    """Whether the backup service finished its first backup (the gauge the alerts want)."""
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        return "finished_at" in json.loads(catalogue.read_text())["backups"][0]
    return False


def drill_routing(
    containers: Mapping[str, Any],
    watching: Watching,
    folder: Path,
    listen_host: str | None,
    source: Path = MONITORING_DIR,
) -> DrillRouting | None:
    """The alert drill's routing over the run's `folder` (what `render` wrote from `source`),
    or None where the run has no Prometheus or Alertmanager, or no address of this machine
    Alertmanager reaches (`listen_host`: None where it joins internal networks only).
    `containers`: replica name -> the docker SDK's container."""
    prometheus, alertmanager = (
        containers.get(f"{PROMETHEUS}-1"),
        containers.get(f"{ALERTMANAGER}-1"),
    )
    if (
        prometheus is None
        or alertmanager is None
        or watching.prometheus_url is None
        or watching.alertmanager_url is None
        or listen_host is None
    ):
        return None

    def reload() -> None:
        for container in (alertmanager, prometheus):
            container.kill(signal="SIGHUP")

    return DrillRouting(
        source,
        folder,
        reload,
        watching.prometheus_url,
        watching.alertmanager_url,
        logs=f"`docker logs` of {prometheus.name} and {alertmanager.name}",
        listen_host=listen_host,
    )

"""Prometheus, Alertmanager and the exporters next to the native target, on loopback.

Everything is rendered from system/monitoring (or another copy of it): prometheus.yml with the
workers' and exporters' real loopback addresses in place of the container names and a short
scrape interval, alerts.yml unchanged but for short group intervals (every rule is evaluated
within seconds; expressions and `for` durations stay as written), alertmanager.yml with its
routes and inhibition as written but receivers that deliver nowhere (nothing leaves loopback and
no secret file is needed). A watchdog alert that always fires (the usual "dead man's switch")
proves the path from Prometheus to Alertmanager; it carries the label ``preflight="watchdog"``.
The alert rules' and routes' renderings, and the alert drill's routing, are
preflight/targets/alerting.py's (the containers target uses them too).

The binaries are single files extracted from Debian's packages by scripts/setup.sh.
"""

from __future__ import annotations

import os
import shutil
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from preflight.errors import TargetUnavailable
from preflight.targets.alerting import (
    SCRAPE_INTERVAL,
    DrillRouting,
    render_alertmanager,
    render_rules,
)
from preflight.targets.base import WATCHDOG_LABEL
from preflight.targets.procs import Child, free_port, wait_until

REPO = Path(__file__).resolve().parents[3]
MONITORING_DIR = REPO / "system" / "monitoring"
WATCHDOG_ALERT = "PreflightWatchdog"
API_JOB = "chatsdk-api"
# Stopped before everything else, so the target's own shutdown raises no alerts.
NAMES = (
    "prometheus",
    "alertmanager",
    "node-exporter",
    "postgres-exporter",
    "redis-exporter",
)
# Debian's names of the binaries (scripts/setup.sh installs them under these names).
BINARIES = {
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "node-exporter": "prometheus-node-exporter",
    "postgres-exporter": "prometheus-postgres-exporter",
    "redis-exporter": "prometheus-redis-exporter",
}
# Scrape job of prometheus.yml -> the exporter that serves it here.
EXPORTER_JOBS = {
    "node": "node-exporter",
    "postgres": "postgres-exporter",
    "redis": "redis-exporter",
}


def binary(name: str) -> str:
    found = shutil.which(BINARIES[name], path=f"/usr/local/bin:{os.defpath}")
    if found is None:
        raise TargetUnavailable(
            f"{BINARIES[name]} not found; run scripts/setup.sh as root (it extracts it from "
            "Debian's package) or start the target without observability"
        )
    return found


@dataclass(frozen=True)
class Ports:
    prometheus: int
    alertmanager: int
    exporters: Mapping[str, int]  # job -> port


def render_prometheus(
    source: Path,
    out: Path,
    *,
    api_targets: list[str],
    ports: Ports,
    rule_files: list[Path],
    scrape_interval: str = SCRAPE_INTERVAL,
) -> dict[str, Any]:
    """prometheus.yml with loopback targets: the API job scrapes `api_targets`, each exporter
    job its local exporter, and jobs with nothing behind them here (cAdvisor) are left out."""
    config: dict[str, Any] = yaml.safe_load(source.read_text()) or {}
    config["global"] = {
        **(config.get("global") or {}),
        "scrape_interval": scrape_interval,
        "evaluation_interval": scrape_interval,
    }
    config["rule_files"] = [str(p) for p in rule_files]
    for manager in (config.get("alerting") or {}).get("alertmanagers") or []:
        manager["static_configs"] = [{"targets": [f"127.0.0.1:{ports.alertmanager}"]}]
    jobs = []
    for job in config.get("scrape_configs") or []:
        name = str(job.get("job_name"))
        if name == API_JOB:
            targets = api_targets
        elif name == "prometheus":
            targets = [f"127.0.0.1:{ports.prometheus}"]
        elif name in ports.exporters:
            targets = [f"127.0.0.1:{ports.exporters[name]}"]
        else:
            continue
        local = {k: v for k, v in job.items() if not k.endswith("_sd_configs")}
        local["static_configs"] = [{"targets": targets}]
        local["scrape_interval"] = scrape_interval
        jobs.append(local)
    config["scrape_configs"] = jobs
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def render_watchdog(out: Path, interval: str = SCRAPE_INTERVAL) -> None:
    key, value = WATCHDOG_LABEL
    rule = {
        "alert": WATCHDOG_ALERT,
        "expr": "vector(1)",
        "labels": {"severity": "none", key: value},
        "annotations": {"summary": "Always firing: proves Prometheus delivers to Alertmanager."},
    }
    out.write_text(
        yaml.safe_dump({"groups": [{"name": "preflight", "interval": interval, "rules": [rule]}]})
    )


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True)
class Observability:
    prometheus_url: str
    alertmanager_url: str
    routing: DrillRouting


def start_observability(
    workdir: Path,
    *,
    spawn: Callable[[Child, dict[str, str]], Child],
    api_targets: list[str],
    postgres_dsn: str,
    redis_address: str,
    redis_password: str,
    monitoring_dir: Path | None = None,
    ready_timeout: float = 30.0,
) -> Observability:
    """Start the exporters, Alertmanager and Prometheus (`spawn` registers each child with the
    target); returns once Prometheus and Alertmanager answer /-/ready."""
    source = monitoring_dir or MONITORING_DIR
    exes = {name: binary(name) for name in NAMES}
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    textfile = workdir / "textfile"  # node_exporter's textfile collector (the backup gauge)
    textfile.mkdir(exist_ok=True)
    ports = Ports(free_port(), free_port(), {job: free_port() for job in EXPORTER_JOBS})
    base_env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}

    def listen(job: str) -> str:
        return f"--web.listen-address=127.0.0.1:{ports.exporters[job]}"

    spawn(
        Child(
            "node-exporter",
            [
                exes["node-exporter"],
                listen("node"),
                f"--collector.textfile.directory={textfile}",
                "--no-collector.systemd",  # Debian enables it; no systemd bus on every host
            ],
            logs / "node-exporter.log",
        ),
        base_env,
    )
    spawn(
        Child(
            "postgres-exporter", [exes["postgres-exporter"], listen("postgres")], logs / "pg.log"
        ),
        {**base_env, "DATA_SOURCE_NAME": postgres_dsn},
    )
    spawn(
        Child(
            "redis-exporter",
            [
                exes["redis-exporter"],
                f"-redis.addr={redis_address}",
                f"-web.listen-address=127.0.0.1:{ports.exporters['redis']}",
            ],
            logs / "redis-exporter.log",
        ),
        {**base_env, "REDIS_PASSWORD": redis_password},
    )

    render_alertmanager(source / "alertmanager.yml", workdir / "alertmanager.yml")
    alertmanager = spawn(
        Child(
            "alertmanager",
            [
                exes["alertmanager"],
                f"--config.file={workdir / 'alertmanager.yml'}",
                f"--storage.path={workdir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{ports.alertmanager}",
                "--cluster.listen-address=",  # a single instance: no gossip port on 0.0.0.0
            ],
            logs / "alertmanager.log",
        ),
        base_env,
    )

    rules, watchdog = workdir / "alerts.yml", workdir / "watchdog.yml"
    render_rules(source / "alerts.yml", rules)
    render_watchdog(watchdog)
    render_prometheus(
        source / "prometheus.yml",
        workdir / "prometheus.yml",
        api_targets=api_targets,
        ports=ports,
        rule_files=[rules, watchdog],
    )
    prometheus = spawn(
        Child(
            "prometheus",
            [
                exes["prometheus"],
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{ports.prometheus}",
                "--storage.tsdb.retention.time=30d",  # MON-PROM-RETENTION (slo.yml)
                # Alerts go out at once and again every interval (default: a minute), so an
                # alert that fired before Alertmanager was discovered is not held back.
                f"--rules.alert.resend-delay={SCRAPE_INTERVAL}",
            ],
            logs / "prometheus.log",
            signal.SIGTERM,
        ),
        base_env,
    )
    prometheus_url = f"http://127.0.0.1:{ports.prometheus}"
    alertmanager_url = f"http://127.0.0.1:{ports.alertmanager}"
    wait_until(alertmanager, lambda: _ready(f"{alertmanager_url}/-/ready"), ready_timeout, "ready")
    wait_until(prometheus, lambda: _ready(f"{prometheus_url}/-/ready"), ready_timeout, "ready")

    def reload() -> None:
        alertmanager.signal(signal.SIGHUP)
        prometheus.signal(signal.SIGHUP)

    routing = DrillRouting(
        source, workdir, reload, prometheus_url, alertmanager_url, logs=str(logs)
    )
    return Observability(prometheus_url, alertmanager_url, routing)

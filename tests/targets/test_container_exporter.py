"""The compose deployment's container exporter (system/deploy/images/container-exporter) against
this machine's Docker engine: a container with limits gets cAdvisor's series with its name, its
CPU and memory limits as cAdvisor states them, and the label filter keeps other containers out."""

from __future__ import annotations

import importlib.util
import secrets
from types import ModuleType
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from preflight.targets.containers.engine import (
    LAUNCHER_LABEL,
    RUN_LABEL,
    docker_available,
    engine,
    launcher,
)
from preflight.targets.containers.images import BOOKWORM, REPO_ROOT, ensure_base

EXPORTER = REPO_ROOT / "system/deploy/images/container-exporter/container_exporter.py"
SOCKET = "/var/run/docker.sock"


def exporter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("container_exporter", EXPORTER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scrape(module: Any, label: str) -> dict[str, dict[str, float]]:
    """Metric name -> container name -> value, as Prometheus would read them."""
    registry = CollectorRegistry()
    registry.register(module.ContainerCollector(module.Engine(SOCKET), label))
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if "name" in sample.labels:
                found.setdefault(sample.name, {})[sample.labels["name"]] = sample.value
    return found


def test_a_container_with_limits_gets_cadvisors_series() -> None:
    reason = docker_available()
    assert reason is None, f"set-up starts a Docker engine (scripts/setup.sh): {reason}"
    client = engine()
    run = f"preflight-exporter-{secrets.token_hex(4)}"
    container = client.containers.run(
        ensure_base(client, BOOKWORM, print),
        ["sleep", "120"],
        name=run,
        detach=True,
        nano_cpus=500_000_000,  # cpus: "0.5"
        mem_limit=64 * 2**20,
        labels={RUN_LABEL: run, LAUNCHER_LABEL: launcher()},
    )
    try:
        module = exporter()
        mine = scrape(module, f"{RUN_LABEL}={run}")
        assert mine["container_cpu_usage_seconds_total"].keys() == {run}, mine
        assert mine["container_memory_working_set_bytes"][run] > 0
        assert mine["container_spec_memory_limit_bytes"][run] == 64 * 2**20
        assert mine["container_spec_cpu_quota"][run] == 50_000
        assert mine["container_spec_cpu_period"][run] == 100_000
        other = scrape(module, f"{RUN_LABEL}={run}-none")
        assert run not in other.get("container_cpu_usage_seconds_total", {})
    finally:
        container.remove(force=True)
        client.close()

"""Per-container CPU and memory for Prometheus, under cAdvisor's metric names.

Why not cAdvisor itself: Debian packages it in neither 12 (bookworm) nor 13 (trixie), and the
compose deployment builds every image from Debian packages or the wheelhouse, pulling nothing
from a registry. This exporter asks the Docker engine instead, through its socket mounted
read-only (the mount keeps the socket file, not the API, read-only: the exporter only sends GET
requests), and serves what alerts.yml and the system dashboard read from job `cadvisor`:

- container_cpu_usage_seconds_total: CPU time the container used (the engine's total_usage)
- container_memory_working_set_bytes: memory usage less inactive file cache, as cAdvisor and
  the kubelet count it (what the kernel's OOM killer is compared against)
- container_spec_memory_limit_bytes: the memory limit (0 without one)
- container_spec_cpu_quota, container_spec_cpu_period: the CPU limit as CFS quota and period in
  microseconds (a `cpus: "2.0"` limit is quota 200000 over period 100000; 0 without a limit)

Each series carries `name` (the container's name), `id` (/docker/<id>) and `image`, as cAdvisor
labels them. CONTAINER_EXPORTER_LABEL (`key=value`) limits it to the containers with that label
(e.g. one compose project's); unset, it reports every running container of the engine. Every
scrape asks the engine afresh (one-shot stats, in parallel); a scrape fails when the engine does
not answer, so `up` shows it. A container's limits are asked for once a minute (they change only
with `docker update`).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

API = "/v1.41"  # Docker 20.10 and later; one-shot stats need 1.41
LABELS = ("name", "id", "image")
ENGINE_TIMEOUT_S = 10.0
PARALLEL = 16
SPEC_TTL_S = 60.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the engine's unix socket."""

    def __init__(self, path: str, timeout: float = ENGINE_TIMEOUT_S) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class Engine:
    """GET requests to the Docker engine's API."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def get(self, path: str) -> Any:
        conn = UnixHTTPConnection(self.socket_path)
        try:
            conn.request("GET", API + path)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise LookupError(f"GET {path}: {resp.status} {body[:200]!r}")
        return json.loads(body)

    def containers(self, label: str | None) -> list[dict[str, Any]]:
        query = ""
        if label:
            query = "?filters=" + quote(json.dumps({"label": [label]}))
        return list(self.get(f"/containers/json{query}"))


def working_set(memory: dict[str, Any]) -> float:
    """usage - inactive_file (cgroup v2 `inactive_file`, v1 `total_inactive_file`), never < 0."""
    stats = memory.get("stats") or {}
    inactive = stats.get("inactive_file", stats.get("total_inactive_file", 0))
    return float(max(int(memory.get("usage", 0)) - int(inactive), 0))


def cpu_spec(host: dict[str, Any]) -> tuple[int, int]:
    """(quota, period) in microseconds; `cpus:` limits are NanoCpus, applied by the engine as a
    quota over the default period of 100 ms."""
    nano = int(host.get("NanoCpus") or 0)
    if nano:
        return nano // 10_000, 100_000
    return int(host.get("CpuQuota") or 0), int(host.get("CpuPeriod") or 0) or 100_000


class Specs:
    """Each container's HostConfig (its limits), asked for again after SPEC_TTL_S."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._known: dict[str, tuple[float, dict[str, Any]]] = {}

    def of(self, cid: str) -> dict[str, Any]:
        now = time.monotonic()
        known = self._known.get(cid)
        if known is None or now - known[0] > SPEC_TTL_S:
            host = self.engine.get(f"/containers/{cid}/json").get("HostConfig") or {}
            known = self._known[cid] = (now, dict(host))
        return known[1]

    def keep(self, ids: set[str]) -> None:
        """Forget the containers that are gone."""
        for cid in set(self._known) - ids:
            self._known.pop(cid, None)


def sample(engine: Engine, specs: Specs, summary: dict[str, Any]) -> dict[str, Any] | None:
    """One container's figures, or None when it went away meanwhile."""
    cid = str(summary["Id"])
    try:
        stats = engine.get(f"/containers/{cid}/stats?stream=false&one-shot=true")
        host = specs.of(cid)
    except LookupError:
        return None
    quota, period = cpu_spec(host)
    names = summary.get("Names") or [f"/{cid[:12]}"]
    return {
        "labels": (str(names[0]).lstrip("/"), f"/docker/{cid}", str(summary.get("Image", ""))),
        "cpu": int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage", 0))
        / 1e9,
        "memory": working_set(stats.get("memory_stats") or {}),
        "memory_limit": float(host.get("Memory") or 0),
        "cpu_quota": float(quota),
        "cpu_period": float(period),
    }


class ContainerCollector(Collector):
    """Asks the engine at every scrape."""

    def __init__(self, engine: Engine, label: str | None = None) -> None:
        self.engine = engine
        self.label = label
        self.specs = Specs(engine)

    def samples(self) -> list[dict[str, Any]]:
        running = self.engine.containers(self.label)
        self.specs.keep({str(s["Id"]) for s in running})
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            found = pool.map(lambda s: sample(self.engine, self.specs, s), running)
            return [s for s in found if s is not None]

    def collect(self) -> Iterator[Any]:
        started = time.monotonic()
        samples = self.samples()
        families = {
            "cpu": CounterMetricFamily(
                "container_cpu_usage_seconds_total",
                "Cumulative CPU time consumed by the container in seconds.",
                labels=LABELS,
            ),
            "memory": GaugeMetricFamily(
                "container_memory_working_set_bytes",
                "Current working set of the container in bytes.",
                labels=LABELS,
            ),
            "memory_limit": GaugeMetricFamily(
                "container_spec_memory_limit_bytes",
                "Memory limit of the container in bytes (0: none).",
                labels=LABELS,
            ),
            "cpu_quota": GaugeMetricFamily(
                "container_spec_cpu_quota", "CPU quota of the container (0: none).", labels=LABELS
            ),
            "cpu_period": GaugeMetricFamily(
                "container_spec_cpu_period", "CPU period of the container.", labels=LABELS
            ),
        }
        for s in samples:
            for key, family in families.items():
                family.add_metric(list(s["labels"]), s[key])
        yield from families.values()
        took = GaugeMetricFamily(
            "container_exporter_scrape_duration_seconds", "How long asking the engine took."
        )
        took.add_metric([], time.monotonic() - started)
        yield took


def main() -> None:
    engine = Engine(os.environ.get("CONTAINER_EXPORTER_SOCKET", "/var/run/docker.sock"))
    registry = CollectorRegistry()
    registry.register(ContainerCollector(engine, os.environ.get("CONTAINER_EXPORTER_LABEL")))
    port = int(os.environ.get("CONTAINER_EXPORTER_PORT", "9338"))
    server, thread = start_http_server(port, addr="0.0.0.0", registry=registry)  # noqa: S104
    print(f"container-exporter: serving on :{port}, engine {engine.socket_path}", flush=True)
    thread.join()
    server.server_close()


if __name__ == "__main__":
    main()

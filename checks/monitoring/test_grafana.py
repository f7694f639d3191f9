"""Grafana, through its HTTP API (the target's grafana_url): healthy, with a Prometheus data
source that answers, and the repository's dashboards provisioned."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from checks.monitoring._monitoring import HTTP_TIMEOUT_S, Monitoring
from checks.monitoring.test_dashboards import DASHBOARDS
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget


class Grafana:
    """GET on Grafana's API with the basic-auth credentials of its URL, if any."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.headers: dict[str, str] = {"Accept": "application/json"}
        if parts.username is not None:
            pair = f"{parts.username}:{parts.password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        self.base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))

    def get(self, path: str) -> tuple[int, Any]:
        """(status, decoded JSON); an unreachable Grafana is status 0 with the reason."""
        request = urllib.request.Request(self.base + path, headers=self.headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()[:300].decode(errors="replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return 0, str(getattr(exc, "reason", exc))


def grafana(target: ProbeTarget) -> Grafana:
    """The target's Grafana; skips when it runs none (saying why) or names none."""
    target.requires("grafana")
    url = target.info.observability.grafana_url
    assert url is not None
    return Grafana(url)


def dashboard_titles(monitoring: Monitoring) -> dict[str, str]:
    folder = monitoring.dir / "grafana" / "dashboards"
    return {name: json.loads((folder / f"{name}.json").read_text())["title"] for name in DASHBOARDS}


@pytest.mark.checklist("MON-GRAFANA")
def test_grafana_is_healthy_queries_prometheus_and_has_the_dashboards(
    monitoring: Monitoring, target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Metrics nobody can look at do not help during an incident."""
    api = grafana(target)
    status, health = api.get("/api/health")
    evidence.note(f"GET {api.base}/api/health: {status} {health}")
    healthy = status == 200 and isinstance(health, dict) and health.get("database") == "ok"
    assert healthy, (
        f"Grafana at {api.base} must answer /api/health with 200 and database ok "
        f"(got {status or 'no answer'}: {health})"
    )
    status, sources = api.get("/api/datasources")
    listed = status == 200 and isinstance(sources, list)
    assert listed, (
        f"Grafana at {api.base} must list its data sources to the target's credentials "
        f"(got {status}: {sources})"
    )
    prometheus = [s for s in sources if s.get("type") == "prometheus"]
    evidence.note(f"data sources: {[(s.get('name'), s.get('type')) for s in sources]}")
    assert prometheus, (
        f"Grafana at {api.base} must have a Prometheus data source (got "
        f"{[s.get('type') for s in sources] or 'none'})"
    )
    unhealthy = []
    for source in prometheus:
        status, answer = api.get(f"/api/datasources/uid/{quote(str(source.get('uid')))}/health")
        if status != 200 or not isinstance(answer, dict) or answer.get("status") != "OK":
            unhealthy.append(f"{source.get('name')}: {status} {answer}")
    assert not unhealthy, (
        "every Prometheus data source of Grafana must answer its health check with OK "
        f"(got {'; '.join(unhealthy)})"
    )
    status, found = api.get("/api/search?type=dash-db&limit=5000")
    titles = {d.get("title") for d in found} if isinstance(found, list) else set()
    missing = sorted(t for t in dashboard_titles(monitoring).values() if t not in titles)
    evidence.figure("dashboards provisioned", len(titles))
    assert not missing, (
        f"Grafana at {api.base} must have the repository's dashboards provisioned (got no "
        f"{', '.join(repr(t) for t in missing)}; search answered {status})"
    )

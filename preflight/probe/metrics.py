"""`target.metrics`: what the API workers say about themselves: their Prometheus /metrics (the
target's internal metrics URLs) and their runtime reports (GET /v1/admin/runtime through the
edge, which balances over the workers)."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from preflight.client import ChatClient, expect, polite
from preflight.evidence import EvidenceLog

HTTP_TIMEOUT_S = 5.0
# The edge balances requests over the workers; this many requests reach every worker of a
# target with a handful of them (the probe says which workers it saw).
RUNTIME_SAMPLES = 16

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_TYPE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape(url: str) -> tuple[int, str, str]:
    """Status, content type and body of one GET (no redirects followed past the worker)."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:  # noqa: S310
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode(errors="replace")


def scrape_ok(url: str) -> str:
    """The body of a /metrics that answers 200; fails the probe otherwise."""
    __tracebackhide__ = True
    status, _ctype, body = scrape(url)
    assert status == 200, f"GET {url} must answer 200 with metrics (got {status})"
    return body


def samples(text: str) -> list[Sample]:
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match[2] or ""))
            found.append(Sample(match[1], labels, float(match[3])))
    return found


def families(text: str) -> dict[str, str]:
    """Metric family name -> type, from the # TYPE lines."""
    return {m[1]: m[2] for line in text.splitlines() if (m := _TYPE.match(line))}


def exposed_names(text: str) -> set[str]:
    """Every name a query may use: sample names, and the series names of declared families
    (a labelled counter that has not counted yet still has its # TYPE line)."""
    names = {s.name for s in samples(text)}
    for family, kind in families(text).items():
        names.add(family)
        names.update(family + suffix for suffix in SUFFIXES.get(kind, ()))
    return names


class Metrics:
    """The workers' /metrics (`urls()` skips the probe when the target names none) and their
    runtime reports (through the edge, as the admin)."""

    def __init__(self, urls: Callable[[], tuple[str, ...]], admin: Callable[[], ChatClient]):
        self._urls = urls
        self._admin = admin

    @property
    def urls(self) -> tuple[str, ...]:
        return self._urls()

    def exposed(self) -> set[str]:
        """Every name any worker exposes."""
        names: set[str] = set()
        for url in self.urls:
            names |= exposed_names(scrape_ok(url))
        return names

    def total(self, name: str, **labels: str) -> float:
        """Sum of a metric over every worker and every series whose labels include `labels`."""
        value = 0.0
        for url in self.urls:
            for sample in samples(scrape_ok(url)):
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    value += sample.value
        return value

    def runtime(self, evidence: EvidenceLog) -> dict[str, dict[str, Any]]:
        """worker id -> its runtime report, from RUNTIME_SAMPLES requests through the edge."""
        admin = self._admin()
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(RUNTIME_SAMPLES):
            response = polite(lambda: admin.get("/v1/admin/runtime"))
            report: dict[str, Any] = expect(response, 200)
            if report["worker_id"] not in seen:
                evidence.request(response)
            seen[str(report["worker_id"])] = report
        evidence.figure("workers reached", len(seen))
        return seen

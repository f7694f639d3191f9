"""Prometheus metrics kept in a per-application registry (several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

# The 0.0.4 text format is the one every Prometheus version scrapes.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "chatsdk_ready", "1 when the last readiness check passed.", registry=self.registry
        )
        self.draining = Gauge(
            "chatsdk_draining", "1 while the worker is shutting down.", registry=self.registry
        )
        self.db_up = Gauge(
            "chatsdk_db_up", "1 when PostgreSQL answered the last check.", registry=self.registry
        )
        self.redis_up = Gauge(
            "chatsdk_redis_up", "1 when Redis answered the last check.", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

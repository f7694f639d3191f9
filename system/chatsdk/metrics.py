"""Prometheus metrics kept in a per-application registry (several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from chatsdk.pooltiming import FAILURE_REASONS

# The 0.0.4 text format is the one every Prometheus version scrapes.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Labels of auth_throttled_total (chatsdk/auththrottle.py).
THROTTLE_SCOPES = ("address", "credential")
CREDENTIAL_KINDS = ("admin_key", "api_key", "access_token", "refresh_token")


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
        # What the primary says of its standbys (chatsdk/replication.py), at each scrape.
        self.db_standbys_streaming = Gauge(
            "chatsdk_db_standbys_streaming",
            "Standbys the primary shows streaming (pg_stat_replication).",
            registry=self.registry,
        )
        self.db_replication_lag = Gauge(
            "chatsdk_db_replication_lag_seconds",
            "Replay lag of each standby as the primary measures it, by standby.",
            ["standby"],
            registry=self.registry,
        )
        self.db_replication_lag_bytes = Gauge(
            "chatsdk_db_replication_lag_bytes",
            "WAL the primary wrote that a standby has not replayed yet, by standby.",
            ["standby"],
            registry=self.registry,
        )

        # The names the original ChatSDK monitoring guide used in its alert rules and dashboards,
        # so that they find real series. Route labels are route templates, never raw paths.
        size_buckets = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
        self.http_request_size = Histogram(
            "http_request_size_bytes",
            "Size of HTTP request bodies, by method and route template.",
            ["method", "route"],
            buckets=size_buckets,
            registry=self.registry,
        )
        self.http_response_size = Histogram(
            "http_response_size_bytes",
            "Size of HTTP response bodies, by method and route template.",
            ["method", "route"],
            buckets=size_buckets,
            registry=self.registry,
        )
        self.active_websockets = Gauge(
            "active_websocket_connections",
            "Authenticated WebSocket connections open on this worker.",
            registry=self.registry,
        )
        self.messages_sent = Counter(
            "messages_sent_total", "Messages stored (new sends only).", registry=self.registry
        )
        self.messages_received = Counter(
            "messages_received_total",
            "message.new events delivered to sockets on this worker.",
            registry=self.registry,
        )
        self.db_query_duration = Histogram(
            "db_query_duration_seconds",
            "Time of database work, by operation.",
            ["operation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        # From 0.1 ms (a warm idle connection) to 5 s (a queue behind a saturated pool), with a
        # bound at 100 ms, the wait PERF-POOL-SATURATION allows.
        self.db_pool_wait = Histogram(
            "db_pool_wait_seconds",
            "Time to get a PostgreSQL connection from the pool.",
            buckets=(
                0.0001,
                0.00025,
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
            ),
            registry=self.registry,
        )
        self.db_pool_acquire_failures = Counter(
            "db_pool_acquire_failures_total",
            "PostgreSQL pool acquisitions that got no connection, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in FAILURE_REASONS:
            self.db_pool_acquire_failures.labels(reason)  # every series exists from the start
        self.cache_hits = Counter(
            "cache_hits_total", "Redis cache hits, by cache.", ["cache"], registry=self.registry
        )
        self.cache_misses = Counter(
            "cache_misses_total", "Redis cache misses, by cache.", ["cache"], registry=self.registry
        )
        self.rate_limited = Counter(
            "rate_limited_total",
            "Requests refused by the API's own rate limits, by action.",
            ["action"],
            registry=self.registry,
        )
        self.auth_throttled = Counter(
            "auth_throttled_total",
            "Authentication attempts refused with 429 after repeated failures, by what was over "
            "its limit (the client address or the credential) and the kind of credential.",
            ["scope", "credential"],
            registry=self.registry,
        )
        for scope in THROTTLE_SCOPES:
            for credential in CREDENTIAL_KINDS:
                self.auth_throttled.labels(scope, credential)  # every series exists from the start
        self.outbox_published = Counter(
            "outbox_events_published_total",
            "Outbox events published to Redis by this worker.",
            registry=self.registry,
        )
        self.outbox_lag = Histogram(
            "outbox_publish_lag_seconds",
            "Time from an event's commit to its publication.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "webhook_deliveries_total",
            "Webhook delivery attempts, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

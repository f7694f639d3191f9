"""Figures a Locust run cannot see, read from the API workers' own /metrics during the run.

Locust sees the edge; it cannot say how long requests queued for a database connection inside a
worker, nor how the balancer spread them across workers. Every worker exposes both as
cumulative series (db_pool_wait_seconds, http_requests_total), so the load runner scrapes every
worker now and then (`ApiSampler.sample`) and the difference between the first scrape inside the
full-scale window and the last one gives the window's figures (`api_figures`).

A figure is measured or absent. It is absent, with the reason in `api_details`, when the two
scrapes do not cover the same workers completely (a worker did not answer, or lacks the
histogram), when a worker restarted in between (its counters started again from zero), or when
the window holds nothing to measure. Cumulative counters make the scrapes in between
irrelevant: a worker that missed one scrape mid-run loses nothing.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "http_requests_total"
POOL_WAIT_BUCKET = "db_pool_wait_seconds_bucket"
POOL_FAILURES = "db_pool_acquire_failures_total"
STARTED = "process_start_time_seconds"
# Scrapes and health checks arrive from monitors and the balancer's own checks, not from the
# traffic being balanced: counting them would flatten the spread.
SERVICE_ROUTES = frozenset({"/metrics", "/v1/health/live", "/v1/health/ready"})
POOL_WAIT_P95 = "db_pool_wait_p95_ms"
WORKER_SHARE = "worker_share_max_over_fair"
QUANTILE = 0.95


@dataclass(frozen=True)
class ApiSample:
    """One scrape of every worker. Worker identity is its metrics URL."""

    t: float  # time.time() when the scrape began
    # Cumulative http_requests_total per worker that answered, service routes left out.
    requests_by_worker: Mapping[str, float]
    # Cumulative db_pool_wait_seconds buckets (le -> count) summed over the workers that
    # answered; empty when one of them does not expose the histogram (see pool_wait_missing).
    pool_wait_buckets: Mapping[float, float]
    errors: tuple[str, ...] = ()  # a worker that did not answer: "http://...: reason"
    # Workers that answered without db_pool_wait_seconds (a release from before it existed).
    pool_wait_missing: tuple[str, ...] = ()
    # Cumulative db_pool_acquire_failures_total by reason, summed over the workers that answered.
    pool_failures: Mapping[str, float] = field(default_factory=dict)
    # process_start_time_seconds per worker, where exposed: a change means a restart.
    started_by_worker: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Worker:
    requests: float
    pool_wait: dict[float, float] | None
    pool_failures: dict[str, float]
    started: float | None


class ApiSampler:
    def __init__(self, metrics_urls: Sequence[str], timeout_s: float = 2.0) -> None:
        if not metrics_urls:
            raise ValueError("ApiSampler needs at least one worker metrics URL")
        self.metrics_urls = tuple(metrics_urls)
        self.timeout_s = timeout_s
        # Never through an HTTP proxy from the environment: these are internal addresses.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def sample(self) -> ApiSample:
        """Scrape every worker at once; a worker that fails is an entry in `errors`, never an
        exception, so one sick worker cannot end the load run's sampling."""
        t = time.time()
        with ThreadPoolExecutor(max_workers=min(len(self.metrics_urls), 16)) as pool:
            answers = list(pool.map(self._scrape, self.metrics_urls))
        texts = {url: a for url, (a, ok) in zip(self.metrics_urls, answers, strict=True) if ok}
        errors = {url: a for url, (a, ok) in zip(self.metrics_urls, answers, strict=True) if not ok}
        return sample_from(t, texts, errors)

    def _scrape(self, url: str) -> tuple[str, bool]:
        """(the exposition text, True), or (why there is none, False)."""
        try:
            with self._opener.open(url, timeout=self.timeout_s) as resp:
                if resp.status != 200:
                    return f"answered {resp.status}", False
                return resp.read().decode(), True
        except urllib.error.HTTPError as exc:
            return f"answered {exc.code}", False
        except urllib.error.URLError as exc:
            return f"unreachable ({exc.reason})", False
        except Exception as exc:  # a timeout, a reset, a body that is not text: no answer
            return f"{type(exc).__name__}: {exc}", False


def sample_from(
    t: float, texts: Mapping[str, str], errors: Mapping[str, str] | None = None
) -> ApiSample:
    """One ApiSample from each answering worker's exposition text (url -> text) and each silent
    worker's reason (url -> reason)."""
    requests: dict[str, float] = {}
    buckets: dict[float, float] = {}
    failures: dict[str, float] = {}
    started: dict[str, float] = {}
    problems = [f"{url}: {why}" for url, why in (errors or {}).items()]
    missing: list[str] = []
    for url, text in texts.items():
        try:
            worker = parse_worker(text)
        except Exception as exc:  # the parser's errors are plain ValueErrors and worse
            problems.append(f"{url}: not Prometheus text ({type(exc).__name__}: {exc})")
            continue
        if worker is None:
            problems.append(f"{url}: exposes no {REQUESTS} (not a chatsdk worker's /metrics?)")
            continue
        requests[url] = worker.requests
        if worker.started is not None:
            started[url] = worker.started
        for reason, count in worker.pool_failures.items():
            failures[reason] = failures.get(reason, 0.0) + count
        if worker.pool_wait is None:
            missing.append(url)
            continue
        for le, count in worker.pool_wait.items():
            buckets[le] = buckets.get(le, 0.0) + count
    return ApiSample(
        t=t,
        requests_by_worker=requests,
        pool_wait_buckets={} if missing else buckets,
        errors=tuple(problems),
        pool_wait_missing=tuple(missing),
        pool_failures=failures,
        started_by_worker=started,
    )


def parse_worker(text: str) -> _Worker | None:
    """The figures' series in one worker's exposition; None without http_requests_total."""
    declared = False
    requests = 0.0
    wait: dict[float, float] | None = None
    failures: dict[str, float] = {}
    started: float | None = None
    for family in text_string_to_metric_families(text):
        declared = declared or family.name in (REQUESTS, REQUESTS.removesuffix("_total"))
        for s in family.samples:
            if s.name == REQUESTS and s.labels.get("route") not in SERVICE_ROUTES:
                requests += s.value
            elif s.name == POOL_WAIT_BUCKET:
                wait = {} if wait is None else wait
                le = float(s.labels["le"])
                wait[le] = wait.get(le, 0.0) + s.value
            elif s.name == POOL_FAILURES:
                reason = s.labels.get("reason", "")
                failures[reason] = failures.get(reason, 0.0) + s.value
            elif s.name == STARTED:
                started = s.value
    return _Worker(requests, wait, failures, started) if declared else None


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative buckets (le -> count, +Inf included):
    linear interpolation inside the bucket the rank falls in, the first bucket starting at 0;
    a rank in the +Inf bucket gives the largest finite bound. NaN when there is nothing."""
    ordered = sorted(buckets.items())
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    total = ordered[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    index = next(i for i, (_le, count) in enumerate(ordered) if count >= rank)
    if index == len(ordered) - 1:
        return ordered[-2][0]
    upper, count = ordered[index]
    if index == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if index == 0 else ordered[index - 1]
    in_bucket = count - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * ((rank - below) / in_bucket)


def window(
    samples: Sequence[ApiSample], start: float, end: float
) -> tuple[ApiSample, ApiSample] | None:
    """The first sample at or after `start` and the last at or before `end`, when they differ."""
    inside = sorted((s for s in samples if start <= s.t <= end), key=lambda s: s.t)
    if len(inside) < 2:
        return None
    return inside[0], inside[-1]


def _compute(
    samples: Sequence[ApiSample], start: float, end: float
) -> tuple[dict[str, tuple[float, str]], dict[str, Any]]:
    in_window = [s for s in samples if start <= s.t <= end]
    details: dict[str, Any] = {
        "samples": len(samples),
        "samples_in_window": len(in_window),
        "window": {"start": start, "end": end},
        "errors": sorted({e for s in in_window for e in s.errors}),
    }
    pair = window(samples, start, end)
    if pair is None:
        why = "fewer than 2 scrapes of the API workers inside the full-scale window"
        details["absent"] = {POOL_WAIT_P95: why, WORKER_SHARE: why}
        details["figures"] = {}
        return {}, details
    first, last = pair
    details["samples_used"] = {"first_t": first.t, "last_t": last.t}
    broken = _incomparable(first, last)
    # Both computed even when broken: their parts (per-worker counts...) go in the record.
    share = _worker_share(first, last, details)
    wait = _pool_wait_p95(first, last, details)
    outcomes = {WORKER_SHARE: broken or share, POOL_WAIT_P95: broken or wait}
    figures = {k: v for k, v in outcomes.items() if not isinstance(v, str)}
    details["absent"] = {k: v for k, v in outcomes.items() if isinstance(v, str)}
    details["figures"] = {k: {"value": v, "unit": u} for k, (v, u) in figures.items()}
    return figures, details


def _incomparable(first: ApiSample, last: ApiSample) -> str:
    """Why the difference of two scrapes is not the work done between them ("" when it is)."""
    unanswered = [*first.errors, *last.errors]
    if unanswered:
        return f"a worker did not answer the window's first or last scrape ({unanswered[0]})"
    if set(first.requests_by_worker) != set(last.requests_by_worker):
        return "the window's first and last scrapes cover different workers"
    for url, started in sorted(last.started_by_worker.items()):
        if first.started_by_worker.get(url, started) != started:
            return f"worker {url} restarted inside the window (its counters started again)"
    for url, count in sorted(last.requests_by_worker.items()):
        if count < first.requests_by_worker[url]:
            return f"worker {url} restarted inside the window (its request count went down)"
    return ""


def _worker_share(
    first: ApiSample, last: ApiSample, details: dict[str, Any]
) -> tuple[float, str] | str:
    deltas = {
        u: c - first.requests_by_worker[u]
        for u, c in last.requests_by_worker.items()
        if u in first.requests_by_worker
    }
    details["requests_by_worker"] = dict(sorted(deltas.items()))
    total = sum(deltas.values())
    if len(deltas) < 2:
        return "fewer than 2 API workers: there is no spread to measure"
    if total <= 0:
        return "no API requests reached the workers inside the window"
    return max(deltas.values()) / (total / len(deltas)), "x"


def _pool_wait_p95(
    first: ApiSample, last: ApiSample, details: dict[str, Any]
) -> tuple[float, str] | str:
    details["pool_failures"] = {
        reason: count - first.pool_failures.get(reason, 0.0)
        for reason, count in sorted(last.pool_failures.items())
    }
    missing = sorted({*first.pool_wait_missing, *last.pool_wait_missing})
    if missing:
        return f"worker {missing[0]} does not expose db_pool_wait_seconds"
    if set(first.pool_wait_buckets) != set(last.pool_wait_buckets):
        return "db_pool_wait_seconds changed its buckets inside the window"
    wait = {le: c - first.pool_wait_buckets[le] for le, c in last.pool_wait_buckets.items()}
    details["pool_wait_buckets"] = {_le_text(le): c for le, c in sorted(wait.items())}
    details["pool_wait_count"] = wait.get(math.inf, 0.0)
    if math.inf not in wait:
        return "db_pool_wait_seconds has no +Inf bucket"
    if any(c < 0 for c in wait.values()):
        return "db_pool_wait_seconds went down inside the window (a restart)"
    if wait[math.inf] <= 0:
        return "no database connection was acquired inside the window"
    return histogram_quantile(QUANTILE, wait) * 1000.0, "ms"


def _le_text(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(le)


def api_figures(
    samples: Sequence[ApiSample], start: float, end: float
) -> dict[str, tuple[float, str]]:
    """{"db_pool_wait_p95_ms": (ms, "ms"), "worker_share_max_over_fair": (ratio, "x")} over the
    window [start, end]; a figure that cannot be computed honestly is left out (the reason is in
    `api_details(...)["absent"]`)."""
    return _compute(samples, start, end)[0]


def api_details(samples: Sequence[ApiSample], start: float, end: float) -> dict[str, Any]:
    """For the record: per-worker request counts and pool waits in the window, the scrapes
    used, the workers' errors, and why a figure is absent."""
    return _compute(samples, start, end)[1]

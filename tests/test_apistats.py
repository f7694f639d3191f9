"""preflight.load.apistats: the pool-wait p95 and the busiest worker's share, from the workers' own
/metrics. The math runs on exposition text that real prometheus_client registries render (the
API's own Metrics class), the quantile is checked against Prometheus' own engine (promtool),
every case where a figure cannot be honest leaves it absent, and a real two-worker stack is
scraped before and after traffic."""

from __future__ import annotations

import http.server
import math
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from chatsdk.metrics import Metrics
from prometheus_client import CollectorRegistry, Counter, ProcessCollector, generate_latest

from preflight.client import ChatClient, expect
from preflight.load.apistats import (
    POOL_WAIT_P95,
    WORKER_SHARE,
    ApiSample,
    ApiSampler,
    api_details,
    api_figures,
    histogram_quantile,
    sample_from,
)
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeOptions, NativeTarget
from preflight.targets.procs import free_port

A = "http://127.0.0.1:9001/metrics"
B = "http://127.0.0.1:9002/metrics"


class Worker:
    """One API worker's real metrics registry, driven by hand."""

    def __init__(self) -> None:
        self.metrics = Metrics()

    def serve(self, n: int, route: str = "/v1/channels/{channel_id}/messages") -> Worker:
        self.metrics.http_requests.labels("POST", route, "201").inc(n)
        return self

    def wait(self, seconds: float, times: int = 1) -> Worker:
        for _ in range(times):
            self.metrics.db_pool_wait.observe(seconds)
        return self

    def text(self) -> str:
        return self.metrics.render().decode()


def pair(
    before: dict[str, str], after: dict[str, str], **errors: str
) -> tuple[list[ApiSample], float, float]:
    """Two samples, at t=10 and t=20, and a window [5, 25] holding both."""
    return [sample_from(10.0, before), sample_from(20.0, after, errors or None)], 5.0, 25.0


def test_p95_interpolates_inside_the_bucket() -> None:
    a = Worker()
    before = {A: a.text()}
    a.serve(1).wait(0.0003, 90).wait(0.2, 10)  # rank 95 is the 5th of 10 in (0.1, 0.25]
    figures = api_figures(*pair(before, {A: a.text()}))
    assert figures[POOL_WAIT_P95] == pytest.approx((175.0, "ms"))


def test_p95_in_the_inf_bucket_is_the_largest_finite_bound() -> None:
    a = Worker()
    before = {A: a.text()}
    a.serve(1).wait(0.001, 4).wait(7.0, 96)
    assert api_figures(*pair(before, {A: a.text()}))[POOL_WAIT_P95] == (5000.0, "ms")


def test_the_window_only_counts_what_happened_inside_it() -> None:
    a, b = Worker().wait(9.0, 1000), Worker()  # long waits before the window: not counted
    samples = []
    for t in (0.0, 10.0, 20.0, 30.0, 40.0):
        samples.append(sample_from(t, {A: a.text(), B: b.text()}))
        a.serve(100).wait(0.002, 50)
        b.serve(50).wait(0.002, 50)
    figures = api_figures(samples, 5.0, 35.0)  # the samples at 10 and 30
    details = api_details(samples, 5.0, 35.0)
    assert details["samples_used"] == {"first_t": 10.0, "last_t": 30.0}
    assert details["requests_by_worker"] == {A: 200.0, B: 100.0}
    assert details["pool_wait_count"] == 200.0
    assert figures[WORKER_SHARE] == pytest.approx((200 / 150, "x"))
    assert figures[POOL_WAIT_P95][0] <= 2.5, "waits from before the window leaked into it"


def test_the_share_leaves_out_scrapes_and_health_checks() -> None:
    a, b = Worker(), Worker()
    before = {A: a.text(), B: b.text()}
    a.serve(300).serve(1000, "/metrics").wait(0.001)
    b.serve(100).serve(500, "/v1/health/ready").serve(70, "/v1/health/live")
    figures = api_figures(*pair(before, {A: a.text(), B: b.text()}))
    assert figures[WORKER_SHARE] == pytest.approx((1.5, "x"))


def test_control_an_even_spread_is_one() -> None:
    a, b = Worker(), Worker()
    before = {A: a.text(), B: b.text()}
    a.serve(250).wait(0.001)
    b.serve(250)
    assert api_figures(*pair(before, {A: a.text(), B: b.text()}))[WORKER_SHARE] == (1.0, "x")


def test_the_quantile_is_prometheus_own(tmp_path: Path) -> None:
    """The same buckets through promtool's PromQL engine give the same number."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/setup.sh installs it)")
    a = Worker().wait(0.0003, 37).wait(0.004, 51).wait(0.04, 9).wait(0.3, 3)
    sample = sample_from(0.0, {A: a.text()})
    ours = histogram_quantile(0.95, sample.pool_wait_buckets)
    series = [
        {
            "series": f'db_pool_wait_seconds_bucket{{le="{"+Inf" if math.isinf(le) else le}"}}',
            "values": str(count),
        }
        for le, count in sample.pool_wait_buckets.items()
    ]
    test = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": "histogram_quantile(0.95, db_pool_wait_seconds_bucket)",
                        "eval_time": "0m",
                        "exp_samples": [{"labels": "{}", "value": ours}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "quantile.test.yml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, (
        f"histogram_quantile must match Prometheus' (ours {ours}; promtool: {done.stdout})"
    )


def test_quantile_of_nothing_is_nan() -> None:
    assert math.isnan(histogram_quantile(0.95, {}))
    assert math.isnan(histogram_quantile(0.95, {0.1: 0.0, math.inf: 0.0}))


# Absent figures: each case names why, and the other figure survives where it still can.


def other_process_registry(pid: int, requests: int) -> str:
    """A worker's exposition as a restarted process would render it: another start time."""
    registry = CollectorRegistry()
    counter = Counter("http_requests", "", ["method", "route", "status"], registry=registry)
    counter.labels("POST", "/v1/tokens", "201").inc(requests)
    ProcessCollector(pid=lambda: pid, registry=registry)
    return generate_latest(registry).decode()


def absent(samples: Sequence[ApiSample], start: float, end: float) -> dict[str, str]:
    reasons: dict[str, str] = api_details(samples, start, end)["absent"]
    assert set(reasons).isdisjoint(api_figures(samples, start, end))
    return reasons


def test_one_sample_in_the_window_gives_nothing() -> None:
    a = Worker().serve(5).wait(0.001)
    samples = [sample_from(1.0, {A: a.text()}), sample_from(10.0, {A: a.text()})]
    reasons = absent(samples, 5.0, 20.0)
    assert set(reasons) == {POOL_WAIT_P95, WORKER_SHARE}
    assert "fewer than 2 scrapes" in reasons[POOL_WAIT_P95]


def test_a_worker_silent_at_the_end_gives_nothing() -> None:
    a, b = Worker(), Worker()
    before = {A: a.text(), B: b.text()}
    a.serve(10).wait(0.001)
    b.serve(10)
    reasons = absent(*pair(before, {A: a.text()}, **{B: "unreachable (refused)"}))
    assert set(reasons) == {POOL_WAIT_P95, WORKER_SHARE}
    assert B in reasons[WORKER_SHARE]


def test_different_workers_at_both_ends_give_nothing() -> None:
    a, b = Worker(), Worker()
    before = {A: a.text()}
    a.serve(10).wait(0.001)
    reasons = absent(*pair(before, {A: a.text(), B: b.serve(10).text()}))
    assert set(reasons) == {POOL_WAIT_P95, WORKER_SHARE}


def test_a_counter_that_went_down_gives_nothing() -> None:
    a, b = Worker().serve(500).wait(0.001, 10), Worker().serve(500)
    before = {A: a.text(), B: b.text()}
    a.serve(10)
    restarted = Worker().serve(3)  # same process start time here: only the count shows it
    reasons = absent(*pair(before, {A: a.text(), B: restarted.text()}))
    assert set(reasons) == {POOL_WAIT_P95, WORKER_SHARE}
    assert "restarted" in reasons[WORKER_SHARE]


def test_a_restart_that_climbed_back_past_the_count_gives_nothing() -> None:
    a = Worker().serve(10)
    child = subprocess.Popen(["sleep", "30"])
    try:
        b_before = other_process_registry(1, 10)  # pid 1 started long ago
        b_after = other_process_registry(child.pid, 500)
    finally:
        child.kill()
        child.wait(timeout=5)
    before = {A: a.text(), B: b_before}
    a.serve(10)
    reasons = absent(*pair(before, {A: a.text(), B: b_after}))
    assert "restarted" in reasons[WORKER_SHARE]
    assert B in reasons[WORKER_SHARE]


def test_no_acquisition_in_the_window_leaves_only_the_share() -> None:
    a, b = Worker().wait(0.001, 10), Worker()
    before = {A: a.text(), B: b.text()}
    a.serve(10)
    b.serve(10)
    samples, start, end = pair(before, {A: a.text(), B: b.text()})
    assert absent(samples, start, end) == {
        POOL_WAIT_P95: "no database connection was acquired inside the window"
    }
    assert api_figures(samples, start, end)[WORKER_SHARE] == (1.0, "x")


def test_a_worker_without_the_histogram_leaves_only_the_share() -> None:
    a = Worker()
    before = {A: a.text(), B: other_process_registry(1, 10)}
    a.serve(10).wait(0.001)
    samples, start, end = pair(before, {A: a.text(), B: other_process_registry(1, 20)})
    reasons = absent(samples, start, end)
    assert set(reasons) == {POOL_WAIT_P95}
    assert "does not expose db_pool_wait_seconds" in reasons[POOL_WAIT_P95]
    assert api_figures(samples, start, end)[WORKER_SHARE] == (1.0, "x")


def test_one_worker_has_no_spread() -> None:
    a = Worker()
    before = {A: a.text()}
    a.serve(10).wait(0.001)
    samples, start, end = pair(before, {A: a.text()})
    assert set(absent(samples, start, end)) == {WORKER_SHARE}
    assert POOL_WAIT_P95 in api_figures(samples, start, end)


def test_no_request_has_no_spread() -> None:
    a, b = Worker(), Worker()
    before = {A: a.text(), B: b.text()}
    a.serve(40, "/metrics").wait(0.001)
    reasons = absent(*pair(before, {A: a.text(), B: b.text()}))
    assert set(reasons) == {WORKER_SHARE}


def test_text_from_something_else_is_an_error() -> None:
    registry = CollectorRegistry()
    Counter("requests", "not the API's", registry=registry).inc()
    sample = sample_from(1.0, {A: generate_latest(registry).decode(), B: "<html>hello</html>"})
    assert sample.requests_by_worker == {}
    assert [e.split(": ", 1)[0] for e in sample.errors] == [A, B]


# The sampler against real sockets: it never raises.


@pytest.fixture
def not_found_server() -> Iterator[str]:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_sampler_reports_silent_workers_instead_of_raising(not_found_server: str) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/metrics"
    sample = ApiSampler([nobody, not_found_server], timeout_s=1.0).sample()
    assert sample.requests_by_worker == {}
    assert sample.errors[0].startswith(f"{nobody}: unreachable")
    assert sample.errors[1] == f"{not_found_server}: answered 404"


# A real stack: two workers behind the edge.


@pytest.fixture(scope="module")
def stack() -> Iterator[TargetInfo]:
    with NativeTarget(NativeOptions(workers=2, api_rate_per_s=5000)) as info:
        yield info


TOKENS = 40


def test_a_real_stack_gives_both_figures_after_traffic(stack: TargetInfo) -> None:
    sampler = ApiSampler(stack.observability.metrics_urls)
    idle = [sampler.sample(), sampler.sample()]
    chat = ChatClient.for_target(stack)
    try:
        created = expect(chat.as_admin(stack.admin_key).post("/v1/apps", {"name": "stats"}), 201)
        backend = chat.as_app(created["api_key"])
        for i in range(TOKENS):
            expect(backend.post("/v1/tokens", {"user_id": f"u{i}"}), 201)
    finally:
        chat.close()
    samples = [*idle, sampler.sample()]
    start, end = samples[1].t, samples[2].t
    figures = api_figures(samples, start, end)
    details = api_details(samples, start, end)
    assert details["errors"] == [], details["errors"]
    assert sum(details["requests_by_worker"].values()) == TOKENS + 1, details
    assert details["pool_wait_count"] >= TOKENS + 1, details
    assert set(figures) == {POOL_WAIT_P95, WORKER_SHARE}, details["absent"]
    share, unit = figures[WORKER_SHARE]
    assert unit == "x"
    assert 1.0 <= share <= 2.0  # two workers: between even and all on one
    wait_ms, unit = figures[POOL_WAIT_P95]
    assert unit == "ms"
    assert 0.0 < wait_ms < 5000.0

    # Control: between the two idle scrapes no API request reached a worker (scrapes and
    # health checks do not count), so there is no spread to report.
    assert WORKER_SHARE not in api_figures(idle, idle[0].t, idle[1].t)

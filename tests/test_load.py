"""The load runner against a real native target: Locust in its own processes (never in this
one), the smoke profile shortened to seconds, figures for every metric a Locust run can measure,
and the decisions they lead to. Timing and throughput are never asserted: the machine is shared.

The edge's per-IP limits are raised (NativeOptions.api_rate_per_s): every Locust user comes from
127.0.0.1, so the default 100 requests/s per address would turn a load run into a 429 test.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import ipaddress
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from preflight.checklist import Item, load_checklist
from preflight.decide import decide_load
from preflight.load.figures import RunData, summarise
from preflight.load.guards import Thresholds
from preflight.load.locust import (
    LOADTESTS,
    LOOPBACK_SOURCE_NET,
    LocustRunner,
    cost_line,
    progress_line,
)
from preflight.load.results import LoadResults
from preflight.load.scaling import HOST_BOUND
from preflight.outcomes import Outcome
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeOptions, NativeTarget

pytestmark = pytest.mark.native

LOCUSTFILE = str(LOADTESTS / "locustfile.py")
# smoke, shortened further for the suite: 6 users in rooms of 3, 10 s at full scale.
TINY: dict[str, Any] = {
    "users": 6,
    "spawn_rate": 6,
    "hold_s": 10,
    "room_size": 3,
    "early_stop": {"window_s": 4, "error_ratio_pct": 50, "min_requests": 5},
}
MEASURED = (
    "concurrent_users",
    "ws_connections_open",
    "error_ratio_pct",
    "api_latency_p95_ms",
    "ws_delivery_p95_ms",
    "messages_per_s",
    # from the target, alongside Locust (preflight/load/headroom.py, preflight/load/apistats.py)
    "db_pool_wait_p95_ms",
    "worker_share_max_over_fair",
    "cpu_used_pct_max",
    "memory_used_pct_max",
    "max_resource_saturation_pct",
)
NOT_MEASURED = ("throughput_scaling_ratio_2x_workers",)  # smoke has no scaling step


def load_items() -> list[Item]:
    return [i for i in load_checklist().items if i.verify == "load"]


def locust_processes(since: float) -> list[str]:
    """Locust processes this test process started since `since` that still run (the suite's
    other processes run Locust of their own meanwhile)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmdline = proc.cmdline()
            if proc.create_time() >= since - 1 and LOCUSTFILE in cmdline:
                found.append(" ".join(cmdline))
    return found


@pytest.fixture(scope="module")
def target() -> Iterator[TargetInfo]:
    with NativeTarget(NativeOptions(workers=2, api_rate_per_s=5000, ws_rate_per_s=5000)) as info:
        yield info


@pytest.fixture
def no_locust_left() -> Iterator[None]:
    since = time.time()
    yield
    assert not locust_processes(since), "a Locust process outlived its run"


@pytest.fixture(scope="module")
def smoke(target: TargetInfo) -> RunData:
    return LocustRunner(overrides=TINY).collect(target, "smoke", 1)


@pytest.mark.usefixtures("no_locust_left")
def test_smoke_run_measures_every_locust_metric(smoke: RunData) -> None:
    results = summarise(smoke, Thresholds())
    assert results.ran, results.reason
    assert results.valid, results.invalid_reason
    assert results.reason == ""
    missing = [m for m in MEASURED if m not in results.figures]
    assert not missing, f"the smoke run produced no figure for {missing}"
    assert not [m for m in NOT_MEASURED if m in results.figures]
    assert results.figures["error_ratio_pct"].measured == 0.0, results.to_json()["errors"]
    assert results.scale_reached["users"] == TINY["users"]
    assert results.scale_reached["ws_connections"] == TINY["users"]
    assert results.scale_reached["duration_s"] > 0
    record = results.to_json()
    for kind in ("POST /v1/channels/{id}/messages [send]", "GET /v1/channels", "WS delivery"):
        stats = record["requests"][kind]
        assert stats["requests"] > 0
        assert {"failures", "p50_ms", "p95_ms", "p99_ms"} <= set(stats)
    assert record["timeseries"]
    assert {"users", "requests_per_s", "http_p95_ms"} <= set(record["timeseries"][0])
    assert record["generator"]["mode"] == "local"
    assert record["generator"]["exit_codes"] == {"locust-master": 0}


def test_each_load_user_reaches_the_edge_from_its_own_address(
    target: TargetInfo, smoke: RunData
) -> None:
    """On loopback the users are spread over 127.64.0.0/10 (loadtests/sources.py), HTTP and
    WebSocket alike, so the edge's per-address limits see a crowd, not one client."""
    network = ipaddress.ip_network(LOOPBACK_SOURCE_NET)
    assert summarise(smoke, Thresholds()).to_json()["generator"]["source_net"] == str(network)
    access_log = next(p for p in target.observability.log_files if p.name == "access.log")
    by_kind: dict[str, set[str]] = collections.defaultdict(set)
    for line in access_log.read_text().splitlines():
        entry = json.loads(line)
        address = ipaddress.ip_address(entry["remote_addr"])
        if address in network:
            kind = "ws" if entry["uri"].startswith("/v1/realtime") else "http"
            by_kind[kind].add(str(address))
    assert len(by_kind["http"]) >= 2, f"HTTP requests came from {sorted(by_kind['http'])}"
    assert len(by_kind["ws"]) >= 2, f"WebSockets came from {sorted(by_kind['ws'])}"
    assert by_kind["ws"] <= by_kind["http"], "a user's socket comes from the user's address"


def test_items_beyond_the_smoke_scale_stay_unverified_with_the_figures(smoke: RunData) -> None:
    results = summarise(smoke, Thresholds())
    for item in load_items():
        decision = decide_load(item, results)
        assert decision.outcome is Outcome.UNVERIFIED, (item.id, decision.reason)
        figure = results.figures.get(item.metric or "")
        if figure is not None:
            assert "did not reach the item's scale" in decision.reason
            assert decision.figures["measured"] == figure.measured
            assert decision.figures["scale"]["reached"] == results.scale_reached
        else:
            assert f"did not measure {item.metric}" in decision.reason


def test_an_item_within_the_reached_scale_is_decided(smoke: RunData) -> None:
    results = summarise(smoke, Thresholds())
    template = next(i for i in load_items() if i.id == "PERF-ERROR-RATIO")
    small = dataclasses.replace(template, scale={"users": TINY["users"]})
    decision = decide_load(small, results)
    assert decision.outcome is Outcome.PASS, decision.reason


def test_a_saturated_generator_makes_the_run_no_evidence(smoke: RunData) -> None:
    """The same run judged with a CPU limit its generator exceeded (any use at all)."""
    results = summarise(smoke, Thresholds(saturation_pct=0.0))
    assert results.ran
    assert not results.valid
    assert "saturated" in results.invalid_reason
    template = next(i for i in load_items() if i.id == "PERF-ERROR-RATIO")
    decision = decide_load(dataclasses.replace(template, scale={"users": 1}), results)
    assert decision.outcome is Outcome.UNVERIFIED
    assert "saturated" in decision.reason


@pytest.mark.usefixtures("no_locust_left")
def test_a_broken_target_stops_the_run_early(target: TargetInfo) -> None:
    broken = dataclasses.replace(target, admin_key="not-the-admin-key")
    runner = LocustRunner(overrides={**TINY, "hold_s": 120})
    started = time.monotonic()
    results = runner(broken, "smoke", 1, load_items())
    assert time.monotonic() - started < 90, "the run was not stopped early"
    assert results.ran
    assert results.reason.startswith("stopped early: error ratio 100.0 %"), results.reason
    # Six users keep one generator process far from its limit: the stop is the target's.
    assert results.valid, results.invalid_reason
    assert results.figures["error_ratio_pct"].measured == 100.0
    item = next(i for i in load_items() if i.id == "PERF-ERROR-RATIO")
    decision = decide_load(item, results)
    assert decision.outcome is Outcome.UNVERIFIED
    assert "stopped early: error ratio" in decision.reason


@pytest.mark.usefixtures("no_locust_left")
def test_two_workers_run_master_and_workers_and_aggregate(target: TargetInfo) -> None:
    results = LocustRunner(overrides=TINY)(target, "smoke", 2, load_items())
    assert results.ran, results.reason
    assert results.valid, results.invalid_reason
    record = results.to_json()
    assert record["generator"]["mode"] == "master/worker"
    assert set(record["generator"]["exit_codes"]) == {
        "locust-master",
        "locust-worker-1",
        "locust-worker-2",
    }
    assert set(record["generator"]["cpu_by_process"]) == set(record["generator"]["exit_codes"])
    # Each worker process creates its own app: two app creations reached the master's stats,
    # and the sockets both workers hold add up to every user's.
    assert record["requests"]["POST setup: /v1/apps"]["requests"] == 2
    assert results.scale_reached["users"] == TINY["users"]
    assert results.scale_reached["ws_connections"] == TINY["users"]
    assert "api_latency_p95_ms" in results.figures


def test_an_early_stop_of_a_saturated_generator_blames_the_generator(smoke: RunData) -> None:
    """The same run as if its SLO had stopped it at the end while its generator used more than
    a limit of 0 %: the figures that stopped it are the generator's, and the run says so."""
    stopped = dataclasses.replace(
        smoke, stopped_early="API p95 13000 ms over the last 4 s", stopped_at=smoke.cpu[-1].t
    )
    results = summarise(stopped, Thresholds(window_s=4.0, saturation_pct=0.0))
    assert not results.valid
    assert "before the stop" in results.invalid_reason, results.invalid_reason
    assert (
        "the early stop (API p95 13000 ms over the last 4 s) measured the generator, not the "
        "target" in results.invalid_reason
    )
    item = next(i for i in load_items() if i.id == "PERF-API-P95")
    decision = decide_load(dataclasses.replace(item, scale={"users": 1}), results)
    assert decision.outcome is Outcome.UNVERIFIED
    assert "measured the generator" in decision.reason


def test_the_record_puts_the_generators_cpu_per_request_beside_the_targets(
    smoke: RunData,
) -> None:
    results = summarise(smoke, Thresholds())
    cost = results.to_json()["cpu_per_request"]
    assert cost["http_requests"] > 0
    assert cost["generator_cpu_s"] > 0
    assert cost["generator_ms_per_request"] > 0
    # The native target's processes are this machine's: their CPU is read alongside.
    assert cost["target_cpu_s"] > 0
    assert cost["target_ms_per_request"] > 0
    line = cost_line(results)
    assert line.startswith(f"load: CPU per HTTP request ({cost['http_requests']} requests): "), line
    assert f"generator {cost['generator_ms_per_request']:g} ms" in line
    assert f"target {cost['target_ms_per_request']:g} ms" in line


def test_no_load_items_runs_nothing(target: TargetInfo) -> None:
    results = LocustRunner(overrides=TINY)(target, "smoke", 1, [])
    assert results == LoadResults(profile="smoke", ran=False, reason="no load items selected")


def api_ready(target: TargetInfo, index: int) -> int:
    url = target.observability.metrics_urls[index].removesuffix("/metrics") + "/v1/health/ready"
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - the native target's
        return int(resp.status)


@pytest.mark.usefixtures("no_locust_left")
def test_the_scaling_step_compares_all_workers_with_half_and_restores_them(
    target: TargetInfo,
) -> None:
    """PERF-HSCALE: two closed-loop runs, with api-0 and api-1 and with api-0 alone; api-1 is
    serving again afterwards."""
    scaling = {"users": 4, "spawn_rate": 4, "hold_s": 6}
    runner = LocustRunner(overrides={**TINY, "hold_s": 4, "scaling": scaling})
    hscale = [i for i in load_items() if i.id == "PERF-HSCALE"]
    results = runner(target, "smoke", 1, hscale)
    assert results.ran, results.reason
    detail = results.to_json()["scaling"]
    assert detail["stopped"] == ["api-1"]
    assert set(detail["workers"]) == {"2", "1"}
    assert detail["cpus_per_worker"] is None, "native workers share the host's cores"
    assert detail["bound"] == HOST_BOUND
    for step in detail["workers"].values():
        assert step["ok_requests_per_s"] > 0, detail
        assert step["scale"]["users"] == scaling["users"]
    figure = results.figures["throughput_scaling_ratio_2x_workers"]
    assert figure.measured == detail["ratio"] > 0
    assert figure.unit == "x"
    assert api_ready(target, 1) == 200, "the stopped worker was started again"


def test_without_two_controllable_workers_the_scaling_figure_is_absent_saying_why(
    target: TargetInfo,
) -> None:
    control = {k: v for k, v in target.drills.control.items() if k != "api-1"}
    one = dataclasses.replace(target, drills=dataclasses.replace(target.drills, control=control))
    settings = {"personas": {"active": 1}, "scaling": {"users": 4, "spawn_rate": 4, "hold_s": 6}}
    base = LoadResults(profile="smoke", ran=True)
    results = LocustRunner().with_scaling(one, "smoke", 1, settings, base)
    assert "throughput_scaling_ratio_2x_workers" not in results.figures
    reason = results.absent["throughput_scaling_ratio_2x_workers"]
    assert (
        reason
        == "no scaling figure: the target controls 1 API worker(s); halving needs two or more"
    )
    no_step = LocustRunner().with_scaling(target, "smoke", 1, {"personas": {}}, base)
    assert no_step.absent["throughput_scaling_ratio_2x_workers"] == (
        "no scaling figure: profile smoke defines no `scaling` step"
    )
    item = next(i for i in load_items() if i.id == "PERF-HSCALE")
    decision = decide_load(dataclasses.replace(item, scale={}), results)
    assert decision.outcome is Outcome.UNVERIFIED
    assert "halving needs two or more" in decision.reason


def test_progress_lines_say_what_the_run_is_doing(smoke: RunData) -> None:
    lines = [line for line in smoke.lines if line.get("entries") is not None]
    started = float(lines[0]["t"]) - 2.0
    text = progress_line(lines, started, 10.0)
    last = lines[-1]
    assert text.startswith(f"load: {float(last['t']) - started:.0f} s, {last['users']} users, ")
    assert f"{last['sockets']} sockets" in text
    assert "req/s, p95 " in text
    assert text.endswith("failures in the last 10 s")
    # With the samples taken meanwhile: the generator's CPU beside the target's.
    text = progress_line(lines, started, 10.0, smoke.cpu, smoke.resources)
    assert "failures in the last 10 s, CPU: generator " in text, text
    assert "% (busiest process " in text
    assert text.endswith(" %"), text
    assert ", target " in text, text

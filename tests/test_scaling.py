"""The PERF-HSCALE step's plan and verdict on recorded data (no Locust, no target here): which
workers take part and which are stopped, the per-worker CPU limit where the target gives one,
and a run the workers' limit did not bound is no evidence, as a saturated generator's is."""

from __future__ import annotations

import dataclasses
from typing import Any

from preflight.checklist import load_checklist
from preflight.decide import decide_load
from preflight.load.cpu_bound import throttling, unbounded
from preflight.load.figures import RunData
from preflight.load.guards import Thresholds
from preflight.load.results import LoadResults
from preflight.load.scaling import (
    DEFAULT_CPUS_PER_WORKER,
    HOST_BOUND,
    SCALING_METRIC,
    ScalingPlan,
    StepRun,
    plan_scaling,
    scaling_result,
)
from preflight.outcomes import Outcome
from preflight.targets.base import CpuStat, Drills, Edge, ShellControl, TargetInfo
from preflight.targets.containers.cpu import ContainerCpuLimits, parse_cpu_stat

SETTINGS = {"personas": {"active": 1}, "scaling": {"users": 50, "spawn_rate": 10, "hold_s": 20}}
CONTAINERS = ("api-1", "api-2", "realtime")  # what the edge sends /v1 to on containers


def target(controls: tuple[str, ...], limits: ContainerCpuLimits | None = None) -> TargetInfo:
    control = {name: ShellControl(name, {}) for name in controls}
    return TargetInfo(
        name="t",
        kind="containers" if limits else "native",
        edge=Edge(url="https://127.0.0.1:1"),
        admin_key="k",
        drills=Drills(control=control, cpu_limits=limits),
    )


def container_limits() -> ContainerCpuLimits:
    own = {"api-1": 2_000_000_000, "api-2": 2_000_000_000, "realtime": 1_000_000_000}
    return ContainerCpuLimits({n: f"run-{n}" for n in CONTAINERS}, own, host_cpus=2)


def run_data(n: int) -> RunData:
    lines = [
        {
            "t": float(t),
            "users": 50,
            "sockets": 0,
            "entries": {"GET /v1/channels": {"requests": n, "failures": 0, "hist": {"20": n}}},
        }
        for t in range(0, 22, 2)
    ]
    return RunData("release", {}, lines, cpu=[], workers=1, mode="local", exit_codes={})


def throttled(share: float, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    before = {name: CpuStat(100, 0, 0) for name in names}
    after = {name: CpuStat(300, int(200 * share), int(200 * share) * 50_000) for name in names}
    return throttling(before, after)


def test_on_containers_every_v1_upstream_is_limited_and_an_odd_one_sits_out() -> None:
    plan = plan_scaling(target((*CONTAINERS, "postgres"), container_limits()), "p", SETTINGS, {})
    assert isinstance(plan, ScalingPlan)
    assert (plan.workers, plan.stopped, plan.idle) == (["api-1", "api-2"], ["api-2"], ["realtime"])
    assert plan.cpus == DEFAULT_CPUS_PER_WORKER
    assert plan.overrides["users"] == 50
    assert plan.overrides["sockets_per_user"] == 0
    own = {**SETTINGS, "scaling": {**SETTINGS["scaling"], "cpus_per_worker": 0.5}}
    chosen = plan_scaling(target(CONTAINERS, container_limits()), "p", own, {})
    assert isinstance(chosen, ScalingPlan)
    assert chosen.cpus == 0.5


def test_without_per_worker_limits_the_api_components_are_halved_with_no_limit() -> None:
    plan = plan_scaling(target(("api-0", "api-1", "postgres", "redis")), "p", SETTINGS, {})
    assert isinstance(plan, ScalingPlan)
    assert (plan.workers, plan.stopped, plan.idle, plan.cpus) == (
        ["api-0", "api-1"],
        ["api-1"],
        [],
        None,
    )
    assert plan_scaling(target(("api-0",)), "p", SETTINGS, {}) == (
        "the target controls 1 API worker(s); halving needs two or more"
    )


def containers_plan() -> ScalingPlan:
    plan = plan_scaling(target(CONTAINERS, container_limits()), "release", SETTINGS, {})
    assert isinstance(plan, ScalingPlan)
    return plan


def test_runs_bounded_by_the_workers_limit_give_the_ratio_with_their_throttling() -> None:
    plan = containers_plan()
    full = StepRun(run_data(400), throttled(0.9, ("api-1", "api-2")))
    half = StepRun(run_data(200), throttled(0.95, ("api-1",)))
    results = scaling_result(LoadResults("release", True), plan, full, half, Thresholds())
    detail = results.details["scaling"]
    assert results.figures[SCALING_METRIC].measured == detail["ratio"] == 2.0
    assert detail["cpus_per_worker"] == DEFAULT_CPUS_PER_WORKER
    assert detail["idle"] == ["realtime"]
    assert detail["workers"]["1"]["throttling"]["api-1"] == {
        "periods": 200,
        "throttled": 190,
        "throttled_usec": 190 * 50_000,
        "throttled_share": 0.95,
    }
    assert "bound" not in detail


def test_a_run_whose_workers_were_not_throttled_is_no_evidence() -> None:
    plan = containers_plan()
    full = StepRun(run_data(300), throttled(0.1, ("api-1", "api-2")))
    half = StepRun(run_data(200), throttled(0.95, ("api-1",)))
    results = scaling_result(LoadResults("release", True), plan, full, half, Thresholds())
    assert SCALING_METRIC not in results.figures
    reason = results.absent[SCALING_METRIC]
    assert reason.startswith(
        "no scaling figure: the run with 2 worker(s) is no evidence: the workers' limit of "
        "0.25 CPU each did not bound it: throttled in api-1 10%, api-2 10% of their periods"
    )
    item = next(i for i in load_checklist().items if i.id == "PERF-HSCALE")
    decision = decide_load(dataclasses.replace(item, scale={}), results)
    assert decision.outcome is Outcome.UNVERIFIED
    assert "the workers' limit of 0.25 CPU each did not bound it" in decision.reason
    unread = StepRun(run_data(200), {})
    no_stat = scaling_result(LoadResults("release", True), plan, full, unread, Thresholds())
    assert "the run with 2 worker(s) is no evidence" in no_stat.absent[SCALING_METRIC]
    bounded_full = StepRun(run_data(300), throttled(0.9, ("api-1", "api-2")))
    only_half = scaling_result(
        LoadResults("release", True), plan, bounded_full, unread, Thresholds()
    )
    assert only_half.absent[SCALING_METRIC] == (
        "no scaling figure: the run with 1 worker(s) is no evidence: the throttling of api-1 "
        "could not be read before and after it"
    )


def test_without_limits_the_record_says_the_host_bound_both_runs() -> None:
    plan = plan_scaling(target(("api-0", "api-1")), "release", SETTINGS, {})
    assert isinstance(plan, ScalingPlan)
    results = scaling_result(
        LoadResults("release", True),
        plan,
        StepRun(run_data(300)),
        StepRun(run_data(200)),
        Thresholds(),
    )
    assert results.figures[SCALING_METRIC].measured == 1.5
    assert results.details["scaling"]["bound"] == HOST_BOUND
    assert results.details["scaling"]["cpus_per_worker"] is None
    assert "throttling" not in results.details["scaling"]["workers"]["2"]


def test_a_restarted_worker_counts_from_its_start_and_both_cgroup_versions_parse() -> None:
    seen = throttling({"api-1": CpuStat(900, 800, 5)}, {"api-1": CpuStat(100, 90, 7)})
    assert seen["api-1"]["periods"] == 100
    assert seen["api-1"]["throttled_share"] == 0.9
    assert unbounded(seen, ["api-1"], 0.25) is None
    v2 = "usage_usec 10\nnr_periods 40\nnr_throttled 30\nthrottled_usec 1200\n"
    assert parse_cpu_stat(v2) == CpuStat(40, 30, 1200)
    v1 = "nr_periods 40\nnr_throttled 30\nthrottled_time 1200000\n"
    assert parse_cpu_stat(v1) == CpuStat(40, 30, 1200)

"""Load decisions and the runner's arithmetic, on recorded data (no Locust here): pass/fail only
at the item's scale, an invalid run is never evidence, an early stop names its reason."""

from __future__ import annotations

import json
from typing import Any

from preflight.checklist import Item, load_checklist
from preflight.decide import decide_load, decide_load_gate
from preflight.load.guards import CpuSample, Thresholds, broken_slo, saturation
from preflight.load.results import LoadFigure, LoadResults
from preflight.load.series import Window, percentile
from preflight.outcomes import Outcome

SCALE = {"users": 500, "ws_connections": 1000, "duration_s": 300}


def item(item_id: str = "PERF-API-P95") -> Item:
    return next(i for i in load_checklist().items if i.id == item_id)


def results(measured: float, scale: dict[str, int], **kw: Any) -> LoadResults:
    figure = LoadFigure("api_latency_p95_ms", measured, scale, "ms")
    return LoadResults("release", True, figures={"api_latency_p95_ms": figure}, **kw)


def line(t: float, users: int, sockets: int, requests: int, failures: int) -> dict[str, Any]:
    entry = {"requests": requests, "failures": failures, "hist": {"20": requests}}
    return {"t": t, "users": users, "sockets": sockets, "entries": {"GET /v1/channels": entry}}


def test_at_scale_the_comparison_decides() -> None:
    assert decide_load(item(), results(120.0, SCALE)).outcome is Outcome.PASS
    failed = decide_load(item(), results(900.0, SCALE))
    assert failed.outcome is Outcome.FAIL
    assert "must be < 500 (measured 900" in failed.reason


def test_below_scale_stays_unverified_with_the_reached_figures_and_the_stop_reason() -> None:
    small = {"users": 40, "ws_connections": 40, "duration_s": 10}
    decision = decide_load(item(), results(900.0, small, reason="stopped early: error ratio 80 %"))
    assert decision.outcome is Outcome.UNVERIFIED
    assert decision.reason == (
        "load profile release did not reach the item's scale (users 40 of 500); "
        "stopped early: error ratio 80 %"
    )
    assert decision.figures["measured"] == 900.0
    assert decision.figures["scale"] == {"needed": {"users": 500}, "reached": small}


def test_an_invalid_run_is_not_evidence_even_at_scale() -> None:
    invalid = results(120.0, SCALE, valid=False, invalid_reason="the load generator saturated")
    decision = decide_load(item(), invalid)
    assert decision.outcome is Outcome.UNVERIFIED
    assert decision.reason.endswith("is not evidence: the load generator saturated")


def test_the_record_view_keeps_details_and_is_json() -> None:
    run = results(120.0, SCALE, scale_reached=SCALE, details={"timeseries": [{"t_s": 1.0}]})
    record = json.loads(json.dumps(run.to_json()))
    assert record["figures"]["api_latency_p95_ms"]["unit"] == "ms"
    assert record["timeseries"] == [{"t_s": 1.0}]
    assert record["valid"] is True
    assert record["scale_reached"] == SCALE


def test_percentile_follows_locusts_rule() -> None:
    hist = {10: 90, 100: 9, 1000: 1}
    assert percentile(hist, 0.5) == 10
    assert percentile(hist, 0.95) == 100
    assert percentile(hist, 0.99) == 1000  # the top 1 % of 100 requests is the slowest one
    assert percentile(hist, 1.0) == 1000
    assert percentile({}, 0.95) == 0


def test_full_scale_is_the_intervals_held_at_the_peak() -> None:
    lines = [
        line(0, 5, 5, 1, 0),
        line(2, 10, 8, 1, 0),
        line(4, 10, 9, 1, 0),  # workers' socket reports lag: settled after 3 s
        line(6, 10, 10, 1, 0),
        line(8, 10, 10, 1, 0),
        line(9, 0, 0, 1, 0),
    ]
    window = Window.of(lines)
    assert window.users == 10
    assert window.scale() == {"users": 10, "ws_connections": 10, "duration_s": 6}
    assert [w["t"] for w in window.lines] == [4, 6, 8]


def test_early_stop_waits_for_the_ramp_and_enough_requests() -> None:
    limits = Thresholds(window_s=4, error_ratio_pct=50, min_requests=10)
    failing = [line(t, 10, 0, 10, 9) for t in (1, 3, 5)]
    assert broken_slo(failing, ramp_s=10, started=0, limits=limits) is None  # still ramping
    assert broken_slo([line(11, 10, 0, 5, 5)], 10, 0, limits) is None  # too few requests
    reason = broken_slo([line(t, 10, 0, 10, 9) for t in (11, 13)], 10, 0, limits)
    assert reason == (
        "error ratio 90.0 % over the last 4 s after the ramp (early-stop threshold 50 %)"
    )


def test_saturation_is_judged_at_full_scale() -> None:
    window = Window.of([line(t, 10, 10, 1, 0) for t in (0, 2, 4, 6)])
    busy = [CpuSample(t, {"locust-master": 97.0}) for t in (1, 3, 5)]
    calm = [CpuSample(t, {"locust-master": 45.0, "locust-worker-1": 50.0}) for t in (1, 3, 5)]
    reason = saturation(busy, window, cores=2, limits=Thresholds())
    assert reason is not None
    assert "locust-master used 97 %" in reason
    assert saturation(calm, window, cores=2, limits=Thresholds()) is None
    assert saturation(calm, window, cores=1, limits=Thresholds()) is not None  # 95 % of 1 core
    ramp_spike = [CpuSample(-10, {"locust-master": 100.0}), *calm]
    assert saturation(ramp_spike, window, cores=2, limits=Thresholds()) is None


def test_the_load_gate_item_passes_only_when_every_other_load_item_passed_at_scale() -> None:
    gate = item("DEP-LOAD-GREEN")
    at_scale = results(120.0, SCALE, scale_reached=SCALE)
    passed = decide_load(item(), at_scale)
    failed = decide_load(item(), results(900.0, SCALE, scale_reached=SCALE))
    assert (passed.outcome, failed.outcome) == (Outcome.PASS, Outcome.FAIL)

    assert decide_load_gate(gate, [passed, passed], at_scale).outcome is Outcome.PASS
    red = decide_load_gate(gate, [passed, failed], at_scale)
    assert red.outcome is Outcome.FAIL
    assert red.reason.endswith("measured 1 with profile release): PERF-API-P95 failed")

    small = {"users": 40, "ws_connections": 40, "duration_s": 10}
    undecided = decide_load(item(), results(120.0, small))
    pending = decide_load_gate(gate, [passed, undecided], at_scale)
    assert pending.outcome is Outcome.UNVERIFIED
    assert pending.reason.startswith("1 of 2 load items undecided (PERF-API-P95; PERF-API-P95: ")

    nothing = LoadResults("smoke", False, reason="--no-load")
    assert decide_load_gate(gate, [], nothing).outcome is Outcome.UNVERIFIED
    # Every other item passed, but the run itself fell short of the gate's own scale.
    short = decide_load_gate(gate, [passed], results(120.0, SCALE, scale_reached=small))
    assert short.outcome is Outcome.UNVERIFIED
    assert "did not reach the item's scale" in short.reason

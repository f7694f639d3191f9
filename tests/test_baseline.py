"""PERF-BASELINE against the previous run's record, POST-CAPACITY against the production peak,
and the per-metric reasons a load figure is absent. Earlier runs are real records: the real
LoadResults.to_json() in a schema-valid record signed with a harness key, written by
write_record under a run directory as `preflight run` leaves them (no Locust here)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from preflight.checklist import Item, load_checklist
from preflight.decide import decide_load
from preflight.errors import TargetFileInvalid
from preflight.load.baseline import BASELINE_METRIC, find_baseline
from preflight.load.capacity import CAPACITY_METRIC
from preflight.load.derived import derive_load_figures
from preflight.load.results import LoadFigure, LoadResults
from preflight.outcomes import Outcome
from preflight.record import RECORD_FILE, load_record, write_record
from preflight.signing import Registry
from preflight.targets.base import Deployment, Edge, TargetInfo
from preflight.targets.describe import describe_running
from preflight.targets.external import load_target_file, write_target_file
from tests.records import make_record

SCALE = {"users": 500, "ws_connections": 500, "duration_s": 120}
SMALL = {"users": 50, "ws_connections": 50, "duration_s": 60}
NATIVE = TargetInfo(
    name="native", kind="native", edge=Edge("https://127.0.0.1:8443"), admin_key="k"
)
NO_KEYS = Registry(path=Path("keys.yaml"), roles={})


def item(item_id: str) -> Item:
    return next(i for i in load_checklist().items if i.id == item_id)


BASELINE_ITEM = item("PERF-BASELINE")
CAPACITY_ITEM = item("POST-CAPACITY")


def measured(
    p95: float | None = 100.0,
    *,
    profile: str = "release",
    scale: dict[str, int] = SCALE,
    rps: float | None = 250.0,
    **kw: Any,
) -> LoadResults:
    figures = {}
    if p95 is not None:
        figures["api_latency_p95_ms"] = LoadFigure("api_latency_p95_ms", p95, scale, "ms")
    if rps is not None:
        figures["requests_per_s"] = LoadFigure("requests_per_s", rps, scale, "requests/s")
    return LoadResults(profile, True, figures=figures, scale_reached=scale, **kw)


def earlier_run(
    out: Path,
    run_id: str,
    load: LoadResults,
    *,
    target: TargetInfo = NATIVE,
    profile: str | None = None,
) -> Path:
    """A finished run's record in OUT/<run_id>/, as `preflight run` writes it."""
    record = make_record(
        run_id=run_id,
        load=json.loads(json.dumps(load.to_json())),
        selection={
            "areas": None,
            "severities": None,
            "profile": profile or load.profile,
            "workers": 1,
            "api_workers": 2,
        },
        target=describe_running(target).to_json(),
    )
    path = out / run_id / RECORD_FILE
    path.parent.mkdir(parents=True)
    write_record(record, path)
    load_record(path)  # a record `preflight run` could have written
    return path


def decided(
    load: LoadResults,
    out: Path,
    subject: Item = BASELINE_ITEM,
    target: TargetInfo = NATIVE,
) -> tuple[Outcome, str, LoadResults]:
    derived = derive_load_figures(load, [subject], target, out, NO_KEYS)
    decision = decide_load(subject, derived)
    return decision.outcome, decision.reason, derived


# --- PERF-BASELINE ------------------------------------------------------------------------


def test_within_20_pct_of_the_previous_baseline_passes_and_beyond_it_fails(tmp_path: Path) -> None:
    earlier_run(tmp_path, "20261120T100000Z-aaaaaa", measured(100.0))
    outcome, reason, derived = decided(measured(115.0), tmp_path)
    assert outcome is Outcome.PASS, reason
    assert derived.figures[BASELINE_METRIC].measured == 15.0
    assert derived.figures[BASELINE_METRIC].scale_reached == SCALE
    assert derived.details["baseline"] == {
        "baseline_run_id": "20261120T100000Z-aaaaaa",
        "baseline_p95_ms": 100.0,
        "current_p95_ms": 115.0,
    }
    outcome, reason, derived = decided(measured(130.0), tmp_path)  # the control case
    assert outcome is Outcome.FAIL
    assert derived.figures[BASELINE_METRIC].measured == 30.0
    assert reason.startswith("api_latency_p95_vs_baseline_pct must be <= 20 (measured 30")


def test_a_faster_run_is_negative_and_rounded_to_a_tenth(tmp_path: Path) -> None:
    earlier_run(tmp_path, "20261120T100000Z-aaaaaa", measured(300.0))
    _, _, derived = decided(measured(200.0), tmp_path)
    assert derived.figures[BASELINE_METRIC].measured == -33.3
    _, _, same = decided(measured(299.9), tmp_path)  # -0.03 %
    assert math.copysign(1.0, same.figures[BASELINE_METRIC].measured) == 1.0  # 0.0, not -0.0


def test_the_record_of_this_run_is_the_baseline_of_the_next(tmp_path: Path) -> None:
    first = derive_load_figures(measured(100.0), [BASELINE_ITEM], NATIVE, tmp_path, NO_KEYS)
    assert BASELINE_METRIC not in first.figures
    earlier_run(tmp_path, "20261120T100000Z-aaaaaa", first)
    earlier_run(tmp_path, "20261121T100000Z-bbbbbb", measured(160.0))
    outcome, _, derived = decided(measured(180.0), tmp_path)
    assert derived.details["baseline"]["baseline_run_id"] == "20261121T100000Z-bbbbbb"
    assert (outcome, derived.figures[BASELINE_METRIC].measured) == (Outcome.PASS, 12.5)


def test_runs_that_cannot_be_a_baseline_are_passed_over(tmp_path: Path) -> None:
    staging = TargetInfo(name="staging", kind="external", edge=Edge("https://s"), admin_key="k")
    earlier_run(tmp_path, "20261120T100000Z-aaaaaa", measured(100.0))
    earlier_run(tmp_path, "20261121T100000Z-bbbbbb", measured(10.0, profile="smoke"))
    saturated = measured(10.0, valid=False, invalid_reason="the load generator saturated")
    earlier_run(tmp_path, "20261122T100000Z-cccccc", saturated)
    earlier_run(tmp_path, "20261123T100000Z-dddddd", measured(10.0, scale=SMALL))
    earlier_run(tmp_path, "20261124T100000Z-eeeeee", measured(10.0), target=staging)
    earlier_run(tmp_path, "20261125T100000Z-ffffff", LoadResults("release", False, "--no-load"))
    (tmp_path / "latest").symlink_to("20261125T100000Z-ffffff", target_is_directory=True)
    baseline, skipped = find_baseline(tmp_path, "release", NATIVE, {"users": 500}, NO_KEYS)
    assert baseline is not None
    assert (baseline.run_id, baseline.p95_ms, skipped) == ("20261120T100000Z-aaaaaa", 100.0, [])


def test_without_a_baseline_the_item_says_so_and_what_this_run_becomes(tmp_path: Path) -> None:
    earlier_run(tmp_path, "20261121T100000Z-bbbbbb", measured(90.0, profile="smoke"))
    outcome, reason, derived = decided(measured(120.0), tmp_path)
    assert outcome is Outcome.UNVERIFIED
    assert reason == (
        "no baseline: no earlier valid release-profile run against target native in "
        f"{tmp_path}/ reached 500 users; this run's p95 of 120 ms is the baseline for the next"
    )
    assert derived.to_json()["absent"] == {BASELINE_METRIC: reason}
    assert "baseline" not in derived.details
    _, reason, _ = decided(measured(120.0), tmp_path / "no-such-dir")
    assert reason.startswith("no baseline: no earlier valid release-profile run")


def test_a_run_that_cannot_be_the_next_baseline_does_not_claim_to_be(tmp_path: Path) -> None:
    _, reason, _ = decided(measured(120.0, scale=SMALL), tmp_path)
    assert reason.endswith("; this run is not one either: it reached users 50 of 500")
    saturated = measured(120.0, valid=False, invalid_reason="the load generator saturated")
    _, reason, _ = decided(saturated, tmp_path)
    assert reason.endswith("; this run is not one either: the load generator saturated")
    _, reason, _ = decided(measured(None), tmp_path)
    assert reason == (
        "no comparison with a baseline: this run measured no api_latency_p95_ms at full scale"
    )


def test_an_edited_record_is_no_baseline_and_is_named(tmp_path: Path) -> None:
    earlier_run(tmp_path, "20261120T100000Z-aaaaaa", measured(100.0))
    edited = earlier_run(tmp_path, "20261121T100000Z-bbbbbb", measured(150.0))
    record = json.loads(edited.read_text())
    record["load"]["figures"]["api_latency_p95_ms"]["measured"] = 400.0  # hides a regression
    write_record(record, edited)
    (tmp_path / "20261122T100000Z-cccccc").mkdir()
    (tmp_path / "20261122T100000Z-cccccc" / RECORD_FILE).write_text("{not json")
    outcome, _, derived = decided(measured(160.0), tmp_path)
    assert derived.details["baseline"]["baseline_run_id"] == "20261120T100000Z-aaaaaa"
    assert outcome is Outcome.FAIL  # 60 % over the last honest baseline, not 60 % under
    skipped = derived.details["baseline"]["skipped"]
    assert len(skipped) == 2
    assert "not readable as JSON" in skipped[0]
    assert "20261121T100000Z-bbbbbb" in skipped[1]
    assert "edited after it was signed" in skipped[1]


def test_nothing_is_derived_when_the_load_did_not_run_or_no_item_asks(tmp_path: Path) -> None:
    earlier_run(tmp_path, "20261120T100000Z-aaaaaa", measured(100.0))
    skipped = LoadResults("release", False, reason="the load profile was not run (--no-load)")
    assert derive_load_figures(skipped, [BASELINE_ITEM], NATIVE, tmp_path, NO_KEYS) == skipped
    assert decide_load(BASELINE_ITEM, skipped).reason == skipped.reason
    other = derive_load_figures(measured(120.0), [item("PERF-API-P95")], NATIVE, tmp_path, NO_KEYS)
    assert other == measured(120.0)


# --- the absent-reason mechanism ----------------------------------------------------------


def test_an_absent_reason_replaces_did_not_measure_only_for_its_metric() -> None:
    p95 = item("PERF-API-P95")
    bare = LoadResults("release", True)
    generic = "load profile release did not measure api_latency_p95_ms"
    assert decide_load(p95, bare).reason == generic
    told = LoadResults("release", True, absent={"api_latency_p95_ms": "no HTTP request at scale"})
    assert decide_load(p95, told).reason == "no HTTP request at scale"
    assert decide_load(p95, told).outcome is Outcome.UNVERIFIED
    assert decide_load(BASELINE_ITEM, told).reason.endswith(f"did not measure {BASELINE_METRIC}")
    figure = LoadFigure("api_latency_p95_ms", 120.0, SCALE, "ms")
    both = LoadResults("release", True, figures={figure.metric: figure}, absent=told.absent)
    assert decide_load(p95, both).outcome is Outcome.PASS  # a measured figure wins


# --- POST-CAPACITY ------------------------------------------------------------------------


def staging(peak: float | None) -> TargetInfo:
    return TargetInfo(
        name="staging",
        kind="external",
        edge=Edge("https://staging.example"),
        admin_key="k",
        deployment=Deployment(peak_requests_per_s=peak),
    )


def test_capacity_is_throughput_over_the_production_peak(tmp_path: Path) -> None:
    outcome, reason, derived = decided(measured(rps=250.0), tmp_path, CAPACITY_ITEM, staging(120))
    assert outcome is Outcome.PASS, reason
    assert derived.figures[CAPACITY_METRIC].measured == 2.08
    assert derived.figures[CAPACITY_METRIC].scale_reached == SCALE
    capacity = derived.details["capacity"]
    assert (capacity["requests_per_s"], capacity["peak_requests_per_s"]) == (250.0, 120.0)
    assert capacity["note"].startswith("a lower bound: the run offered 500 users and served 250")
    outcome, reason, _ = decided(measured(rps=150.0), tmp_path, CAPACITY_ITEM, staging(120))
    assert outcome is Outcome.FAIL  # the control case: 1.25x the peak
    assert reason.startswith("capacity_over_peak_ratio must be >= 2 (measured 1.25")


def test_capacity_below_the_items_scale_is_unverified(tmp_path: Path) -> None:
    small = measured(rps=900.0, scale=SMALL)
    outcome, reason, _ = decided(small, tmp_path, CAPACITY_ITEM, staging(120))
    assert outcome is Outcome.UNVERIFIED
    assert "did not reach the item's scale (users 50 of 500)" in reason


def test_without_a_peak_the_reason_names_the_target_file_field(tmp_path: Path) -> None:
    outcome, reason, derived = decided(measured(), tmp_path, CAPACITY_ITEM, staging(None))
    assert outcome is Outcome.UNVERIFIED
    assert reason == (
        "no production peak: add `peak_requests_per_s` (API requests/s at the busiest minute "
        "of real traffic) to the target file of staging"
    )
    assert CAPACITY_METRIC not in derived.figures
    _, reason, _ = decided(measured(), tmp_path, CAPACITY_ITEM, NATIVE)
    assert reason.startswith("no production peak: the native target serves no real traffic")
    _, reason, _ = decided(measured(rps=None), tmp_path, CAPACITY_ITEM, staging(120))
    assert reason.startswith("no capacity figure: this run measured no requests_per_s")


# --- the target file's peak_requests_per_s ------------------------------------------------

TARGET = "name: staging\nedge_url: https://staging.example\nadmin_key: k\n"


def test_the_peak_round_trips_through_the_target_file(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TARGET + "peak_requests_per_s: 180\n")
    info = load_target_file(path, {})
    assert info.deployment.peak_requests_per_s == 180.0
    write_target_file(info, tmp_path / "back.yaml")
    assert load_target_file(tmp_path / "back.yaml", {}).deployment.peak_requests_per_s == 180.0
    path.write_text(TARGET)
    assert load_target_file(path, {}).deployment.peak_requests_per_s is None
    write_target_file(load_target_file(path, {}), tmp_path / "back.yaml")
    assert "peak_requests_per_s" not in (tmp_path / "back.yaml").read_text()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("'180'", "must be a number of requests/s"),
        ("180 r/s", "must be a number of requests/s"),
        ("true", "must be a number of requests/s"),
        ("", "must be a number of requests/s"),
        (".nan", "must be a number of requests/s"),
        ("0", "must be a positive number (got 0)"),
        ("-5.5", "must be a positive number (got -5.5)"),
    ],
)
def test_a_bad_peak_names_the_field_and_the_file(tmp_path: Path, value: str, problem: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TARGET + f"peak_requests_per_s: {value}\n")
    with pytest.raises(TargetFileInvalid) as err:
        load_target_file(path, {})
    (only,) = err.value.problems
    assert only.startswith(f"{path}:4: field `peak_requests_per_s` {problem}")

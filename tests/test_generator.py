"""The load generator's own needs and limits, before and after a run: how many Locust processes a
profile starts, the refusal of fewer, and an early stop while the generator saturates (then the
figures that stopped the run are the generator's own delays, and the run is no evidence)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from preflight.cli import main
from preflight.errors import PreflightError
from preflight.load.guards import CpuSample, Thresholds, saturated_before_stop
from preflight.load.locust import LOADTESTS, generator_processes, locust_runner, read_profile


def profile(name: str) -> dict[str, object]:
    return read_profile(LOADTESTS / "profiles.yaml", name, {})


def test_each_profile_names_the_generator_processes_it_needs() -> None:
    assert generator_processes(profile("smoke"), "smoke", 0) == 1
    assert generator_processes(profile("release"), "release", 0) == 2
    assert generator_processes(profile("soak"), "soak", 0) == 2
    # More than the profile needs is the caller's to give.
    assert generator_processes(profile("release"), "release", 4) == 4


def test_fewer_generator_processes_than_the_profile_needs_are_refused() -> None:
    with pytest.raises(PreflightError) as refused:
        generator_processes(profile("release"), "release", 1)
    message = str(refused.value)
    assert "load profile release needs at least 2 load-generator processes" in message
    assert "500 users holding 1000 WebSockets" in message
    assert "--workers 2" in message


@pytest.mark.parametrize("value", [0, -1, 1.5, "two", True])
def test_a_bad_generator_processes_setting_names_the_profile(value: object) -> None:
    with pytest.raises(PreflightError, match=r"load profile smoke: generator_processes must be"):
        generator_processes({**profile("smoke"), "generator_processes": value}, "smoke", 0)


def test_preflight_run_refuses_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("preflight-native-*"))
    code = main(["run", "--target", "native", "--profile", "release", "--workers", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "needs at least 2 load-generator processes" in err
    assert set(tmp.glob("preflight-native-*")) == before, "a target was started"


def test_the_runner_uses_the_profiles_number_when_none_is_asked_for() -> None:
    assert locust_runner.processes("release", 0) == 2
    assert locust_runner.processes("smoke", 0) == 1


def samples(t0: float, busy: float, idle: float) -> list[CpuSample]:
    """Two Locust processes sampled every second for 30 s: idle for the first 10 s (the
    ramp), then one of them at `busy` % of a core and the other at `idle` %."""
    return [
        CpuSample(t0 + i, {"locust-master": 5.0 if i < 10 else busy, "locust-worker-1": idle})
        for i in range(30)
    ]


def test_an_early_stop_while_the_generator_saturates_is_the_generators() -> None:
    limits = Thresholds(window_s=10.0)
    why = saturated_before_stop(samples(1000.0, 97.0, 30.0), 1029.0, 2, limits)
    assert why == (
        "the load generator saturated: Locust process locust-master used 97 % of a core on "
        "average over the 10 s before the stop (limit 90 %)"
    )
    # Every process below its limit, but together above the machine's cores.
    together = saturated_before_stop(samples(1000.0, 89.0, 89.0), 1029.0, 1, limits)
    assert together is not None
    assert "in total over the 10 s before the stop" in together


def test_an_early_stop_with_a_generator_to_spare_is_the_targets() -> None:
    limits = Thresholds(window_s=10.0)
    assert saturated_before_stop(samples(1000.0, 60.0, 30.0), 1029.0, 2, limits) is None
    # Saturated only during the ramp, long before the stop: not what stopped the run.
    ramp = [CpuSample(1000.0 + i, {"locust-master": 99.0 if i < 5 else 20.0}) for i in range(30)]
    assert saturated_before_stop(ramp, 1029.0, 2, limits) is None

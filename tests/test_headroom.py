"""Resource headroom figures (preflight/load/headroom.py): the arithmetic on constructed
samples, the deployment's declared limits, and a sampler against a real native target."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from preflight.client import ChatClient
from preflight.errors import PreflightError
from preflight.load.headroom import (
    COMPOSE_FILE,
    Limits,
    ResourceSample,
    ResourceSampler,
    declared_limits,
    resource_details,
    resource_figures,
)
from preflight.targets.base import Drills, Edge, Stores, TargetInfo
from preflight.targets.native import NativeOptions, NativeTarget
from preflight.targets.procs import free_port

GIB = 1024**3
MIB = 1024**2
LIMITS = {
    "api": Limits(2.0, 2 * GIB),
    "postgres": Limits(2.0, 2 * GIB),
    "redis": Limits(1.0, 2 * GIB),
    "nginx": Limits(1.0, 256 * MIB),
}
PIDS = {"api-0": 100, "api-1": 101, "postgres": 200, "redis": 300, "nginx": 400}
CPU = "cpu_used_pct_max"
MEMORY = "memory_used_pct_max"
SATURATION = "max_resource_saturation_pct"


def sample(
    t: float,
    cpu: Mapping[str, float],
    memory: Mapping[str, int] | None = None,
    pids: Mapping[str, int] | None = None,
    *,
    pg: tuple[int, int] | None = (20, 200),
    redis_memory: tuple[int, int] | None = (10 * MIB, 256 * MIB),
    redis_clients: tuple[int, int] | None = (5, 10_000),
) -> ResourceSample:
    return ResourceSample(
        t=t,
        cpu_seconds=dict(cpu),
        rss_bytes=dict(memory if memory is not None else dict.fromkeys(cpu, 100 * MIB)),
        pg_connections=pg[0] if pg else None,
        pg_max_connections=pg[1] if pg else None,
        redis_used_memory=redis_memory[0] if redis_memory else None,
        redis_maxmemory=redis_memory[1] if redis_memory else None,
        redis_clients=redis_clients[0] if redis_clients else None,
        redis_maxclients=redis_clients[1] if redis_clients else None,
        pids=dict(pids) if pids is not None else {c: PIDS[c] for c in cpu},
    )


def steady(seconds: int, cores: Mapping[str, float], **kw: Any) -> list[ResourceSample]:
    """One sample a second, each component using `cores` all along."""
    return [
        sample(float(t), {c: rate * t for c, rate in cores.items()}, **kw)
        for t in range(seconds + 1)
    ]


# -- figures ---------------------------------------------------------------------------------


def test_cpu_is_the_busiest_component_against_its_own_limit() -> None:
    # nginx's 0.6 core is 60 % of its 1 cpu; the API's 1.0 core only 50 % of its 2.
    samples = steady(30, {"api-0": 1.0, "postgres": 0.2, "redis": 0.1, "nginx": 0.6})
    figures = resource_figures(samples, 0, 30, LIMITS)
    assert figures[CPU] == (60.0, "%")
    details = resource_details(samples, 0, 30, LIMITS)
    assert details["components"]["api-0"]["cpu_peak_pct"] == 50.0
    assert details["components"]["api-0"]["service"] == "api"
    assert details["cpu_span_s"] == 10.0


def test_cpu_counts_only_the_window() -> None:
    # A burst of 3 cores on the API before the window starts is not in the figure.
    samples = [
        sample(float(t), {"api-0": 3.0 * t if t <= 10 else 30 + 0.2 * (t - 10)}) for t in range(41)
    ]
    assert resource_figures(samples, 0, 40, LIMITS)[CPU][0] == 150.0
    assert resource_figures(samples, 15, 40, LIMITS)[CPU] == (10.0, "%")


def test_cpu_peak_is_the_busiest_ten_seconds_not_the_average() -> None:
    # 0.2 core for 20 s, then 1.8 cores for 10 s: the mean would hide the peak.
    samples = [
        sample(float(t), {"api-0": 0.2 * t if t <= 20 else 4.0 + 1.8 * (t - 20)}) for t in range(31)
    ]
    assert resource_figures(samples, 0, 30, LIMITS)[CPU] == (90.0, "%")


def test_a_restarted_component_skips_the_spans_across_its_restart() -> None:
    # api-0 (pid 100) at 0.1 core; at t=5 pid 101 has already burnt 8.5 s starting up, then
    # runs at 0.3 core. A span across the restart would read (10 - 0) / 10 s = 1 core = 50 %.
    samples = [sample(float(t), {"api-0": 0.1 * t}, pids={"api-0": 100}) for t in range(5)]
    samples += [
        sample(float(t), {"api-0": 8.5 + 0.3 * (t - 5)}, pids={"api-0": 101}) for t in range(5, 26)
    ]
    assert resource_figures(samples, 0, 25, LIMITS)[CPU] == (15.0, "%")
    assert resource_details(samples, 0, 25, LIMITS)["components"]["api-0"]["restarts"] == 1
    # Control: the same counts taken as one process give the mixed-up figure.
    same_pid = [sample(s.t, s.cpu_seconds, pids={"api-0": 100}) for s in samples]
    assert resource_figures(same_pid, 0, 25, LIMITS)[CPU][0] > 15.0


def test_a_component_restarted_in_every_span_leaves_cpu_unmeasured() -> None:
    samples = [
        sample(float(t), {"api-0": 0.1 * (t % 4), "nginx": 0.1 * t}, pids={"api-0": 100 + t // 4})
        for t in range(30)
    ]
    figures = resource_figures(samples, 0, 30, LIMITS)
    assert CPU not in figures  # nginx alone would be a figure for some of the components only
    assert SATURATION not in figures
    assert MEMORY in figures
    details = resource_details(samples, 0, 30, LIMITS)
    assert "kept one process" in details["components"]["api-0"]["not_measured"]
    assert "api-0" in details["saturation"]["missing"]["cpu"]


def test_a_window_shorter_than_a_span_is_one_span() -> None:
    samples = [sample(float(t), {"api-0": 0.5 * t}) for t in range(5)]
    assert resource_figures(samples, 0, 4, LIMITS)[CPU] == (25.0, "%")
    assert resource_details(samples, 0, 4, LIMITS)["cpu_span_s"] == 4.0


def test_an_empty_window_measures_nothing() -> None:
    samples = steady(30, {"api-0": 1.0})
    assert resource_figures(samples, 100, 200, LIMITS) == {}
    assert resource_figures([], 0, 30, LIMITS) == {}
    details = resource_details(samples, 100, 200, LIMITS)
    assert details["samples"] == 0
    assert details["samples_outside_window"] == 31
    assert set(details["saturation"]["missing"]) == {
        "cpu",
        "memory",
        "postgres_connections",
        "redis",
    }


def test_one_sample_gives_memory_but_no_cpu_rate() -> None:
    samples = [sample(0.0, {"api-0": 5.0}, {"api-0": GIB})]
    figures = resource_figures(samples, 0, 1, LIMITS)
    assert figures == {MEMORY: (50.0, "%")}


def test_memory_is_the_highest_share_of_any_component_limit() -> None:
    samples = steady(20, {"api-0": 0.1, "nginx": 0.1}, memory={"api-0": GIB, "nginx": 200 * MIB})
    # nginx: 200 MiB of 256 MiB = 78.125 %; the API's 1 GiB is only 50 % of its 2 GiB.
    assert resource_figures(samples, 0, 20, LIMITS)[MEMORY] == (78.12, "%")


def test_a_component_without_a_declared_limit_leaves_the_figures_out() -> None:
    samples = steady(20, {"api-0": 0.1, "nginx": 0.1})
    limits = {k: v for k, v in LIMITS.items() if k != "nginx"}
    figures = resource_figures(samples, 0, 20, limits)
    assert CPU not in figures
    assert MEMORY not in figures
    details = resource_details(samples, 0, 20, limits)
    assert details["components"]["nginx"]["not_measured"] == "its service nginx declares no limits"


def test_saturation_is_the_most_saturated_resource() -> None:
    base = steady(20, {"api-0": 0.2}, pg=(50, 200))
    assert resource_figures(base, 0, 20, LIMITS)[SATURATION] == (25.0, "%")  # PostgreSQL
    full = steady(20, {"api-0": 0.2}, pg=(190, 200))
    assert resource_figures(full, 0, 20, LIMITS)[SATURATION] == (95.0, "%")
    redis_full = steady(20, {"api-0": 0.2}, redis_memory=(240 * MIB, 256 * MIB))
    assert resource_figures(redis_full, 0, 20, LIMITS)[SATURATION] == (93.75, "%")
    clients = steady(20, {"api-0": 0.2}, redis_clients=(9_000, 10_000))
    assert resource_figures(clients, 0, 20, LIMITS)[SATURATION] == (90.0, "%")
    cpu = steady(20, {"api-0": 1.7})
    assert resource_figures(cpu, 0, 20, LIMITS)[SATURATION] == (85.0, "%")


def test_components_sharing_a_machine_saturate_its_cores_together() -> None:
    """Each component well within its declared limit, but together 1.6 of the machine's 2
    cores: 80 % of the host, which the per-service limits alone never show."""
    cores = {"api-0": 0.5, "api-1": 0.5, "postgres": 0.4, "nginx": 0.2}
    alone = steady(20, cores, memory=dict.fromkeys(cores, 10 * MIB))
    assert resource_figures(alone, 0, 20, LIMITS)[SATURATION] == (25.0, "%")  # api: 0.5 of 2
    shared = [dataclasses.replace(s, host_cores=2) for s in alone]
    assert resource_figures(shared, 0, 20, LIMITS)[SATURATION] == (80.0, "%")
    details = resource_details(shared, 0, 20, LIMITS)
    assert details["saturation"]["highest"] == "host_cpu"
    assert details["saturation"]["parts_pct"]["host_cpu"] == 80.0
    assert resource_figures(shared, 0, 20, LIMITS)["cpu_used_pct_max"] == (25.0, "%")


def test_redis_without_maxmemory_has_no_memory_ratio() -> None:
    # 3 GiB used of "unlimited": no ratio at all, not 0 % and not infinity.
    samples = steady(20, {"api-0": 0.2}, pg=(2, 200), redis_memory=(3 * GIB, 0))
    figures = resource_figures(samples, 0, 20, LIMITS)
    assert figures[SATURATION] == (10.0, "%")  # the API's CPU, the highest measured part
    details = resource_details(samples, 0, 20, LIMITS)
    assert "redis_memory" not in details["saturation"]["parts_pct"]
    assert details["redis"]["maxmemory"] == 0
    assert details["redis"]["memory_ratio"].startswith("none: maxmemory is 0")
    assert details["redis"]["used_memory_peak"] == 3 * GIB


def test_saturation_needs_every_resource_it_names() -> None:
    no_pg = steady(20, {"api-0": 0.2}, pg=None)
    assert SATURATION not in resource_figures(no_pg, 0, 20, LIMITS)
    no_redis = steady(20, {"api-0": 0.2}, redis_memory=None, redis_clients=None)
    assert SATURATION not in resource_figures(no_redis, 0, 20, LIMITS)
    assert "redis" in resource_details(no_redis, 0, 20, LIMITS)["saturation"]["missing"]


def test_without_process_access_only_the_databases_are_reported() -> None:
    # An external target: no pids, no CPU, no memory; the databases were read.
    samples = [
        ResourceSample(t=float(t), cpu_seconds={}, rss_bytes={}, pg_connections=30,
                       pg_max_connections=200, redis_used_memory=MIB, redis_maxmemory=0,
                       redis_clients=4, redis_maxclients=10_000)
        for t in range(20)
    ]  # fmt: skip
    assert resource_figures(samples, 0, 20, LIMITS) == {}
    details = resource_details(samples, 0, 20, LIMITS)
    assert "no process access" in details["saturation"]["missing"]["cpu"]
    assert details["saturation"]["parts_pct"] == {
        "postgres_connections": 15.0,
        "redis_clients": 0.04,
    }
    assert details["postgres"] == {
        "connections_peak": 30,
        "max_connections": 200,
        "connections_peak_pct": 15.0,
    }


def test_details_count_each_error_once_with_how_often() -> None:
    samples = [
        ResourceSample(t=float(t), cpu_seconds={}, rss_bytes={}, errors=("redis: down",))
        for t in range(3)
    ]
    assert resource_details(samples, 0, 3, LIMITS)["errors"] == {"redis: down": 3}


def test_a_sampler_never_raises_and_says_what_it_could_not_read() -> None:
    nobody = free_port()  # nothing listens there
    info = TargetInfo(
        name="gone",
        kind="external",
        edge=Edge("https://127.0.0.1:1"),
        admin_key="k",
        stores=Stores(
            postgres_dsn=f"postgresql://u:p@127.0.0.1:{nobody}/db",
            redis_url=f"redis://127.0.0.1:{nobody}/0",
        ),
        # above pid_max: no such process
        drills=Drills(processes=lambda: {"api-0": 2**22 + 1}),
    )
    sampler = ResourceSampler(info)
    try:
        t0 = time.monotonic()
        got = sampler.sample()
        assert time.monotonic() - t0 < 2.0
        assert got.cpu_seconds == {}
        assert got.pg_connections is None
        assert got.redis_clients is None
        assert [e.split(":")[0] for e in got.errors] == ["api-0", "postgres", "redis"]
        # A database that did not answer is not asked at every sample.
        again = sampler.sample()
        assert "postgres: not asked (it did not answer a moment ago)" in again.errors
    finally:
        sampler.close()


def test_a_target_without_processes_or_databases_gives_empty_samples() -> None:
    info = TargetInfo(name="bare", kind="external", edge=Edge("https://127.0.0.1:1"), admin_key="k")
    sampler = ResourceSampler(info)
    got = sampler.sample()
    sampler.close()
    assert (got.cpu_seconds, got.rss_bytes, got.pids, got.errors) == ({}, {}, {}, ())
    assert resource_figures([got, got], 0, got.t + 1, LIMITS) == {}


# -- declared limits -------------------------------------------------------------------------


def test_declared_limits_of_the_real_deployment() -> None:
    limits = declared_limits()
    services = set(yaml.safe_load(COMPOSE_FILE.read_text())["services"])
    assert set(limits) == services, "every service of the compose file declares its limits"
    assert {"api", "realtime", "postgres", "postgres-standby", "redis", "nginx"} <= services
    assert limits["api"] == Limits(2.0, 2 * GIB)
    assert limits["nginx"] == Limits(1.0, 256 * MIB)
    assert limits["redis"] == Limits(1.0, 2 * GIB)


# nginx's limits, the only ones of 1 CPU and 256M in the file.
NGINX_LIMITS = '          cpus: "1.0"\n          memory: 256M\n'


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ('          cpus: "1.0"\n', "limits.memory must be a positive size such as 2G"),
        ('          cpus: "1.0"\n          memory: lots\n', "limits.memory must be a positive"),
        ('          cpus: "-1"\n          memory: 256M\n', "limits.cpus must be a positive"),
        ("          - cpus\n", "limits must be a mapping with cpus and memory"),
    ],
    ids=["memory-missing", "memory-not-a-size", "cpus-negative", "not-a-mapping"],
)
def test_a_broken_limit_names_the_file_and_the_service(
    tmp_path: Path, broken: str, expected: str
) -> None:
    text = COMPOSE_FILE.read_text()
    assert text.count(NGINX_LIMITS) == 1
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text.replace(NGINX_LIMITS, broken))
    with pytest.raises(PreflightError) as error:
        declared_limits(copy)
    assert f"{copy}: services.nginx.deploy.resources.limits" in str(error.value)
    assert expected in str(error.value)
    # Control: the untouched copy reads.
    copy.write_text(text)
    assert declared_limits(copy)["nginx"] == Limits(1.0, 256 * MIB)


def test_an_unreadable_compose_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match="cannot read the deployment's limits from"):
        declared_limits(tmp_path / "missing.yml")
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services: [\n")
    with pytest.raises(PreflightError, match=str(bad)):
        declared_limits(bad)


@pytest.mark.parametrize(
    ("memory", "expected"),
    [("1536mb", 1536 * MIB), ("1.5G", 1536 * MIB), ("512k", 512 * 1024), ("268435456", 256 * MIB)],
)
def test_memory_sizes_in_compose_units(tmp_path: Path, memory: str, expected: int) -> None:
    copy = tmp_path / "docker-compose.yml"
    limits = f'          cpus: "1.0"\n          memory: {memory}\n'
    copy.write_text(COMPOSE_FILE.read_text().replace(NGINX_LIMITS, limits))
    assert declared_limits(copy)["nginx"].memory_bytes == expected


# -- a real target -----------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


@pytest.mark.native
def test_sampling_a_native_target_under_traffic(tmp_path: Path) -> None:
    with NativeTarget(NativeOptions(workers=1, api_rate_per_s=5000)) as info:
        assert info.drills.processes is not None
        assert set(info.drills.processes()) == {"api-0", "postgres", "redis", "nginx"}
        sampler = ResourceSampler(info)
        try:
            before = sampler.sample()
            client = ChatClient.for_target(info)
            try:
                for _ in range(300):
                    assert client.get("/v1/health/ready").status == 200
            finally:
                client.close()
            after = sampler.sample()
            assert before.errors == ()
            assert after.errors == ()
            assert after.cpu_seconds["api-0"] > before.cpu_seconds["api-0"]
            assert after.cpu_seconds["nginx"] >= before.cpu_seconds["nginx"]
            assert after.pg_connections is not None
            assert after.pg_connections >= 1  # the API's pool
            assert after.pg_max_connections == 200
            assert after.redis_used_memory is not None
            assert after.redis_used_memory > 0
            assert after.redis_maxmemory == 256 * MIB  # the native target's redis.conf
            assert after.redis_clients is not None
            assert after.redis_clients >= 1
            assert after.redis_maxclients is not None
            # PSS counts PostgreSQL's shared memory once, not once per backend as RSS does.
            assert 0 < after.rss_bytes["postgres"] < tree_rss(after.pids["postgres"])

            samples = [before, after]
            real = resource_figures(samples, before.t, after.t, declared_limits())
            assert set(real) == {CPU, MEMORY, SATURATION}
            assert real[CPU][0] < 70
            assert real[MEMORY][0] < 80
            # The figure can fail: the same use against a limit of a thousandth of a CPU.
            tiny = {name: Limits(0.001, limit.memory_bytes) for name, limit in LIMITS.items()}
            failing = resource_figures(samples, before.t, after.t, tiny)
            assert failing[CPU][0] > 70
            assert failing[SATURATION][0] > 80

            # A drill restarts Redis: the next sample sees its new process and does not raise.
            info.drills.control["redis"].stop()
            info.drills.control["redis"].start()
            restarted = sampler.sample()
            assert restarted.pids["redis"] != after.pids["redis"]
            assert restarted.pids["api-0"] == after.pids["api-0"]
        finally:
            sampler.close()

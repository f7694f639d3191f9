"""The load runner: Locust headless in its own processes against a target, for the checklist's
load items.

Locust runs loadtests/locustfile.py (one process, or a master and N workers), reads the
credentials from the environment (never the command line), and its master writes a JSON line
per interval (loadtests/recorder.py): users, WebSockets held, and per request type the count,
failures and response-time histogram of that interval. While it runs, this side reads the
lines, samples every Locust process's CPU, and stops the run early when an SLO is clearly
broken (guards.py). Afterwards the run's data becomes its figures (figures.py); a run whose
generator saturated is kept for the record but is not evidence.

Alongside Locust, the target is sampled: its components' CPU and memory against the limits
the deployment declares and its database and Redis connections (headroom.py), and its API
workers' own metrics for the database pool wait and the per-worker share of requests
(apistats.py). For PERF-HSCALE a profile's `scaling` step runs two closed-loop runs, with every
API worker and with half of them stopped (scaling.py). The baseline comparison (PERF-BASELINE)
and the capacity over the production peak (POST-CAPACITY) are derived after the run
(derived.py). A figure that cannot be had is absent with its reason (LoadResults.absent), and
its item stays unverified.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import yaml

from preflight.checklist import Item
from preflight.errors import PreflightError
from preflight.load.apistats import ApiSample, ApiSampler
from preflight.load.figures import RunData, summarise, target_cpu_seconds
from preflight.load.guards import CpuSample, Thresholds, broken_slo, saturated_before_stop
from preflight.load.headroom import ResourceSample, ResourceSampler
from preflight.load.results import LoadResults
from preflight.load.scaling import (
    SCALING_METRIC,
    halved,
    limited,
    measured,
    plan_scaling,
    scaling_result,
    skipped_scaling,
)
from preflight.load.series import aggregate, is_http, percentile
from preflight.targets.base import TargetInfo
from preflight.targets.procs import Child, free_port

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"
TEMP_PREFIX = "preflight-load-"
SOURCE_NET_ENV = "PREFLIGHT_SOURCE_NET"  # loadtests/sources.py
EDGE_ADDRESS_ENV = "PREFLIGHT_EDGE_ADDRESS"  # loadtests/sources.py
LOOPBACK_SOURCE_NET = "127.64.0.0/10"


def source_net_for(edge_url: str, configured: str | None) -> str:
    """The network the load users connect from, one address each (loadtests/sources.py): what
    PREFLIGHT_SOURCE_NET says when it is set (empty: the generator's own address), else
    127.64.0.0/10 when the edge is on IPv4 loopback, where every address of 127/8 is this
    machine's, else none: across a real network a generator has only the addresses it has."""
    if configured is not None:
        return configured.strip()
    try:
        address = ipaddress.ip_address(urlsplit(edge_url).hostname or "")
    except ValueError:
        return ""
    return LOOPBACK_SOURCE_NET if address.version == 4 and address.is_loopback else ""


PROGRESS_EVERY_S = 30.0


def progress_line(
    lines: Sequence[Mapping[str, Any]],
    started: float,
    window_s: float,
    cpu: Sequence[CpuSample] = (),
    resources: Sequence[ResourceSample] = (),
) -> str:
    """What the run is doing now, for the console: users, sockets, throughput, p95 and
    failures over the last `window_s`, and the CPU the generator and the target use now (each
    in % of one core), so a generator out of CPU is seen beside the target it measures."""
    last = lines[-1]
    recent = [line for line in lines if float(line["t"]) > float(last["t"]) - window_s]
    every = aggregate(recent, lambda _key: True)
    http = aggregate(recent, is_http)
    span = max(float(last["t"]) - float(recent[0]["t"]), 1e-9) if len(recent) > 1 else 0.0
    rate = f"{every.requests / span:.0f} req/s" if span else "- req/s"
    return (
        f"load: {float(last['t']) - started:.0f} s, {last['users']} users, "
        f"{last['sockets']} sockets, {rate}, p95 {percentile(http.hist, 0.95):g} ms, "
        f"{every.failures} failures in the last {window_s:g} s"
        f"{cpu_now(cpu, resources)}"
    )


def cost_line(results: LoadResults) -> str:
    """The run's CPU per HTTP request, the generator's beside the target's, for the console."""
    cost = results.details.get("cpu_per_request") or {}
    if not results.ran or not cost.get("http_requests"):
        return f"load: {results.reason or 'no request recorded'}"

    def ms(key: str) -> str:
        value = cost.get(key)
        return f"{value:g} ms" if value is not None else "not measured"

    return (
        f"load: CPU per HTTP request ({cost['http_requests']} requests): generator "
        f"{ms('generator_ms_per_request')}, target {ms('target_ms_per_request')}"
        + ("" if results.valid else f"; no evidence: {results.invalid_reason}")
    )


def cpu_now(cpu: Sequence[CpuSample], resources: Sequence[ResourceSample]) -> str:
    """ ", CPU: generator 97 % (busiest process 97 %), target 140 %" from the latest samples."""
    parts = []
    if cpu and cpu[-1].per_process:
        values = cpu[-1].per_process.values()
        parts.append(f"generator {sum(values):.0f} % (busiest process {max(values):.0f} %)")
    if len(resources) >= 2:
        used = target_cpu_seconds(resources[-2:])
        span = resources[-1].t - resources[-2].t
        if used is not None and span > 0:
            parts.append(f"target {100.0 * used / span:.0f} %")
    return f", CPU: {', '.join(parts)}" if parts else ""


def read_profile(path: Path, name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    profiles = yaml.safe_load(path.read_text())
    if not isinstance(profiles, dict) or name not in profiles:
        raise PreflightError(f"load profile {name} is not defined in {path}")
    return {**profiles[name], **overrides}


def generator_processes(settings: Mapping[str, Any], profile: str, requested: int) -> int:
    """The Locust processes a run of `profile` uses: `requested`, or with 0 the profile's own
    `generator_processes`; fewer than the profile needs is refused, saying how many."""
    needed = settings.get("generator_processes", 1)
    if isinstance(needed, bool) or not isinstance(needed, int) or needed < 1:
        raise PreflightError(
            f"load profile {profile}: generator_processes must be a whole number of at least 1 "
            f"(got {needed!r})"
        )
    if requested == 0:
        return needed
    if requested < needed:
        sockets = int(settings.get("users", 0)) * int(settings.get("sockets_per_user", 1))
        raise PreflightError(
            f"load profile {profile} needs at least {needed} load-generator processes "
            f"({settings.get('users')} users holding {sockets} WebSockets saturate fewer, and a "
            f"saturated generator measures its own delay, not the target's); run it with "
            f"--workers {needed} or more, or leave --workers out"
        )
    return requested


@dataclass(frozen=True)
class LocustRunner:
    """`preflight run`'s load runner (RunOptions.load_runner). `overrides` replaces profile
    settings (tests shorten smoke with it); `workers` > 1 runs a master and that many workers,
    0 as many as the profile needs (generator_processes)."""

    locustfile: Path = LOADTESTS / "locustfile.py"
    profiles_file: Path = LOADTESTS / "profiles.yaml"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    interval_s: float = 2.0
    saturation_pct: float = 90.0
    grace_s: float = 60.0  # beyond ramp + hold before the run is cut off
    log: Callable[[str], None] = field(default=lambda _msg: None)

    def __call__(
        self, info: TargetInfo, profile: str, workers: int, items: Sequence[Item]
    ) -> LoadResults:
        if not items:
            return LoadResults(profile=profile, ran=False, reason="no load items selected")
        settings = read_profile(self.profiles_file, profile, self.overrides)
        limits = Thresholds.of(settings, self.saturation_pct)
        workers = generator_processes(settings, profile, workers)
        results = summarise(self.collect(info, profile, workers), limits)
        self.log(cost_line(results))
        if results.ran and any(item.metric == SCALING_METRIC for item in items):
            results = self.with_scaling(info, profile, workers, settings, results)
        return results

    def processes(self, profile: str, workers: int) -> int:
        """generator_processes() for `profile` of this runner's profiles, before any target
        starts: a refusal costs nothing then."""
        settings = read_profile(self.profiles_file, profile, self.overrides)
        return generator_processes(settings, profile, workers)

    def with_scaling(
        self,
        info: TargetInfo,
        profile: str,
        workers: int,
        settings: Mapping[str, Any],
        results: LoadResults,
    ) -> LoadResults:
        """PERF-HSCALE (scaling.py): one closed-loop run against the target as it is, one with
        half of its API workers stopped; or the figure absent, saying why the step cannot run."""
        plan = plan_scaling(info, profile, settings, self.overrides)
        if isinstance(plan, str):
            return skipped_scaling(results, {"skipped": plan})
        runner = replace(self, overrides=plan.overrides)
        run = functools.partial(runner.collect, info, profile, workers)
        half_n = len(plan.workers) - len(plan.stopped)
        self.log(f"load: scaling step, {len(plan.workers)} API workers, then {half_n}")
        with limited(info, plan, self.log):
            full = measured(info, plan, run)
            with halved(info, plan.stopped):
                half = measured(info, plan, run)
        limits = Thresholds.of(plan.overrides, self.saturation_pct)
        return scaling_result(results, plan, full, half, limits)

    def collect(self, info: TargetInfo, profile: str, workers: int) -> RunData:
        """Run Locust and return what it recorded (summarise() turns it into results)."""
        settings = read_profile(self.profiles_file, profile, self.overrides)
        limits = Thresholds.of(settings, self.saturation_pct)
        work = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        try:
            return self._run(
                info, profile, workers=max(1, workers), settings=settings, limits=limits, work=work
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(
        self,
        info: TargetInfo,
        profile: str,
        *,
        workers: int,
        settings: Mapping[str, Any],
        limits: Thresholds,
        work: Path,
    ) -> RunData:
        profiles = work / "profiles.yaml"
        profiles.write_text(json.dumps({profile: settings}))  # JSON is YAML
        series = work / "timeseries.jsonl"
        env, source_net = locust_env(info)
        locust = [sys.executable, "-m", "locust", "-f", str(self.locustfile)]
        master = [
            *locust,
            "--headless",
            "--only-summary",
            "--host",
            info.edge.url,
            "--load-profile",
            profile,
            "--load-profiles",
            str(profiles),
            "--timeseries",
            str(series),
            "--timeseries-interval",
            str(self.interval_s),
            "--stop-timeout",
            "5",
        ]
        children: list[Child] = []
        mode, port = "local", 0
        if workers > 1:
            mode = "master/worker"
            port = free_port()
            master += [
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(port),
                "--expect-workers",
                str(workers),
                "--expect-workers-max-wait",
                "60",
            ]
        children.append(Child("locust-master", master, work / "master.log", signal.SIGTERM, 20.0))
        for i in range(workers if workers > 1 else 0):
            argv = [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
            children.append(
                Child(f"locust-worker-{i + 1}", argv, work / f"worker-{i + 1}.log", signal.SIGTERM)
            )
        users, rate = int(settings["users"]), float(settings["spawn_rate"])
        ramp_s, hold_s = users / rate, float(settings["hold_s"])
        deadline = time.monotonic() + ramp_s + hold_s + self.grace_s + 30.0 * (workers > 1)
        self.log(
            f"load: Locust {mode} with {workers} process(es) for generating load, "
            f"{users} users, ramp {ramp_s:.0f} s, hold {hold_s:.0f} s"
        )
        lines: list[dict[str, Any]] = []
        cpu: list[CpuSample] = []
        stopped, stopped_at = "", 0.0
        started = reported = time.time()
        offset = 0
        watch = TargetWatch.of(info)
        try:
            for child in children:
                child.start(env=env, cwd=work)
            handles = {c.name: psutil.Process(c.pid) for c in children}
            for handle in handles.values():
                handle.cpu_percent(None)
            while children[0].running():
                time.sleep(self.interval_s / 2)
                cpu.append(CpuSample(time.time(), _cpu(handles)))
                watch.sample()
                if lines and time.time() - reported >= PROGRESS_EVERY_S:
                    reported = time.time()
                    self.log(progress_line(lines, started, limits.window_s, cpu, watch.resources))
                offset = _read_lines(series, offset, lines)
                reason = broken_slo(lines, ramp_s, started, limits) if not stopped else None
                if reason:
                    stopped, stopped_at = self._stop_early(reason, started, cpu, limits)
                    children[0].signal(signal.SIGTERM)
                if time.monotonic() > deadline and not stopped:
                    stopped = f"the run did not end within {self.grace_s:g} s of its schedule"
                    children[0].signal(signal.SIGTERM)
        finally:
            codes = {c.name: c.stop() for c in children}
            watch.close()
        _read_lines(series, offset, lines)
        return RunData(
            profile=profile,
            settings=settings,
            lines=lines,
            cpu=cpu,
            workers=workers,
            mode=mode,
            exit_codes=codes,
            stopped_early=stopped,
            stopped_at=stopped_at,
            log_tail=children[0].log_tail(15).strip() if not lines else "",
            source_net=source_net,
            resources=watch.resources,
            api=watch.api,
        )

    def _stop_early(
        self, reason: str, started: float, cpu: Sequence[CpuSample], limits: Thresholds
    ) -> tuple[str, float]:
        """The early stop's sentence and time, said at once, with whether the generator was
        saturated meanwhile (then the stop is the generator's, and the run no evidence)."""
        stopped_at = time.time()
        stopped = f"{reason}, at {stopped_at - started:.0f} s"
        self.log(f"load: stopping early: {stopped}")
        behind = saturated_before_stop(cpu, stopped_at, os.cpu_count() or 1, limits)
        if behind is not None:
            self.log(f"load: {behind}: the run is no evidence about the target")
        return stopped, stopped_at


def locust_env(info: TargetInfo) -> tuple[dict[str, str], str]:
    """Locust's environment: credentials by variable, never on its command line (a process list
    shows arguments to every local user), none of this process's other PREFLIGHT_ settings, and
    the network its users connect from; and that network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLIGHT_")}
    env["PREFLIGHT_ADMIN_KEY"] = info.admin_key
    if info.edge.ca_file is not None:
        env["PREFLIGHT_CA_FILE"] = str(info.edge.ca_file)
    configured = os.environ.get(SOURCE_NET_ENV)
    clients = info.edge.clients
    source_net = source_net_for(info.edge.url, configured)
    if configured is None and not source_net and clients is not None:
        # The edge behind a published port, which shows every user as one address: the users
        # reach it on the target's client network instead, each from an address of its own.
        source_net = clients.sources
        env[EDGE_ADDRESS_ENV] = f"{clients.address[0]}:{clients.address[1]}"
    if source_net:
        env[SOURCE_NET_ENV] = source_net
    return env, source_net


@dataclass
class TargetWatch:
    """Samples the target alongside Locust: its components' resources, where the target gives
    their processes or databases, and its API workers' metrics, where it gives their URLs."""

    resource_sampler: ResourceSampler | None
    api_sampler: ApiSampler | None
    resources: list[ResourceSample] = field(default_factory=list)
    api: list[ApiSample] = field(default_factory=list)

    @classmethod
    def of(cls, info: TargetInfo) -> TargetWatch:
        reachable = info.drills.processes is not None or bool(
            info.stores.postgres_dsn or info.stores.redis_url
        )
        return cls(
            ResourceSampler(info) if reachable else None,
            ApiSampler(info.observability.metrics_urls)
            if info.observability.metrics_urls
            else None,
        )

    def sample(self) -> None:
        if self.resource_sampler is not None:
            self.resources.append(self.resource_sampler.sample())
        if self.api_sampler is not None:
            self.api.append(self.api_sampler.sample())

    def close(self) -> None:
        if self.resource_sampler is not None:
            self.resource_sampler.close()


def _cpu(handles: Mapping[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, handle in handles.items():
        try:
            out[name] = handle.cpu_percent(None)
        except psutil.Error:  # exited between samples
            continue
    return out


def _read_lines(path: Path, offset: int, into: list[dict[str, Any]]) -> int:
    """Append the complete JSON lines written since `offset`; return the new offset."""
    if not path.exists():
        return offset
    with path.open("rb") as file:
        file.seek(offset)
        chunk = file.read()
    end = chunk.rfind(b"\n") + 1
    for raw in chunk[:end].splitlines():
        if raw.strip():
            into.append(json.loads(raw))
    return offset + end


locust_runner = LocustRunner()

"""One readiness run: checklist -> target -> probes -> load -> drills -> decisions -> record ->
reports. `preflight run` is a thin shell around `run()`."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import redis

from preflight.attestations import Attestation, evaluate_attestation, load_attestations
from preflight.checklist import DEFAULT_PATH, Checklist, Item, load_checklist
from preflight.decide import (
    LOAD_GATE_METRIC,
    Decision,
    LoadFigure,
    LoadResults,
    Verdict,
    apply_waiver,
    blocks,
    decide_load,
    decide_load_gate,
    decide_manual,
    decide_probe,
    gate,
    not_selected,
    selection_filter,
)
from preflight.diff import diff_records
from preflight.errors import PreflightError
from preflight.load import LocustRunner, locust_runner
from preflight.outcomes import ProbeResult, ProbeResults
from preflight.plugin import RunContext, collect_probes, run_probes
from preflight.record import (
    RECORD_FILE,
    RECORD_SCHEMA,
    evidence_digest,
    load_record,
    record_digest,
    write_record,
)
from preflight.report import write_reports
from preflight.signing import (
    HARNESS,
    PANEL_ROLES,
    Registry,
    load_registry,
    sign_as_harness,
    verify_record,
)
from preflight.targets import select_target
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeOptions, NativeTarget
from preflight.waivers import Waiver, load_waivers, waiver_for

PROFILES = ("smoke", "release", "soak")
LoadRunner = Callable[[TargetInfo, str, int, Sequence[Item]], LoadResults]


def no_load_runner(
    _info: TargetInfo, profile: str, _workers: int, items: Sequence[Item]
) -> LoadResults:
    """`preflight run --no-load`: load items stay unverified, and say why."""
    reason = "the load profile was not run (--no-load)"
    return LoadResults(profile=profile, ran=False, reason=reason if items else "no load items")


@dataclass(frozen=True)
class RunOptions:
    checklist_path: Path = DEFAULT_PATH
    target: str = "auto"
    areas: tuple[str, ...] | None = None
    severities: tuple[str, ...] | None = None
    profile: str = "smoke"
    workers: int = 1  # load-generator processes (Locust master/worker mode when > 1)
    api_workers: int = 2  # API worker processes of a native target
    out: Path = Path("reports")
    checks_dir: Path = Path("checks")
    waivers_path: Path = Path("waivers.yaml")
    keys_path: Path = Path("signoff/keys.yaml")
    attestations_dir: Path = Path("signoff/attestations")
    load_runner: LoadRunner = locust_runner
    drills: tuple[str, ...] | None = None  # names of checks/drills/test_<name>.py; None: all


@dataclass
class Progress:
    """Progress on the terminal: the stage, then one line per probe with its area, item,
    outcome and the elapsed time; a live line instead when the stream is a terminal."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    start: float = field(default_factory=time.monotonic)
    _area: str = ""

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def log(self, message: str) -> None:
        self._write(f"[{self.elapsed:6.1f}s] {message}")

    def probe_started(self, nodeid: str, items: Sequence[str], index: int, total: int) -> None:
        if self.stream.isatty():
            line = f"[{self.elapsed:6.1f}s] ({index}/{total}) {' '.join(items)} {nodeid}"
            self.stream.write("\r\x1b[2K" + line[:160])
            self.stream.flush()

    def probe_done(self, result: ProbeResult, area: str) -> None:
        if area != self._area:
            self._area = area
            self.log(f"area {area}")
        items = " ".join(result.items)
        self._write(
            f"[{self.elapsed:6.1f}s]   {result.outcome.value:<5} {items}  {result.nodeid}"
            + (f"  - {result.message}" if result.outcome.value != "pass" else "")
        )

    def _write(self, line: str) -> None:
        prefix = "\r\x1b[2K" if self.stream.isatty() else ""
        self.stream.write(prefix + line + "\n")
        self.stream.flush()


@dataclass(frozen=True)
class RunResult:
    record: dict[str, Any]
    run_dir: Path
    verdict: Verdict

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict.ready else 1


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


DRILLS_DIR = "drills"


def drill_files(checks_dir: Path) -> dict[str, Path]:
    """Drill name -> its file: checks/drills/test_<name>.py."""
    folder = checks_dir / DRILLS_DIR
    return {p.stem.removeprefix("test_"): p for p in sorted(folder.glob("test_*.py"))}


def selected_drills(options: RunOptions) -> dict[str, Path]:
    """The drills `--drills` selects (every drill by default); an unknown name is an error."""
    files = drill_files(options.checks_dir)
    if options.drills is None:
        return files
    unknown = sorted(set(options.drills) - set(files))
    if unknown:
        raise PreflightError(
            f"--drills: no drill named {', '.join(unknown)} in {options.checks_dir / DRILLS_DIR} "
            f"(drills: {', '.join(files) or 'none'}; or `all`, `none`)"
        )
    return {name: path for name, path in files.items() if name in options.drills}


def _drill_filter(
    options: RunOptions, checklist_path: Path, why_not: Callable[[Item], str | None]
) -> Callable[[Item], str | None]:
    """`why_not` that also leaves out the items only unselected drills decide."""
    files = drill_files(options.checks_dir)
    chosen = selected_drills(options)
    left_out = [p for name, p in files.items() if name not in chosen]
    if not left_out:
        return why_not
    excluded = set(collect_probes(left_out, checklist_path).collected)
    excluded -= set(collect_probes(list(chosen.values()), checklist_path).collected)
    flag = f"--drills {','.join(chosen) or 'none'}"

    def with_drills(item: Item) -> str | None:
        return why_not(item) or (flag if item.id in excluded else None)

    return with_drills


@dataclass(frozen=True)
class Inputs:
    """What a run reads before it starts anything; every error here is the user's to fix."""

    checklist: Checklist
    waivers: list[Waiver]
    registry: Registry
    attestations: list[Attestation]
    why_not: Callable[[Item], str | None]
    selected: tuple[Item, ...]


def load_inputs(options: RunOptions) -> Inputs:
    checklist = load_checklist(options.checklist_path)
    if options.profile not in PROFILES:
        raise PreflightError(
            f"--profile must be one of {', '.join(PROFILES)} (got {options.profile})"
        )
    why_not = _drill_filter(
        options, checklist.path, selection_filter(options.areas, options.severities)
    )
    selected = tuple(item for item in checklist.items if why_not(item) is None)
    if not selected:
        raise PreflightError("--area/--severity select no checklist item; nothing to verify")
    return Inputs(
        checklist=checklist,
        waivers=load_waivers(options.waivers_path, checklist),
        registry=load_registry(options.keys_path),
        attestations=load_attestations(options.attestations_dir),
        why_not=why_not,
        selected=selected,
    )


def run(options: RunOptions, progress: Progress | None = None) -> RunResult:
    progress = progress or Progress()
    started = _now()
    inputs = load_inputs(options)
    checklist = inputs.checklist
    progress.log(f"{checklist.path}: {len(checklist.items)} items, {len(inputs.selected)} selected")

    native = NativeOptions(
        workers=options.api_workers, observability=True, backups=True, log=progress.log
    )
    selection, target = select_target(options.target, native)
    progress.log(f"target: {selection.kind} ({selection.reason})")
    with target as info:
        target_description = describe_target(info, target)
        stage = _Stage(options, info, inputs, progress)
        probes = stage.pytest(
            "probes", [options.checks_dir], ignore=[options.checks_dir / DRILLS_DIR]
        )
        load_items = [i for i in inputs.selected if i.verify == "load"]
        progress.log(f"load: profile {options.profile}, {len(load_items)} load items")
        runner = options.load_runner
        if isinstance(runner, LocustRunner):
            runner = dataclasses.replace(runner, log=progress.log)
        load = runner(info, options.profile, options.workers, load_items)
        load = derive_load_figures(load, load_items, info, options.out, inputs.registry)
        if not load.ran:
            progress.log(f"load: {load.reason}")
        chosen = selected_drills(options)
        if chosen:
            drills = stage.pytest("drills", list(chosen.values()))
        else:
            progress.log("drills: none selected (--drills none)")
            drills = ProbeResults()
        probes.results.extend(drills.results)
        for item_id, nodes in drills.collected.items():
            probes.collected.setdefault(item_id, []).extend(nodes)

    now = _now()
    decisions = decide_all(inputs, probes, load, now)
    verdict = gate(checklist, decisions)
    duration = progress.elapsed
    run_id = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "run_id": run_id,
        "preflight_version": _version(),
        "started_at": _iso(started),
        "finished_at": _iso(_now()),
        "duration_s": round(duration, 3),
        "checklist": {
            "path": str(checklist.path),
            "sha256": hashlib.sha256(checklist.path.read_bytes()).hexdigest(),
            "version": checklist.version,
            "items": len(checklist.items),
            "gate": {k: list(v) for k, v in checklist.gate.items()},
        },
        "selection": {
            "areas": list(options.areas) if options.areas else None,
            "severities": list(options.severities) if options.severities else None,
            "profile": options.profile,
            "workers": options.workers,
            "api_workers": options.api_workers,
        },
        "target": target_description,
        "verdict": verdict.to_json(duration),
        "items": [_item_json(checklist, d) for d in decisions],
        "load": load.to_json(),
        "drills": [_drill_json(r) for r in drills.results],
        "waivers": [w.to_json(now) for w in inputs.waivers],
        "previous": None,
        "changes": [],
        "signoff": {"required": list(PANEL_ROLES)},
    }
    previous = _previous_record(options.out)
    if previous is not None:
        record["previous"] = {
            "run_id": previous["run_id"],
            "record_sha256": record_digest(previous),
        }
        record["changes"] = [c.to_json() for c in diff_records(previous, record)]
    signer = f"preflight {_version()} run on {socket.gethostname()}"
    record = sign_as_harness(record, signer)
    run_dir = _write_outputs(record, options.out, run_id)
    return RunResult(record, run_dir, verdict)


def decide_all(
    inputs: Inputs, probes: ProbeResults, load: LoadResults, now: datetime
) -> list[Decision]:
    decisions: list[Decision] = []
    load_decisions: list[Decision] = []  # of the selected load items, for the load gate items
    gates = [i for i in inputs.checklist.items if i.metric == LOAD_GATE_METRIC]
    for item in sorted(inputs.checklist.items, key=lambda i: i in gates):
        reason = inputs.why_not(item)
        if reason is not None:
            decisions.append(not_selected(item, reason))
            continue
        if item.verify == "probe":
            decision = decide_probe(item, probes)
        elif item in gates:
            decision = decide_load_gate(item, load_decisions, load)
        elif item.verify == "load":
            decision = decide_load(item, load)
            load_decisions.append(decision)
        else:
            verdict = evaluate_attestation(item, inputs.attestations, inputs.registry, now)
            decision = decide_manual(item, verdict.to_json() if verdict.status != "none" else None)
        waiver = waiver_for(item.id, inputs.waivers, now)
        decisions.append(apply_waiver(decision, waiver.to_json(now) if waiver else None))
    order = {item.id: n for n, item in enumerate(inputs.checklist.items)}
    return sorted(decisions, key=lambda d: order[d.item.id])


@dataclass(frozen=True)
class _Stage:
    options: RunOptions
    info: TargetInfo
    inputs: Inputs
    progress: Progress

    def pytest(
        self, stage: str, paths: Sequence[Path], ignore: Sequence[Path] = ()
    ) -> ProbeResults:
        wanted = {i.id for i in self.inputs.selected if i.verify == "probe"}
        if not wanted or not all(p.exists() for p in paths):
            return ProbeResults()
        areas = {i.id: i.area for i in self.inputs.checklist.items}
        progress = self.progress
        progress.log(f"{stage}: running pytest {' '.join(str(p) for p in paths)}")
        context = RunContext(
            target=self.info,
            selected=wanted,
            on_start=progress.probe_started,
            on_result=lambda r: progress.probe_done(
                r, areas.get(r.items[0], "?") if r.items else "?"
            ),
        )
        extra = [f"--ignore={p}" for p in ignore]
        results = run_probes(list(paths), context, self.inputs.checklist.path, extra)
        if results.errors:
            problems = "\n  ".join(results.errors)
            raise PreflightError(f"{stage}: pytest could not collect the probes:\n  {problems}")
        return results


def _drill_json(result: ProbeResult) -> dict[str, Any]:
    """One drill test in the record: what it decided, how long it took, and its figures."""
    path = result.nodeid.split("::", 1)[0]
    return {
        "name": Path(path).stem.removeprefix("test_"),
        "nodeid": result.nodeid,
        "items": list(result.items),
        "outcome": result.outcome.value,
        "message": result.message,
        "duration_s": round(result.duration_s, 3),
        "figures": [
            {k: e[k] for k in ("name", "value", "unit") if k in e}
            for e in result.evidence
            if e.get("kind") == "figure"
        ],
    }


def _item_json(checklist: Checklist, d: Decision) -> dict[str, Any]:
    tests = [t.to_json() for t in d.tests]
    item = d.item
    return {
        **item.to_json(),
        "selected": d.selected,
        "outcome": d.outcome.value,
        "reason": d.reason,
        "blocking": blocks(checklist, d),
        "tests": tests,
        "evidence_sha256": evidence_digest(tests),
        "waiver": dict(d.waiver) if d.waiver else None,
        "attestation": dict(d.attestation) if d.attestation else None,
        "figures": dict(d.figures),
    }


def _version() -> str:
    try:
        return metadata.version("preflight")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def _previous_record(out: Path) -> dict[str, Any] | None:
    latest = out / "latest" / RECORD_FILE
    if not latest.exists():
        return None
    try:
        return load_record(latest)
    except PreflightError as exc:
        print(f"preflight: warning: no diff against the previous run: {exc}", file=sys.stderr)
        return None


# Load figures derived from more than the run itself: the p95 against the previous baseline
# (PERF-BASELINE, from the earlier records under --out) and the throughput against the
# production peak (POST-CAPACITY, from the target file).
BASELINE_METRIC = "api_latency_p95_vs_baseline_pct"
CAPACITY_METRIC = "capacity_over_peak_ratio"
P95_METRIC = "api_latency_p95_ms"
THROUGHPUT_METRIC = "requests_per_s"


def derive_load_figures(
    load: LoadResults, items: Sequence[Item], info: TargetInfo, out: Path, registry: Registry
) -> LoadResults:
    """Add the derived figures the selected load items need, or the reason each is absent."""
    if not load.ran:
        return load
    metrics = {item.metric for item in items}
    if BASELINE_METRIC in metrics:
        scale = needed_scale(items, BASELINE_METRIC)
        load = with_baseline(load, scale, info, out, registry)
    if CAPACITY_METRIC in metrics:
        load = with_capacity(load, info)
    return load


def needed_scale(items: Sequence[Item], metric: str) -> dict[str, int]:
    """The largest scale any item on `metric` asks for, per dimension."""
    scale: dict[str, int] = {}
    for item in items:
        if item.metric == metric:
            for key, value in item.scale.items():
                scale[key] = max(scale.get(key, 0), value)
    return scale


@dataclass(frozen=True)
class Baseline:
    run_id: str
    p95_ms: float


def find_baseline(
    out: Path, profile: str, info: TargetInfo, scale: Mapping[str, int], registry: Registry
) -> tuple[Baseline | None, list[str]]:
    """The newest earlier record under `out` that can be a baseline: signed by the harness (a
    hand-edited record is no baseline), same profile and target, a valid run, and its p95
    measured at `scale`. Run directories are named by run id, which starts with the UTC start
    time, so the newest comes first without reading the others. Also returned: the newer
    records skipped as unreadable or unsigned, each as a sentence, for the reader to see."""
    skipped: list[str] = []
    for path in earlier_records(out):
        try:
            record = load_record(path)
            signatures = verify_record(record, registry, required_roles=())
        except PreflightError as exc:
            skipped.append(str(exc))
            continue
        if HARNESS in signatures.missing:
            why = next((v.problem for v in signatures.signatures if v.role == HARNESS), "")
            skipped.append(f"{path}: {why or 'the harness did not sign it'}")
            continue
        p95 = baseline_p95(record, profile, info, scale)
        if p95 is not None:
            return Baseline(str(record["run_id"]), p95), skipped
    return None, skipped


def earlier_records(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    runs = [
        p for p in out.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    ]
    runs = [p for p in runs if (p / RECORD_FILE).is_file()]
    return [p / RECORD_FILE for p in sorted(runs, key=lambda p: p.name, reverse=True)]


def baseline_p95(
    record: Mapping[str, Any], profile: str, info: TargetInfo, scale: Mapping[str, int]
) -> float | None:
    """The record's full-scale API p95, when the record can be a baseline for this run."""
    load, target = record.get("load") or {}, record.get("target") or {}
    if (
        (record.get("selection") or {}).get("profile") != profile
        or load.get("profile") != profile
        or (target.get("name"), target.get("kind")) != (info.name, info.kind)
        or load.get("ran") is not True
        or load.get("valid") is not True
    ):
        return None
    figure = (load.get("figures") or {}).get(P95_METRIC)
    if not isinstance(figure, dict):
        return None
    measured, reached = figure.get("measured"), figure.get("scale_reached")
    if isinstance(measured, bool) or not isinstance(measured, int | float) or measured <= 0:
        return None
    if not isinstance(reached, dict) or any(reached.get(k, 0) < v for k, v in scale.items()):
        return None
    return float(measured)


def with_baseline(
    load: LoadResults,
    scale: Mapping[str, int],
    info: TargetInfo,
    out: Path,
    registry: Registry,
) -> LoadResults:
    """BASELINE_METRIC: how much slower (positive) or faster (negative) this run's p95 is than
    the baseline's, in percent of the baseline."""
    current = load.figures.get(P95_METRIC)
    if current is None:
        why = f"no comparison with a baseline: this run measured no {P95_METRIC} at full scale"
        return _absent(load, BASELINE_METRIC, why)
    found, skipped = find_baseline(out, load.profile, info, scale, registry)
    if found is None:
        why = _no_baseline(load, current, scale, info=info, out=out, skipped=skipped)
        return _absent(load, BASELINE_METRIC, why)
    change = round((current.measured - found.p95_ms) / found.p95_ms * 100.0, 1) + 0.0  # no -0.0
    figure = LoadFigure(BASELINE_METRIC, change, current.scale_reached, "%")
    baseline: dict[str, Any] = {
        "baseline_run_id": found.run_id,
        "baseline_p95_ms": found.p95_ms,
        "current_p95_ms": current.measured,
    }
    if skipped:
        baseline["skipped"] = skipped
    return dataclasses.replace(
        load,
        figures={**load.figures, BASELINE_METRIC: figure},
        details={**load.details, "baseline": baseline},
    )


def _no_baseline(
    load: LoadResults,
    current: LoadFigure,
    scale: Mapping[str, int],
    *,
    info: TargetInfo,
    out: Path,
    skipped: Sequence[str],
) -> str:
    wanted = ", ".join(f"{v} {k}" for k, v in scale.items()) or "its scale"
    reason = (
        f"no baseline: no earlier valid {load.profile}-profile run against target {info.name} "
        f"in {out}/ reached {wanted}"
    )
    if skipped:
        reason += f" ({len(skipped)} record(s) skipped; the newest: {skipped[0]})"
    reached = current.scale_reached
    short = [f"{k} {reached.get(k, 0)} of {v}" for k, v in scale.items() if reached.get(k, 0) < v]
    if not load.valid:
        return f"{reason}; this run is not one either: {load.invalid_reason}"
    if short:
        return f"{reason}; this run is not one either: it reached {', '.join(short)}"
    return f"{reason}; this run's p95 of {current.measured:g} ms is the baseline for the next"


def with_capacity(load: LoadResults, info: TargetInfo) -> LoadResults:
    """CAPACITY_METRIC: the run's full-scale throughput over the production peak. The run
    offered a load rather than searching for the most the system takes, so its throughput is
    a lower bound of capacity, and so is the ratio."""
    peak = info.peak_requests_per_s
    if peak is None:
        hint = "`peak_requests_per_s` (API requests/s at the busiest minute of real traffic)"
        if info.kind == "external":
            why = f"no production peak: add {hint} to the target file of {info.name}"
        else:
            why = (
                f"no production peak: the {info.kind} target serves no real traffic; run "
                f"against a target file that gives {hint}"
            )
        return _absent(load, CAPACITY_METRIC, why)
    throughput = load.figures.get(THROUGHPUT_METRIC)
    if throughput is None:
        why = (
            f"no capacity figure: this run measured no {THROUGHPUT_METRIC} at full scale to set "
            f"against the production peak of {peak:g} requests/s"
        )
        return _absent(load, CAPACITY_METRIC, why)
    ratio = round(throughput.measured / peak, 2)
    figure = LoadFigure(CAPACITY_METRIC, ratio, throughput.scale_reached, "x")
    users = throughput.scale_reached.get("users", 0)
    capacity = {
        "requests_per_s": throughput.measured,
        "peak_requests_per_s": peak,
        "ratio": ratio,
        "note": (
            f"a lower bound: the run offered {users} users and served {throughput.measured:g} "
            "requests/s at full scale, with its latency and error SLOs measured alongside (the "
            "other load items); the system may take more. The peak is the target file's "
            "peak_requests_per_s"
        ),
    }
    return dataclasses.replace(
        load,
        figures={**load.figures, CAPACITY_METRIC: figure},
        details={**load.details, "capacity": capacity},
    )


def _absent(load: LoadResults, metric: str, why: str) -> LoadResults:
    return dataclasses.replace(load, absent={**load.absent, metric: why})


def _write_outputs(record: dict[str, Any], out: Path, run_id: str) -> Path:
    run_dir = out / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    write_record(record, run_dir / RECORD_FILE)
    write_reports(record, run_dir)
    link = out / "latest"
    tmp = out / f".latest-{run_id}"
    tmp.symlink_to(run_id, target_is_directory=True)
    os.replace(tmp, link)
    return run_dir


def describe_target(info: TargetInfo, target: object) -> dict[str, Any]:
    """What ran: server versions as the servers report them, and digests of the config files
    the native target wrote (an external target's files are not ours to read)."""
    versions: dict[str, str] = {"python": platform.python_version(), "preflight": _version()}
    if info.postgres_dsn:
        versions["postgresql"] = _guard(lambda: _pg_version(info.postgres_dsn or ""))
    if info.redis_url:
        versions["redis"] = _guard(lambda: _redis_version(info.redis_url or ""))
    digests: dict[str, str] = {}
    if isinstance(target, NativeTarget) and target.dir is not None:
        versions["nginx"] = _guard(_nginx_version)
        for path in sorted(target.dir.rglob("*.conf")):
            digests[str(path.relative_to(target.dir))] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return {
        "name": info.name,
        "kind": info.kind,
        "edge_url": info.edge_url,
        "versions": versions,
        "config_digests": digests,
    }


def _guard(read: Callable[[], str]) -> str:
    try:
        return read()
    except Exception as exc:  # a version we cannot read is reported, never fatal
        return f"unknown ({type(exc).__name__}: {exc})"[:200]


def _pg_version(dsn: str) -> str:
    async def read() -> str:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return str(await conn.fetchval("SHOW server_version", timeout=10))
        finally:
            await conn.close(timeout=5)

    return asyncio.run(read())


def _redis_version(url: str) -> str:
    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
    try:
        info: dict[str, Any] = client.info("server")
        return str(info["redis_version"])
    finally:
        client.close()


def _nginx_version() -> str:
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"nginx/(\S+)", out.stderr + out.stdout)
    return match.group(1) if match else "unknown"

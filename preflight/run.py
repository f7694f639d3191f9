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
from collections.abc import Callable, Sequence
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
from preflight.load.derived import derive_load_figures
from preflight.load.locust import LocustRunner, locust_runner
from preflight.load.results import LoadResults
from preflight.load.runner import LoadRunner
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
    PANEL_ROLES,
    Registry,
    load_registry,
    sign_as_harness,
)
from preflight.targets import select_target
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeOptions, NativeTarget
from preflight.waivers import Waiver, load_waivers, waiver_for

PROFILES = ("smoke", "release", "soak")


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

"""One readiness run, in order: checklist -> target -> probes -> load -> drills -> decisions ->
record -> reports. This module only sequences the stages; each one's work is in its own module
(drills, load/, decide, record, history, report). `preflight run` is a thin shell around `run()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from preflight.attestations import Attestation, evaluate_attestation, load_attestations
from preflight.checklist import DEFAULT_PATH, Checklist, Item, load_checklist
from preflight.ci_junit import CI_TESTS_ITEM, decide_ci_junit
from preflight.decide import (
    LOAD_GATE_METRIC,
    Decision,
    Verdict,
    apply_waiver,
    decide_load,
    decide_load_gate,
    decide_manual,
    decide_probe,
    decide_probe_attested,
    gate,
    not_selected,
    selection_filter,
)
from preflight.drills import DRILLS_DIR, drill_filter, selected_drills
from preflight.errors import PreflightError
from preflight.history import new_run_id, previous_record, write_run
from preflight.load import PROFILES
from preflight.load.derived import derive_load_figures
from preflight.load.locust import LocustRunner, locust_runner
from preflight.load.results import LoadResults
from preflight.load.runner import LoadRunner
from preflight.outcomes import ProbeResults
from preflight.plugin import RunContext, run_probes
from preflight.progress import Progress
from preflight.record import build_record, preflight_version
from preflight.redvariants import red_variants
from preflight.release import Release, current_release
from preflight.signing import PANEL_ROLES, Registry, load_registry, sign_as_harness
from preflight.targets import TargetOptions, select_target
from preflight.targets.base import TargetInfo
from preflight.waivers import Waiver, load_waivers, waivers_for


@dataclass(frozen=True)
class RunOptions:
    checklist_path: Path = DEFAULT_PATH
    target: str = "auto"
    areas: tuple[str, ...] | None = None
    severities: tuple[str, ...] | None = None
    profile: str = "smoke"
    # Load-generator processes (Locust master/worker mode when > 1); `preflight run` gives the
    # profile's generator_processes unless --workers asks for more.
    workers: int = 1
    api_workers: int = 2  # API worker processes of a native target
    out: Path = Path("reports")
    checks_dir: Path = Path("checks")
    waivers_path: Path = Path("waivers.yaml")
    keys_path: Path = Path("signoff/keys.yaml")
    attestations_dir: Path = Path("signoff/attestations")
    load_runner: LoadRunner = locust_runner
    drills: tuple[str, ...] | None = None  # names of checks/drills/test_<name>.py; None: all
    ci_junit: Path | None = None  # the CI's JUnit XML for this commit: decides CI_TESTS_ITEM

    def selection(self) -> dict[str, Any]:
        """The record's view of what was asked for."""
        return {
            "areas": list(self.areas) if self.areas else None,
            "severities": list(self.severities) if self.severities else None,
            "profile": self.profile,
            "workers": self.workers,
            "api_workers": self.api_workers,
        }


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


@dataclass(frozen=True)
class Inputs:
    """What a run reads before it starts anything; every error here is the user's to fix."""

    checklist: Checklist
    waivers: list[Waiver]
    registry: Registry
    attestations: list[Attestation]
    release: Release
    ci_junit: Path | None
    why_not: Callable[[Item], str | None]
    selected: tuple[Item, ...]


def load_inputs(options: RunOptions) -> Inputs:
    checklist = load_checklist(options.checklist_path)
    if options.profile not in PROFILES:
        raise PreflightError(
            f"--profile must be one of {', '.join(PROFILES)} (got {options.profile})"
        )
    why_not = drill_filter(
        options.checks_dir,
        options.drills,
        checklist.path,
        selection_filter(options.areas, options.severities),
    )
    selected = tuple(item for item in checklist.items if why_not(item) is None)
    if not selected:
        raise PreflightError("--area/--severity select no checklist item; nothing to verify")
    registry = load_registry(options.keys_path)
    return Inputs(
        checklist=checklist,
        waivers=load_waivers(options.waivers_path, checklist, registry),
        registry=registry,
        attestations=load_attestations(options.attestations_dir),
        release=current_release(checklist.path),
        ci_junit=options.ci_junit,
        why_not=why_not,
        selected=selected,
    )


def run(options: RunOptions, progress: Progress | None = None) -> RunResult:
    progress = progress or Progress()
    started = _now()
    inputs = load_inputs(options)
    checklist = inputs.checklist
    progress.log(f"{checklist.path}: {len(checklist.items)} items, {len(inputs.selected)} selected")

    target_options = TargetOptions(
        workers=options.api_workers, observability=True, backups=True, log=progress.log
    )
    selection, target = select_target(options.target, target_options)
    progress.log(f"target: {selection.kind} ({selection.reason})")
    with contextlib.ExitStack() as running:
        with progress.stage("start the target"):
            info = running.enter_context(target)
        target_description = target.describe().to_json()
        stage = _Stage(options, info, inputs, progress)
        with progress.stage("probes"):
            probes = stage.pytest(
                "probes", [options.checks_dir], ignore=[options.checks_dir / DRILLS_DIR]
            )
        with progress.stage("load"):
            load = stage.load()
        chosen = selected_drills(options.checks_dir, options.drills)
        with progress.stage("drills"):
            if chosen:
                drills = stage.pytest("drills", list(chosen.values()))
            else:
                progress.log("drills: none selected (--drills none)")
                drills = ProbeResults()
        probes.results.extend(drills.results)
        for item_id, nodes in drills.collected.items():
            probes.collected.setdefault(item_id, []).extend(nodes)
        with progress.stage("stop the target"):
            running.close()

    now = _now()
    decisions = decide_all(inputs, probes, load, now)
    verdict = gate(checklist, decisions)
    run_id = new_run_id(started)
    record = build_record(
        run_id=run_id,
        started=started,
        duration_s=progress.elapsed,
        checklist=checklist,
        selection=options.selection(),
        target=target_description,
        decisions=decisions,
        verdict=verdict,
        load=load,
        drills=drills.results,
        waivers=inputs.waivers,
        now=now,
        signoff_roles=PANEL_ROLES,
        previous=previous_record(options.out),
        # The repository's own red-variant tests (beside checks/): what each item was shown
        # able to fail on.
        red_variants=red_variants(options.checks_dir.resolve().parent),
        stages=progress.stages,
    )
    signer = f"preflight {preflight_version()} run on {socket.gethostname()}"
    record = sign_as_harness(record, signer)
    run_dir = write_run(record, options.out, run_id)
    return RunResult(record, run_dir, verdict)


def decide_all(
    inputs: Inputs, probes: ProbeResults, load: LoadResults, now: datetime
) -> list[Decision]:
    """Every checklist item's decision, in checklist order: each by what decides its kind, the
    load gate items after the load items they count, then its waiver applied."""
    decisions: list[Decision] = []
    load_decisions: list[Decision] = []  # of the selected load items, for the load gate items
    gates = [i for i in inputs.checklist.items if i.metric == LOAD_GATE_METRIC]
    for item in sorted(inputs.checklist.items, key=lambda i: i in gates):
        reason = inputs.why_not(item)
        if reason is not None:
            decisions.append(not_selected(item, reason))
            continue
        if item.verify == "probe" and item.attest:
            decision = decide_probe_attested(item, probes, _attestation(inputs, item, now))
        elif item.verify == "probe":
            decision = decide_probe(item, probes)
        elif item in gates:
            decision = decide_load_gate(item, load_decisions, load)
        elif item.verify == "load":
            decision = decide_load(item, load)
            load_decisions.append(decision)
        elif item.id == CI_TESTS_ITEM and inputs.ci_junit is not None:
            decision = decide_ci_junit(item, inputs.ci_junit, inputs.release)
        else:
            decision = decide_manual(item, _attestation(inputs, item, now))
        decisions.append(apply_waiver(decision, waivers_for(item.id, inputs.waivers, now), now))
    order = {item.id: n for n, item in enumerate(inputs.checklist.items)}
    return sorted(decisions, key=lambda d: order[d.item.id])


def _attestation(inputs: Inputs, item: Item, now: datetime) -> dict[str, Any] | None:
    """The verdict on the item's newest attestation for this release (None: there is none)."""
    verdict = evaluate_attestation(item, inputs.attestations, inputs.registry, now, inputs.release)
    return verdict.to_json() if verdict.status != "none" else None


@dataclass(frozen=True)
class _Stage:
    """The stages that run against the started target."""

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
            on_collected=progress.probes_collected,
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

    def load(self) -> LoadResults:
        """The load profile against the target, with the figures derived from earlier runs."""
        options, progress = self.options, self.progress
        load_items = [i for i in self.inputs.selected if i.verify == "load"]
        progress.log(f"load: profile {options.profile}, {len(load_items)} load items")
        runner = options.load_runner
        if isinstance(runner, LocustRunner):
            runner = dataclasses.replace(runner, log=progress.log)
        load = runner(self.info, options.profile, options.workers, load_items)
        load = derive_load_figures(load, load_items, self.info, options.out, self.inputs.registry)
        if not load.ran:
            progress.log(f"load: {load.reason}")
        return load

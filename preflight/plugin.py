"""The pytest plugin that checks/ runs under: the `checklist(ID)` marker, the session `target`,
the `evidence` fixture, one ProbeResult per test and an outcome per checklist item.

`pytest checks/` starts the bundled system itself (or reaches `--target FILE`) and ends with one
line per item; `preflight run` calls `run_probes` with a target it already runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from preflight.budget import DEFAULT_BUDGET_S, TARGET_START_BUDGET_S, BudgetExceeded, time_budget
from preflight.checklist import load_checklist
from preflight.errors import ChecklistInvalid, PreflightError
from preflight.evidence import EvidenceLog, Redactor
from preflight.outcomes import Outcome, ProbeResult, ProbeResults, combine
from preflight.probe.target import ProbeTarget
from preflight.targets import TargetInfo, TargetOptions, load_target_file, select_target

MARKER = "checklist"
TARGET_KINDS = ("native", "containers", "auto")
XFAIL_MESSAGE = (
    "probes may not be marked xfail: a probe decides an item, it does not expect to fail; "
    "remove the marker (a known gap is a waiver in waivers.yaml)"
)
BUDGET = "budget"  # the one keyword a checklist marker takes: the probe's time budget in seconds
NO_EVIDENCE_MESSAGE = (
    "passed without evidence: a probe records what it looked at (evidence.request, "
    "evidence.figure, evidence.note, evidence.attach) before it may pass"
)
# Which phase's outcome wins: a probe that failed is off-spec even if its teardown broke too.
_RANK = {Outcome.PASS: 0, Outcome.SKIP: 1, Outcome.ERROR: 2, Outcome.FAIL: 3}


def _ignore_start(nodeid: str, items: tuple[str, ...], index: int, total: int) -> None:
    return None


def _ignore_result(result: ProbeResult) -> None:
    return None


def _ignore_collected(probes: Mapping[str, tuple[str, ...]]) -> None:
    return None


@dataclass(eq=False)  # eq=False keeps it hashable, which pytest's plugin manager needs
class RunContext:
    """What `preflight run` hands to the probes: a target that already runs, which items are
    selected (None: all), and progress callbacks."""

    target: TargetInfo
    selected: set[str] | None = None
    on_start: Callable[[str, tuple[str, ...], int, int], None] = _ignore_start
    on_result: Callable[[ProbeResult], None] = _ignore_result
    on_collected: Callable[[Mapping[str, tuple[str, ...]]], None] = _ignore_collected


class _Harvest:
    """Passed to pytest.main by run_probes and collect_probes: keeps the results, silences the
    terminal (the caller reports progress), and treats every test as a probe."""

    def __init__(self) -> None:
        self.results: ProbeResults | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            config.pluginmanager.unregister(reporter)


# -- options, marker, fixtures -----------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("preflight", "preflight readiness probes")
    group.addoption(
        "--checklist",
        metavar="FILE",
        default=None,
        help="the checklist the probes' markers name (default: checklist.yaml in the rootdir)",
    )
    group.addoption(
        "--target",
        metavar="SPEC",
        default="native",
        help="native (default: start the bundled system for the session), containers, auto, "
        "or a target FILE describing a deployment that already runs",
    )
    group.addoption(
        "--preflight-results",
        metavar="FILE",
        default=None,
        help="write every probe's result as preflight.probe-results/1 JSON to FILE",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(id, {BUDGET}=seconds): the checklist item this probe decides (one id per "
        f"marker); {BUDGET} raises the probe's time budget per phase (default "
        f"{DEFAULT_BUDGET_S:g} s)",
    )
    config.addinivalue_line(
        "markers",
        f"{BUDGET}(seconds): the time budget per phase of every probe it marks (a module's "
        f"`pytestmark` for a family of long probes such as drills); {MARKER}(..., {BUDGET}=) "
        "takes precedence",
    )
    state = _State(config)
    config.stash[_STATE] = state
    config.pluginmanager.register(state, "preflight-state")


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[ProbeTarget]:
    """The system under test for this session (see preflight.probe.target.ProbeTarget)."""
    state = request.config.stash[_STATE]
    probe_target = state.open_target()
    try:
        # Start now, so a target that cannot start is a setup error of every probe (pytest
        # keeps the exception of a session fixture and does not try again).
        probe_target.info  # noqa: B018
        yield probe_target
    finally:
        probe_target.close()
        state.target = None


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> EvidenceLog:
    """Where a probe records what it sent, what came back and what it measured."""
    state = request.config.stash[_STATE]
    log = EvidenceLog(state.redactor, state.edge_url)
    state.evidence[request.node.nodeid] = log
    return log


# -- the session's bookkeeping -----------------------------------------------------------------


@dataclass
class _Progress:
    """The phases of one probe so far."""

    items: tuple[str, ...]
    outcome: Outcome | None = None
    message: str = ""
    durations: dict[str, float] = field(default_factory=dict)
    forced: tuple[Outcome, str] | None = None

    def add(self, when: str, outcome: Outcome | None, message: str, duration: float) -> None:
        self.durations[when] = duration
        if outcome is not None and (self.outcome is None or _RANK[outcome] > _RANK[self.outcome]):
            self.outcome, self.message = outcome, message

    def result(self, nodeid: str, evidence: EvidenceLog | None) -> ProbeResult:
        outcome, message = self.forced or (
            self.outcome or Outcome.ERROR,
            self.message if self.outcome else "the probe did not run to the end",
        )
        entries = evidence.snapshot() if evidence else ()
        if outcome is Outcome.PASS and not entries:
            # A pass says what was seen; a test that merely ended proved nothing.
            outcome, message = Outcome.ERROR, NO_EVIDENCE_MESSAGE
        # The whole probe, set-up and teardown included: a drill's work is mostly in its
        # fixtures (break, restore), which the call phase alone would not count.
        duration = sum(self.durations.values())
        return ProbeResult(
            nodeid=nodeid,
            items=self.items,
            outcome=outcome,
            message=message,
            duration_s=duration,
            evidence=entries,
        )


class _State:
    """Per-config state, registered as a plugin (nothing lives at module level, so a process can
    run pytest twice)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        plugins = config.pluginmanager.get_plugins()
        self.run = next((p for p in plugins if isinstance(p, RunContext)), None)
        self.harvest = next((p for p in plugins if isinstance(p, _Harvest)), None)
        self.redactor = Redactor()
        self.target: ProbeTarget | None = None
        self.target_spec = self._target_spec()
        self.known_ids: set[str] | None = None
        self.checklist_path: Path | None = None
        self.collected: dict[str, list[str]] = {}
        self.errors: list[str] = []
        self.probes: dict[str, tuple[str, ...]] = {}  # node id -> item ids, of probes that run
        self.budgets: dict[str, float] = {}  # node id -> seconds per phase, of probes that run
        self.progress: dict[str, _Progress] = {}
        self.evidence: dict[str, EvidenceLog] = {}
        self.results: list[ProbeResult] = []
        self.started = 0

    # -- target ----------------------------------------------------------------------------

    def _target_spec(self) -> str:
        spec = str(self.config.getoption("target"))
        if self.run is not None or spec in TARGET_KINDS:
            return spec
        path = Path(spec)
        if not path.is_absolute():
            path = self.config.invocation_params.dir / path
        if not path.is_file():
            raise pytest.UsageError(
                f"--target {spec}: {path} is not a file; give native, containers, auto, or the "
                "path of a target file (see docs/verifying-a-deployment.md)"
            )
        try:
            load_target_file(path)
        except PreflightError as exc:
            raise pytest.UsageError(f"--target {spec}: {exc}") from None
        return str(path)

    def open_target(self) -> ProbeTarget:
        if self.run is not None:
            self.target = ProbeTarget(self.run.target, on_secrets=self._add_secrets)
        else:
            # The bundled system as `preflight run` deploys it: with its scheduled backups (the
            # backup drills judge them) and its Prometheus, Alertmanager and exporters (the live
            # monitoring probes and the alert drill watch them).
            options = TargetOptions(backups=True, observability=True)
            _, start = select_target(self.target_spec, options)
            self.target = ProbeTarget(start=start, on_secrets=self._add_secrets)
        return self.target

    def _add_secrets(self, secrets: Iterable[str]) -> None:
        self.redactor.add(*secrets)

    def edge_url(self) -> str | None:
        return self.target.edge_url if self.target and self.target.started else None

    # -- collection ------------------------------------------------------------------------

    def _checklist_ids(self) -> set[str]:
        if self.known_ids is None:
            option = self.config.getoption("checklist")
            path = Path(option) if option else self.config.rootpath / "checklist.yaml"
            if not path.is_absolute():
                path = self.config.invocation_params.dir / path
            try:
                checklist = load_checklist(path)
            except ChecklistInvalid as exc:
                more = len(exc.problems) - 1
                self.errors.append(exc.problems[0] + (f" (and {more} more)" if more else ""))
                raise pytest.UsageError(f"{exc}\n(give another with --checklist FILE)") from None
            self.checklist_path = path
            self.known_ids = {item.id for item in checklist.items}
        return self.known_ids

    def _marker_problems(self, item: pytest.Item) -> tuple[tuple[str, ...], list[str]]:
        marks = _marks_in_source_order(item)
        if not marks:
            if self.harvest is None:
                return (), []  # an ordinary test (tests/ runs under this plugin too)
            return (), [f"has no @pytest.mark.{MARKER}(ID) marker; every probe names its item"]
        budget, problems = _budget_of([*marks, *item.iter_markers(BUDGET)])
        self.budgets[item.nodeid] = budget
        known = self._checklist_ids()
        ids: list[str] = []
        for mark in marks:
            args = ", ".join(
                [*map(repr, mark.args), *(f"{k}={v!r}" for k, v in mark.kwargs.items())]
            )
            if len(mark.args) != 1 or not isinstance(mark.args[0], str):
                problems.append(
                    f"marker {MARKER}({args}) must name exactly one item id as a string; "
                    "use one marker per item"
                )
            elif mark.args[0] not in known:
                problems.append(
                    f"marker {MARKER}({args}) names {mark.args[0]!r}, which is not an item of "
                    f"{self.checklist_path}; use an id from the checklist"
                )
            elif mark.args[0] not in ids:
                ids.append(mark.args[0])
        return tuple(ids), problems

    @pytest.hookimpl(tryfirst=True)  # before -k and -m: every marker is checked, every probe mapped
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        kept: list[pytest.Item] = []
        deselected: list[pytest.Item] = []
        for item in items:
            ids, problems = self._marker_problems(item)
            if problems:
                path, line, _ = item.location
                message = f"{path}:{(line or 0) + 1}: {item.nodeid}: " + "; ".join(problems)
                report = pytest.CollectReport(
                    item.nodeid, "failed", message, [], preflight_message=message
                )
                item.ihook.pytest_collectreport(report=report)  # fails the session
                continue
            for item_id in ids:
                self.collected.setdefault(item_id, []).append(item.nodeid)
            selected = self.run.selected if self.run is not None else None
            if ids and selected is not None and not selected.intersection(ids):
                deselected.append(item)
                continue
            if ids:
                self.probes[item.nodeid] = ids
            kept.append(item)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = kept

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        running = {item.nodeid for item in session.items}  # after -k, -m and the selection
        self.probes = {nodeid: ids for nodeid, ids in self.probes.items() if nodeid in running}
        if self.run is not None:
            self.run.on_collected(self.probes)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.errors.append(_collect_error(report))

    # -- running ---------------------------------------------------------------------------

    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        if nodeid in self.probes:
            self.started += 1
            if self.run is not None:
                self.run.on_start(nodeid, self.probes[nodeid], self.started, len(self.probes))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        budget = self.budgets.get(item.nodeid, DEFAULT_BUDGET_S)
        if self.run is None and (self.target is None or not self.target.started):
            budget += TARGET_START_BUDGET_S  # this setup may start the bundled system
        with self._budget(item, budget):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        with self._budget(item, self.budgets.get(item.nodeid, DEFAULT_BUDGET_S)):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, None, None]:
        with self._budget(item, self.budgets.get(item.nodeid, DEFAULT_BUDGET_S)):
            return (yield)

    def _budget(self, item: pytest.Item, seconds: float) -> contextlib.AbstractContextManager[None]:
        return time_budget(seconds) if item.nodeid in self.probes else contextlib.nullcontext()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        ids = self.probes.get(item.nodeid)
        if ids is not None:
            progress = self.progress.setdefault(item.nodeid, _Progress(ids))
            if call.when == "setup" and item.get_closest_marker("xfail") is not None:
                progress.forced = (Outcome.ERROR, XFAIL_MESSAGE)
            outcome, message = _classify(call)
            if call.excinfo is not None and isinstance(call.excinfo.value, BudgetExceeded):
                log = self.evidence.setdefault(
                    item.nodeid, EvidenceLog(self.redactor, self.edge_url)
                )
                log.attach(f"stack when the {call.when} budget ran out", call.excinfo.value.stack)
            progress.add(call.when, outcome, self.redactor.text(message), call.duration)
        return report

    def pytest_runtest_logfinish(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        progress = self.progress.pop(nodeid, None)
        if progress is None:
            return
        result = progress.result(nodeid, self.evidence.pop(nodeid, None))
        self.results.append(result)
        if self.run is not None:
            self.run.on_result(result)

    # -- the end ---------------------------------------------------------------------------

    def probe_results(self) -> ProbeResults:
        return ProbeResults(
            results=list(self.results),
            collected={k: list(v) for k, v in self.collected.items()},
            errors=list(self.errors),
        )

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus == pytest.ExitCode.OK and any(
            r.outcome in (Outcome.FAIL, Outcome.ERROR) for r in self.results
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # e.g. a probe marked xfail
        results = self.probe_results()
        if self.harvest is not None:
            self.harvest.results = results
        option = self.config.getoption("preflight_results")
        if option:
            path = Path(option)
            if not path.is_absolute():
                path = self.config.invocation_params.dir / path
            path.parent.mkdir(parents=True, exist_ok=True)
            results.write(path)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        by_item: dict[str, list[ProbeResult]] = {}
        for result in self.results:
            for item_id in result.items:
                by_item.setdefault(item_id, []).append(result)
        if not by_item:
            return
        terminalreporter.ensure_newline()
        terminalreporter.section("preflight checklist items")
        counts: dict[Outcome, int] = {}
        for item_id, results in by_item.items():
            outcome, reason = combine(results)
            counts[outcome] = counts.get(outcome, 0) + 1
            colour = {Outcome.PASS: "green", Outcome.SKIP: "yellow"}.get(outcome, "red")
            terminalreporter.write_line(
                f"{outcome.value.upper():<5} {item_id}: {reason}", **{colour: True}
            )
        summary = ", ".join(f"{n} {o.value}" for o, n in sorted(counts.items(), key=_by_rank))
        items = f"{len(by_item)} checklist item{'s' if len(by_item) != 1 else ''}"
        terminalreporter.write_line(f"{items}: {summary}")


_STATE = pytest.StashKey[_State]()


def _marks_in_source_order(item: pytest.Item) -> list[pytest.Mark]:
    """The test's own checklist markers top to bottom (decorators apply bottom-up), then its
    class's and module's."""
    own = [m for node, m in item.iter_markers_with_node(MARKER) if node is item]
    inherited = [m for node, m in item.iter_markers_with_node(MARKER) if node is not item]
    return [*reversed(own), *inherited]


def _budget_of(marks: Sequence[pytest.Mark]) -> tuple[float, list[str]]:
    """The probe's budget per phase and the problems with its markers' budgets: a checklist
    marker's `budget=` (the largest) before the nearest `budget(seconds)` marker, else the
    default."""
    own: list[float] = []
    general: list[float] = []
    problems: list[str] = []
    for mark in marks:
        if mark.name == BUDGET:
            values, where = (*mark.args, *mark.kwargs.values()), f"{BUDGET}(...)"
            if len(values) != 1:
                problems.append(f"marker {where} takes one number of seconds")
                continue
            value, found = values[0], general
        else:
            extra = [key for key in mark.kwargs if key != BUDGET]
            if extra:
                problems.append(
                    f"marker {MARKER}(...) takes only the keyword {BUDGET}= (got {extra[0]}=)"
                )
            if BUDGET not in mark.kwargs:
                continue
            value, found, where = mark.kwargs[BUDGET], own, f"{MARKER}(..., {BUDGET}=)"
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            problems.append(f"marker {where} must be seconds > 0 (got {value!r})")
        else:
            found.append(float(value))
    budget = max(own) if own else general[0] if general else DEFAULT_BUDGET_S
    return budget, problems


def _by_rank(pair: tuple[Outcome, int]) -> int:
    return -_RANK.get(pair[0], 0)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _classify(call: pytest.CallInfo[None]) -> tuple[Outcome | None, str]:
    """One phase's outcome: a failed assertion in the test body is `fail` (the system is
    off-spec); anything else that breaks is `error` (the probe could not decide)."""
    excinfo = call.excinfo
    if excinfo is None:
        return (Outcome.PASS, "") if call.when == "call" else (None, "")
    exc = excinfo.value
    if isinstance(exc, pytest.xfail.Exception):
        return Outcome.ERROR, XFAIL_MESSAGE
    if isinstance(exc, BudgetExceeded):
        return Outcome.ERROR, f"{exc} during {call.when} (its stack is in the evidence)"
    if isinstance(exc, pytest.skip.Exception):
        return Outcome.SKIP, _first_line(exc.msg or "") or "skipped"
    if call.when == "call" and isinstance(exc, AssertionError | pytest.fail.Exception):
        return Outcome.FAIL, _first_line(str(exc)) or f"{excinfo.typename} without a message"
    detail = _first_line(str(exc))
    waited = _waited_for(str(exc))
    return Outcome.ERROR, f"{excinfo.typename} during {call.when}" + (
        f": {detail}" if detail else ""
    ) + (f" ({waited})" if waited and waited not in detail else "")


def _waited_for(text: str) -> str:
    """What a timed-out step waited for, from the call log a browser driver's timeout carries
    (Playwright: `Call log:` then `- waiting for get_by_label("Question")`): the first line names
    only the action, which leaves a reader guessing which of a journey's steps never happened."""
    steps = (line.strip().removeprefix("- ") for line in text.splitlines())
    return next((step for step in steps if step.startswith("waiting for ")), "")


def _collect_error(report: pytest.CollectReport) -> str:
    """One sentence for a collection error: its own message, or the last `E   ` line."""
    own = getattr(report, "preflight_message", None)
    if isinstance(own, str):
        return own
    text = str(report.longrepr)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    error_lines = [line[1:].strip() for line in lines if line.startswith("E ")]
    detail = error_lines[-1] if error_lines else _first_line(text)
    return f"{report.nodeid or 'the session'} cannot be collected: {detail}"


# -- preflight run -------------------------------------------------------------------------------


def _package_root(path: Path) -> Path:
    directory = path if path.is_dir() else path.parent
    while (directory.parent / "__init__.py").exists():
        directory = directory.parent
    return directory


@contextlib.contextmanager
def _isolated_imports(paths: Sequence[Path]) -> Iterator[None]:
    """Forget the probe modules and sys.path entries a run added, so the next run imports its
    own (another tree's test_tls.py must not meet this one's in sys.modules)."""
    roots = [_package_root(p.resolve()) for p in paths]
    saved_path = list(sys.path)
    before = set(sys.modules)
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None)
            if file and any(Path(file).resolve().is_relative_to(root) for root in roots):
                del sys.modules[name]


def _rootdir(paths: Sequence[Path]) -> Path:
    """The working directory when the probes are inside it (node ids like checks/security/...),
    else their common ancestor. pytest's own choice, the common ancestor of the working directory
    and the paths, would name probes after wherever the caller happens to stand."""
    cwd = Path.cwd()
    resolved = [p.resolve() for p in paths]
    if all(p.is_relative_to(cwd) for p in resolved):
        return cwd
    root = Path(os.path.commonpath(resolved))
    return root if root.is_dir() else root.parent


def _main(paths: Sequence[Path], args: Sequence[str], plugins: list[object]) -> ProbeResults:
    harvest = _Harvest()
    argv = [
        *map(str, paths),
        f"--rootdir={_rootdir(paths)}",
        "-p",
        "no:cacheprovider",
        # The caller imported preflight before pytest started, so pytest cannot assertion-rewrite
        # the plugin's package (only probe modules need it) and warns; with filterwarnings=error
        # that warning would end the run.
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        # An object another probe dropped without closing (a socket, a transport) is collected
        # during whichever probe runs next; under a caller's filterwarnings=error pytest's
        # report of it would become that probe's error, a verdict on an unrelated item.
        "-W",
        "default::pytest.PytestUnraisableExceptionWarning",
        # schemathesis's pytest plugin (for schemathesis-style tests, which no probe is) imports
        # part of schemathesis when a session starts. A caller that later forgets the modules a
        # session imported (pytester does) leaves the parent package pointing at modules that
        # are gone, and the contract probe's engine then emits events of classes the probe no
        # longer recognises: 0 operations seen after a complete run.
        "-p",
        "no:schemathesis",
        *args,
    ]
    with _isolated_imports(paths):
        code = pytest.main(argv, plugins=[*plugins, harvest])
    if code == pytest.ExitCode.INTERRUPTED and harvest.results and not harvest.results.errors:
        # Ctrl-C or SIGTERM: pytest caught it and ended the session; the run must end too,
        # not decide items from half the probes.
        raise KeyboardInterrupt("while the probes ran")
    if harvest.results is None:
        where = ", ".join(map(str, paths))
        raise PreflightError(
            f"pytest could not run the probes in {where} (exit code {int(code)}); "
            "its own message is printed above"
        )
    return harvest.results


def run_probes(
    paths: list[Path], ctx: RunContext, checklist_path: Path, extra_args: Sequence[str] = ()
) -> ProbeResults:
    """Run the probes under `paths` in this process against `ctx.target` (already running; it is
    neither started nor stopped here). Collection errors come back in `errors`; they stop the
    run as in pytest unless extra_args has --continue-on-collection-errors."""
    return _main(paths, [f"--checklist={checklist_path}", *extra_args], [ctx])


def collect_probes(paths: list[Path], checklist_path: Path) -> ProbeResults:
    """Which tests decide which items, and every collection error; starts no target."""
    return _main(paths, [f"--checklist={checklist_path}", "--collect-only"], [])

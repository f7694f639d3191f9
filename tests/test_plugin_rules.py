"""The plugin's rules that keep a verdict honest and the gate answering: every probe phase has a
time budget, and a pass must show evidence."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

from preflight.budget import BudgetExceeded, time_budget
from preflight.outcomes import Outcome
from preflight.plugin import NO_EVIDENCE_MESSAGE, RunContext, run_probes
from tests.test_plugin import CHECKLIST, fake_info

HANGING_PROBES = """
import threading
import time

import pytest

@pytest.mark.checklist("DEMO-ONE", budget=1)
def test_waits_on_a_lock_forever(evidence):
    evidence.note("about to wait")
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # like a forked worker waiting on a lock its parent held: never returns

@pytest.mark.checklist("DEMO-TWO", budget=1)
def test_swallows_exceptions_while_sleeping(evidence):
    while True:
        try:
            time.sleep(3600)
        except Exception:
            pass

@pytest.mark.checklist("DEMO-THREE")
def test_after_them(evidence):
    evidence.note("the run went on")
"""


def write_tree(root: Path, source: str) -> Path:
    (root / "probes").mkdir(parents=True)
    (root / "checklist.yaml").write_text(CHECKLIST)
    (root / "probes" / "test_probe.py").write_text(textwrap.dedent(source))
    return root


def test_a_probe_that_never_returns_ends_as_error_within_its_budget(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, HANGING_PROBES)
    started = time.monotonic()
    results = run_probes([tree / "probes"], RunContext(target=fake_info()), tree / "checklist.yaml")
    assert time.monotonic() - started < 30
    got = {r.nodeid.split("::")[1]: r for r in results.results}
    lock, sleeper, after = (
        got["test_waits_on_a_lock_forever"],
        got["test_swallows_exceptions_while_sleeping"],
        got["test_after_them"],
    )
    for hung in (lock, sleeper):
        assert hung.outcome is Outcome.ERROR
        assert hung.message == (
            "ran past its time budget of 1 s during call (its stack is in the evidence)"
        )
        assert hung.duration_s < 10
    stack = next(e for e in lock.evidence if e["kind"] == "attachment")
    assert stack["name"] == "stack when the call budget ran out"
    assert "lock.acquire()" in stack["content"]
    assert lock.evidence[0] == {"kind": "note", "text": "about to wait"}
    assert after.outcome is Outcome.PASS


def test_a_budget_marker_must_be_positive_seconds(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path,
        """
        import pytest

        @pytest.mark.checklist("DEMO-ONE", budget=0)
        def test_zero(evidence):
            evidence.note("x")

        @pytest.mark.checklist("DEMO-ONE", timeout=5)
        def test_other_keyword(evidence):
            evidence.note("x")
        """,
    )
    results = run_probes(
        [tree / "probes"],
        RunContext(target=fake_info()),
        tree / "checklist.yaml",
        ["--continue-on-collection-errors"],
    )
    assert any("budget=) must be seconds > 0 (got 0)" in e for e in results.errors), results.errors
    assert any("takes only the keyword budget= (got timeout=)" in e for e in results.errors)


def test_the_budget_interrupts_a_probe_run_off_the_main_thread() -> None:
    caught: list[BaseException] = []

    def probe() -> None:
        try:
            with time_budget(0.5):
                while True:
                    time.sleep(0.01)
        except BudgetExceeded as exc:
            caught.append(exc)

    worker = threading.Thread(target=probe)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert isinstance(caught[0], BudgetExceeded)
    assert caught[0].seconds == 0.5
    assert "time.sleep(0.01)" in caught[0].stack


def test_a_probe_that_passes_without_evidence_is_an_error(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path,
        """
        import pytest

        @pytest.mark.checklist("DEMO-ONE")
        def test_looks_at_nothing():
            pass

        @pytest.mark.checklist("DEMO-TWO")
        def test_asks_for_evidence_but_records_none(evidence):
            pass

        @pytest.mark.checklist("DEMO-THREE")
        def test_records_what_it_saw(evidence):
            evidence.figure("open ports", 2)

        @pytest.mark.checklist("DEMO-THREE")
        def test_a_skip_needs_none():
            pytest.skip("no Redis URL")
        """,
    )
    results = run_probes([tree / "probes"], RunContext(target=fake_info()), tree / "checklist.yaml")
    got = {r.nodeid.split("::")[1]: (r.outcome, r.message) for r in results.results}
    assert got == {
        "test_looks_at_nothing": (Outcome.ERROR, NO_EVIDENCE_MESSAGE),
        "test_asks_for_evidence_but_records_none": (Outcome.ERROR, NO_EVIDENCE_MESSAGE),
        "test_records_what_it_saw": (Outcome.PASS, ""),
        "test_a_skip_needs_none": (Outcome.SKIP, "no Redis URL"),
    }


def test_a_module_budget_marker_bounds_a_family_of_long_probes(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path,
        """
        import time

        import pytest

        pytestmark = pytest.mark.budget(1)

        @pytest.mark.checklist("DEMO-ONE")
        def test_sleeps(evidence):
            time.sleep(3600)

        @pytest.mark.checklist("DEMO-TWO", budget=2)
        def test_its_own_budget_wins(evidence):
            time.sleep(3600)
        """,
    )
    results = run_probes([tree / "probes"], RunContext(target=fake_info()), tree / "checklist.yaml")
    assert [(r.outcome, r.message.split(" during")[0]) for r in results.results] == [
        (Outcome.ERROR, "ran past its time budget of 1 s"),
        (Outcome.ERROR, "ran past its time budget of 2 s"),
    ]

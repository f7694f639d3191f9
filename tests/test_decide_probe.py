"""Probe items: a pass means every test that decides the item ran and passed; a skipped part
holds the item at `skip` with that part's reason unless the checklist marks it optional."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from preflight.checklist import Item, OptionalPart, load_checklist
from preflight.decide import decide_probe
from preflight.outcomes import UNDECIDED, Outcome, ProbeResult, ProbeResults, combine

REPO = Path(__file__).resolve().parents[1]
STRONG = "checks/application/test_supervision.py::test_a_killed_worker_is_restarted"
WEAK = "checks/application/test_supervision.py::test_the_workers_run_under_a_supervisor"


def item(**kw: object) -> Item:
    base = next(i for i in load_checklist(REPO / "checklist.yaml").items if i.verify == "probe")
    return dataclasses.replace(base, id="T-ITEM", **kw)  # type: ignore[arg-type]


def probes(*results: tuple[str, Outcome, str]) -> ProbeResults:
    return ProbeResults(
        results=[
            ProbeResult(
                nodeid, ("T-ITEM",), outcome, message, 0.1, ({"kind": "note", "text": "x"},)
            )
            for nodeid, outcome, message in results
        ],
        collected={"T-ITEM": [r[0] for r in results]},
    )


HALF = probes(
    (WEAK, Outcome.PASS, ""),
    (STRONG, Outcome.SKIP, "the target file gives no control over the API workers"),
)


def test_an_item_whose_tests_passed_and_skipped_is_not_a_pass() -> None:
    decision = decide_probe(item(), HALF)
    assert decision.outcome is Outcome.SKIP
    assert decision.reason == (
        "1 of 2 probes passed, 1 did not run: the target file gives no control over the API "
        f"workers [{STRONG}]"
    )


def test_a_part_the_checklist_marks_optional_for_a_capability_may_skip() -> None:
    optional = (OptionalPart("*::test_a_killed_worker_*", "control of the API workers"),)
    decision = decide_probe(item(optional=optional), HALF)
    assert decision.outcome is Outcome.PASS
    assert decision.reason == "1 of 2 probes passed (1 optional without control of the API workers)"


def test_every_part_passing_is_a_pass_and_a_failure_still_wins() -> None:
    both = probes((WEAK, Outcome.PASS, ""), (STRONG, Outcome.PASS, ""))
    assert decide_probe(item(), both).outcome is Outcome.PASS
    failed = probes((WEAK, Outcome.FAIL, "no supervisor"), (STRONG, Outcome.SKIP, "no control"))
    assert decide_probe(item(), failed).outcome is Outcome.FAIL


def test_all_parts_skipped_is_a_skip_with_the_first_reason() -> None:
    skipped = probes((WEAK, Outcome.SKIP, "no DSN"), (STRONG, Outcome.SKIP, "no control"))
    decision = decide_probe(item(), skipped)
    assert (decision.outcome, decision.reason) == (Outcome.SKIP, f"no DSN [{WEAK}]")


def test_the_checklist_schema_takes_optional_parts(tmp_path: Path) -> None:
    text = (REPO / "checklist.yaml").read_text()
    marker = "- id: INF-RES-CPU\n"
    path = tmp_path / "checklist.yaml"
    path.write_text(
        text.replace(
            marker,
            marker + "  optional: [{test: 'checks/x.py::test_*', when_missing: control}]\n",
            1,
        )
    )
    cpu = next(i for i in load_checklist(path).items if i.id == "INF-RES-CPU")
    assert cpu.optional_for("checks/x.py::test_y") == "control"
    assert cpu.optional_for("checks/z.py::test_y") is None


def test_a_probe_the_target_cannot_decide_yet_leaves_its_item_unverified_not_skipped() -> None:
    undecided = ProbeResult("c.py::t", ("X",), Outcome.SKIP, UNDECIDED + "no history yet", 0.1)
    passed = ProbeResult("c.py::p", ("X",), Outcome.PASS, "", 0.1)
    failed = ProbeResult("c.py::f", ("X",), Outcome.FAIL, "too slow", 0.1)
    assert combine([passed, undecided]) == (Outcome.UNVERIFIED, "no history yet [c.py::t]")
    assert combine([undecided, failed])[0] is Outcome.FAIL
    plain = ProbeResult("c.py::s", ("X",), Outcome.SKIP, "not a k8s target", 0.1)
    assert combine([plain])[0] is Outcome.SKIP

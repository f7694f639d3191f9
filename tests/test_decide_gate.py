"""The gate policy: a fail or error of any severity blocks under the shipped policy, a checklist
may lower a severity's failures to warnings, and the verdict says which policy decided."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from preflight.checklist import Checklist, load_checklist
from preflight.decide import Decision, gate
from preflight.outcomes import Outcome
from tests.test_plugin import ITEM

REPO = Path(__file__).resolve().parents[1]

SEVERITIES = ("critical", "high", "medium", "low")


def checklist(tmp_path: Path, gate_yaml: str) -> Checklist:
    items = "".join(
        ITEM.format(id=f"T-{s.upper()}").replace("severity: high", f"severity: {s}")
        for s in SEVERITIES
    )
    path = tmp_path / "checklist.yaml"
    path.write_text(f"version: 1\ngate:\n{gate_yaml}items:\n{items}")
    return load_checklist(path)


def decisions(checklist: Checklist, **outcomes: Outcome) -> list[Decision]:
    """Every item passes except those named (by severity) with another outcome."""
    return [
        Decision(item, True, outcomes.get(item.severity, Outcome.PASS), "decided by the test")
        for item in checklist.items
    ]


# The gate section of the repository's checklist, as written there.
SHIPPED_GATE = textwrap.indent(
    yaml.safe_dump(yaml.safe_load((REPO / "checklist.yaml").read_text())["gate"]), "  "
)


def test_the_shipped_policy_blocks_a_failing_low_or_medium_item(tmp_path: Path) -> None:
    shipped = checklist(tmp_path, SHIPPED_GATE)
    for severity in ("low", "medium"):
        for outcome in (Outcome.FAIL, Outcome.ERROR):
            verdict = gate(shipped, decisions(shipped, **{severity: outcome}))
            assert not verdict.ready, (severity, outcome)
            assert verdict.blocking == (f"T-{severity.upper()}",)
            assert verdict.warnings == ()


def test_skip_and_unverified_block_by_severity_as_before(tmp_path: Path) -> None:
    shipped = checklist(tmp_path, SHIPPED_GATE)
    for outcome in (Outcome.SKIP, Outcome.UNVERIFIED):
        assert gate(shipped, decisions(shipped, low=outcome, medium=outcome)).ready
        assert gate(shipped, decisions(shipped, high=outcome)).blocking == ("T-HIGH",)
    assert gate(shipped, decisions(shipped, critical=Outcome.WAIVED)).ready


def test_the_verdict_names_the_policy_that_decided(tmp_path: Path) -> None:
    shipped = checklist(tmp_path, SHIPPED_GATE)
    verdict = gate(shipped, decisions(shipped, low=Outcome.FAIL))
    assert verdict.policy == "any fail or error blocks; skip/unverified block for critical, high"
    assert verdict.summary(12).startswith(
        "NOT READY (policy: any fail or error blocks; skip/unverified block for critical, high) - "
    )
    assert verdict.to_json(12)["policy"] == verdict.policy


def test_a_team_may_lower_low_to_a_warning_listed_under_the_verdict(tmp_path: Path) -> None:
    lowered = checklist(tmp_path, "  warn_only: [low]\n" + SHIPPED_GATE)
    verdict = gate(lowered, decisions(lowered, low=Outcome.FAIL))
    assert verdict.ready
    assert verdict.warnings == ("T-LOW",)
    assert verdict.policy.startswith("any fail or error blocks (low: warning); ")
    assert verdict.summary(3).endswith(" 1 warning in 3 s")
    assert verdict.to_json(3)["warnings"] == ["T-LOW"]
    # A medium failure still blocks.
    assert gate(lowered, decisions(lowered, medium=Outcome.ERROR)).blocking == ("T-MEDIUM",)


def test_a_checklist_without_blocks_gets_the_strict_default(tmp_path: Path) -> None:
    legacy = checklist(tmp_path, "  must_be:\n    critical: [pass, waived, attested]\n")
    assert legacy.policy.blocks == ("fail", "error")
    assert not gate(legacy, decisions(legacy, low=Outcome.FAIL)).ready


def test_an_item_not_selected_never_blocks(tmp_path: Path) -> None:
    shipped = checklist(tmp_path, SHIPPED_GATE)
    chosen = [
        Decision(d.item, d.item.severity != "low", d.outcome, d.reason)
        for d in decisions(shipped, low=Outcome.FAIL)
    ]
    assert gate(shipped, chosen).ready

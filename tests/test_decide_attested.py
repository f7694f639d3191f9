"""Probe items that their owner must attest as well (`attest: true`): the probes decide a fail, the
item stays unverified until the owner's attestation holds, and it passes only with both."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from preflight.checklist import Item, load_checklist
from preflight.decide import decide_probe_attested
from preflight.errors import ChecklistInvalid
from preflight.outcomes import Outcome, ProbeResult, ProbeResults

REPO = Path(__file__).resolve().parents[1]
TEST = "checks/operations/test_oncall.py::test_the_rota_covers_the_launch_window"
VALID: dict[str, Any] = {"status": "valid", "signer": "Ada", "expires": "2027-02-23"}
EXPIRED: dict[str, Any] = {
    "status": "expired",
    "signer": "Ada",
    "reason": "the attestation by ops-lead (Ada) expired on 2026-01-01",
}


def item() -> Item:
    base = next(i for i in load_checklist(REPO / "checklist.yaml").items if i.verify == "probe")
    return dataclasses.replace(base, id="T-ITEM", owner="ops-lead", attest=True)


def probes(outcome: Outcome, message: str = "") -> ProbeResults:
    result = ProbeResult(TEST, ("T-ITEM",), outcome, message, 0.1, ())
    return ProbeResults(results=[result], collected={"T-ITEM": [TEST]})


def test_a_failing_probe_fails_the_item_whatever_the_attestation_says() -> None:
    decision = decide_probe_attested(item(), probes(Outcome.FAIL, "a gap at 03:00"), VALID)
    assert decision.outcome is Outcome.FAIL
    assert "a gap at 03:00" in decision.reason
    assert decision.attestation == VALID


def test_a_passing_probe_without_an_attestation_is_unverified() -> None:
    decision = decide_probe_attested(item(), probes(Outcome.PASS), None)
    assert decision.outcome is Outcome.UNVERIFIED
    assert decision.reason == (
        "1 of 1 probes passed, but the item needs its owner's attestation too: "
        "no signed attestation from ops-lead"
    )


def test_an_attestation_that_does_not_count_leaves_it_unverified_and_says_why() -> None:
    decision = decide_probe_attested(item(), probes(Outcome.PASS), EXPIRED)
    assert decision.outcome is Outcome.UNVERIFIED
    assert decision.reason.endswith("expired on 2026-01-01")


def test_both_a_passing_probe_and_a_valid_attestation_pass() -> None:
    decision = decide_probe_attested(item(), probes(Outcome.PASS), VALID)
    assert decision.outcome is Outcome.PASS
    assert decision.reason == "1 of 1 probes passed; attested by Ada (ops-lead) until 2027-02-23"


def test_no_probe_leaves_it_unverified_even_when_attested() -> None:
    decision = decide_probe_attested(item(), ProbeResults(), VALID)
    assert decision.outcome is Outcome.UNVERIFIED


def test_only_probe_items_carry_attest(tmp_path: Path) -> None:
    text = (REPO / "checklist.yaml").read_text()
    marker = "- id: OPS-TRAINING\n"
    assert marker in text
    path = tmp_path / "checklist.yaml"
    path.write_text(text.replace(marker, marker + "  attest: true\n", 1))
    with pytest.raises(ChecklistInvalid, match="field attest: only probe items carry attest"):
        load_checklist(path)

"""The on-call rota (system/docs/operations/oncall.yaml): every hour of the launch window has a
primary and a different secondary who can be paged, and each of them acknowledged a test page.
The ops lead attests what a file cannot say (the people agreed, the pages reached them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from checks.deployment._artefacts import Repo
from checks.operations._records import load_yaml, moment
from preflight.evidence import EvidenceLog

ROTA = "oncall.yaml"


def _people(rota: dict[str, Any]) -> dict[str, Any]:
    __tracebackhide__ = True
    people = rota.get("people")
    assert isinstance(people, dict), f"{ROTA} must list its people under `people`"
    assert people, f"{ROTA} must list its people under `people` (it lists none)"
    return people


def _on_the_rota(rota: dict[str, Any]) -> set[str]:
    return {
        str(shift.get(position))
        for shift in rota.get("shifts") or []
        if isinstance(shift, dict)
        for position in ("primary", "secondary")
    }


@pytest.mark.checklist("OPS-ONCALL-ROTA")
def test_the_rota_covers_the_launch_window(repo: Repo, evidence: EvidenceLog) -> None:
    """Alerts at night reach no one who can act when an hour of the launch has no one on call."""
    rota = load_yaml(repo, ROTA)
    window = rota.get("window") or {}
    start, end = (
        moment(window.get("start"), "window.start"),
        moment(window.get("end"), "window.end"),
    )
    assert start < end, f"{ROTA}: the window must end after it starts ({start} .. {end})"
    people = _people(rota)
    unpageable = sorted(n for n, p in people.items() if not (p or {}).get("pager"))
    assert not unpageable, f"{ROTA}: {', '.join(unpageable)} must have a pager address"
    shifts: list[tuple[datetime, datetime]] = []
    problems: list[str] = []
    for n, shift in enumerate(rota.get("shifts") or []):
        where = f"shifts[{n}]"
        begins, ends = (
            moment(shift.get("start"), f"{where}.start"),
            moment(shift.get("end"), f"{where}.end"),
        )
        primary, secondary = shift.get("primary"), shift.get("secondary")
        if not primary or not secondary:
            problems.append(f"{where} must name a primary and a secondary")
        elif primary == secondary:
            problems.append(f"{where} names {primary} as both primary and secondary")
        unknown = [p for p in (primary, secondary) if p and p not in people]
        if unknown:
            problems.append(f"{where} names {', '.join(map(str, unknown))}, not under `people`")
        if not problems:
            shifts.append((begins, ends))
    assert not problems, f"{ROTA}: " + "; ".join(problems)
    gaps: list[str] = []
    covered = start
    for begins, ends in sorted(shifts):
        if begins > covered and covered < end:
            gaps.append(f"{covered:%Y-%m-%d %H:%M} .. {min(begins, end):%Y-%m-%d %H:%M}")
        covered = max(covered, ends)
    if covered < end:
        gaps.append(f"{covered:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}")
    evidence.note(f"{ROTA}: window {start} .. {end}, {len(shifts)} shifts, {len(people)} people")
    assert not gaps, f"{ROTA}: no one is on call from {'; '.join(gaps)} UTC"


@pytest.mark.checklist("OPS-ONCALL-SHIFTS")
def test_everyone_on_the_rota_acknowledged_a_test_page(repo: Repo, evidence: EvidenceLog) -> None:
    """A rota whose members cannot be paged is a rota in name only."""
    rota = load_yaml(repo, ROTA)
    _people(rota)
    acknowledged: dict[str, datetime] = {}
    for n, page in enumerate(rota.get("test_pages") or []):
        sent = moment(page.get("sent"), f"test_pages[{n}].sent")
        ack = moment(page.get("acknowledged"), f"test_pages[{n}].acknowledged")
        assert sent <= ack, f"{ROTA}: test_pages[{n}] was acknowledged before it was sent"
        acknowledged[str(page.get("person"))] = ack
    on_call = sorted(_on_the_rota(rota))
    evidence.note(f"{ROTA}: test pages acknowledged by {sorted(acknowledged) or 'no one'}")
    missing = [p for p in on_call if p not in acknowledged]
    assert not missing, (
        f"{ROTA}: {', '.join(missing)} on the rota acknowledged no test page (`test_pages`); "
        "send one to each and record when they acknowledged it"
    )

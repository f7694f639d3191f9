"""From what ran to a verdict: one outcome per checklist item, then the gate.

Probe items take the combined outcome of their tests; load items take the load runner's
figures (unverified unless the profile that ran reached the item's scale); manual items are
decided only by a valid signed attestation for the run's release. A probe item with `attest`
needs both: its probes decide a fail, and it passes only once its owner's attestation holds too.
A fail becomes `waived` only when active waivers name every one of its failures.
Nothing is ever `pass` because nothing looked: an item that nothing decided is `unverified`.
Sign-off items (`verify: signoff`) are decided after the run by signatures on its record
(preflight/final_verdict.py): the run leaves them unverified and its gate does not count them.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from preflight.checklist import Checklist, Item
from preflight.load.results import LoadFigure, LoadResults
from preflight.outcomes import OUTCOMES, Outcome, ProbeResult, ProbeResults, combine
from preflight.waivers import Waiver


@dataclass(frozen=True)
class Decision:
    item: Item
    selected: bool
    outcome: Outcome
    reason: str
    tests: tuple[ProbeResult, ...] = ()
    waiver: Mapping[str, Any] | None = None
    attestation: Mapping[str, Any] | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)


COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def decide_probe(item: Item, probes: ProbeResults) -> Decision:
    results = probes.for_item(item.id)
    if results:
        outcome, reason = combine(results, lambda r: item.optional_for(r.nodeid))
        return Decision(item, True, outcome, reason, tuple(results))
    if item.id in probes.collected:
        reason = "its probes were collected but none ran"
    else:
        reason = "no probe in checks/ is marked with this item"
    return Decision(item, True, Outcome.UNVERIFIED, reason)


def decide_probe_attested(
    item: Item, probes: ProbeResults, attestation: Mapping[str, Any] | None
) -> Decision:
    """A probe item that its owner must attest as well (`attest: true`): what the machine can
    check is its probes, the human judgement is the attestation. Its probes failing, erring or
    skipping decide it alone; once they pass it is unverified until the attestation holds, and a
    pass only with both."""
    decision = decide_probe(item, probes)
    if decision.outcome is not Outcome.PASS:
        return replace(decision, attestation=attestation)
    if attestation is not None and attestation.get("status") == "valid":
        signer, expires = attestation.get("signer"), attestation.get("expires")
        reason = f"{decision.reason}; attested by {signer} ({item.owner}) until {expires}"
        return replace(decision, reason=reason, attestation=attestation)
    missing = (
        str(attestation.get("reason") or f"attestation is {attestation.get('status')}")
        if attestation is not None
        else f"no signed attestation from {item.owner}"
    )
    reason = f"{decision.reason}, but the item needs its owner's attestation too: {missing}"
    return replace(decision, outcome=Outcome.UNVERIFIED, reason=reason, attestation=attestation)


def decide_load(item: Item, load: LoadResults) -> Decision:
    expected = {"metric": item.metric, "comparison": item.comparison, "value": item.value}
    if not load.ran:
        return Decision(item, True, Outcome.UNVERIFIED, load.reason, figures=expected)
    figure = load.figures.get(item.metric or "")
    if figure is None:
        reason = load.absent.get(item.metric or "") or (
            f"load profile {load.profile} did not measure {item.metric}"
        )
        return Decision(item, True, Outcome.UNVERIFIED, reason, figures=expected)
    short = {k: (v, figure.scale_reached.get(k, 0)) for k, v in item.scale.items()}
    short = {k: (need, got) for k, (need, got) in short.items() if got < need}
    figures = {
        **expected,
        "measured": figure.measured,
        "unit": figure.unit,
        "scale_reached": not short,
        "scale": {"needed": dict(item.scale), "reached": dict(figure.scale_reached)},
    }
    if not load.valid:
        reason = f"load profile {load.profile} is not evidence: {load.invalid_reason}"
        return Decision(item, True, Outcome.UNVERIFIED, reason, figures=figures)
    if short:
        gaps = ", ".join(f"{k} {got} of {need}" for k, (need, got) in short.items())
        reason = f"load profile {load.profile} did not reach the item's scale ({gaps})"
        if load.reason:
            reason += f"; {load.reason}"
        return Decision(item, True, Outcome.UNVERIFIED, reason, figures=figures)
    if item.comparison is None or item.value is None:  # the schema requires both on load items
        raise ValueError(f"{item.id}: a load item without comparison or value")
    ok = COMPARE[item.comparison](figure.measured, item.value)
    sentence = (
        f"{item.metric} must be {item.comparison} {item.value:g} "
        f"(measured {figure.measured:g} with profile {load.profile})"
    )
    return Decision(item, True, Outcome.PASS if ok else Outcome.FAIL, sentence, figures=figures)


# A load metric the runner does not measure: the number of the run's other selected load items
# that did not pass (decide_load_gate), for an item such as "every load item passed".
LOAD_GATE_METRIC = "load_items_not_passed"


def decide_load_gate(item: Item, others: Sequence[Decision], load: LoadResults) -> Decision:
    """Decide `item` (metric LOAD_GATE_METRIC) from the decisions of the other load items: any
    of them undecided leaves it unverified; otherwise it compares how many did not pass."""
    if load.ran:
        undecided = [d for d in others if d.outcome not in (Outcome.PASS, Outcome.FAIL)]
        if undecided:
            first = undecided[0]
            reason = (
                f"{len(undecided)} of {len(others)} load items undecided "
                f"({', '.join(d.item.id for d in undecided)}; {first.item.id}: {first.reason})"
            )
            expected = {"metric": item.metric, "comparison": item.comparison, "value": item.value}
            return Decision(item, True, Outcome.UNVERIFIED, reason, figures=expected)
        failed = [d for d in others if d.outcome is Outcome.FAIL]
        figure = LoadFigure(LOAD_GATE_METRIC, len(failed), load.scale_reached, "items")
        load = replace(load, figures={**load.figures, LOAD_GATE_METRIC: figure})
    decision = decide_load(item, load)
    failed_ids = [d.item.id for d in others if d.outcome is Outcome.FAIL]
    if decision.outcome is Outcome.FAIL:
        decision = replace(decision, reason=f"{decision.reason}: {', '.join(failed_ids)} failed")
    return decision


def decide_signoff(item: Item) -> Decision:
    """A sign-off item at run time: its owner signs the record this run writes, afterwards."""
    reason = (
        f"decided by {item.owner}'s signature on this run's record: "
        f"`preflight sign --role {item.owner} RECORD`, then `preflight verify RECORD`"
    )
    return Decision(item, True, Outcome.UNVERIFIED, reason)


def decide_manual(item: Item, attestation: Mapping[str, Any] | None) -> Decision:
    if item.verify == "signoff":
        return decide_signoff(item)
    if attestation is None:
        reason = f"no signed attestation from {item.owner}"
        return Decision(item, True, Outcome.UNVERIFIED, reason)
    if attestation.get("status") == "valid":
        signer, expires = attestation.get("signer"), attestation.get("expires")
        reason = f"attested by {signer} ({item.owner}) until {expires}"
        return Decision(item, True, Outcome.ATTESTED, reason, attestation=attestation)
    reason = str(attestation.get("reason") or f"attestation is {attestation.get('status')}")
    return Decision(item, True, Outcome.UNVERIFIED, reason, attestation=attestation)


def apply_waiver(decision: Decision, waivers: Sequence[Waiver], now: datetime) -> Decision:
    """Only a fail is waived, and only when every failure of the item is one an active waiver
    names (by test node id or message): an error or unverified item is not a known risk that
    someone accepted, it is an unknown one, and neither is a failure no waiver names."""
    active = [w for w in waivers if w.active(now)]
    if not active:
        return decision
    if decision.outcome is not Outcome.FAIL:
        return replace(decision, waiver=active[0].to_json(now))
    used: list[Waiver] = []
    uncovered: list[str] = []
    failures: list[tuple[str | None, str, Outcome]] = [
        (t.nodeid, t.message, t.outcome)
        for t in decision.tests
        if t.outcome in (Outcome.FAIL, Outcome.ERROR)
    ] or [(None, decision.reason, Outcome.FAIL)]  # decided without tests (a load figure)
    for nodeid, message, outcome in failures:
        waiver = next((w for w in active if w.covers(nodeid, message)), None)
        if outcome is Outcome.ERROR or waiver is None:
            why = "errored (a waiver covers only failures)" if outcome is Outcome.ERROR else ""
            uncovered.append(f"{nodeid or 'the item'} {why or 'failed'}: {message}")
        elif waiver not in used:
            used.append(waiver)
    if uncovered:
        scopes = "; ".join(f"{w.scope()}" for w in active)
        reason = (
            f"{decision.reason}; not waived: {len(uncovered)} failure"
            f"{'s' if len(uncovered) != 1 else ''} no waiver accepts ({'; '.join(uncovered)}); "
            f"the waiver{'s' if len(active) != 1 else ''} accept{'' if len(active) != 1 else 's'} "
            f"only {scopes}"
        )
        shown = {**active[0].to_json(now), "uncovered": uncovered}
        return replace(decision, reason=reason, waiver=shown)
    first = min(used, key=lambda w: w.expires)  # the item un-waives when this one expires
    reason = "; ".join(
        f"waived until {w.expires} by {w.approver} for {w.scope()}: {w.justification}" for w in used
    )
    return replace(
        decision,
        outcome=Outcome.WAIVED,
        reason=f"{reason} (was: {decision.reason})",
        waiver=first.to_json(now),
    )


def not_selected(item: Item, why: str) -> Decision:
    return Decision(item, False, Outcome.SKIP, f"not selected ({why})")


@dataclass(frozen=True)
class Verdict:
    ready: bool
    counts: dict[str, int]
    blocking: tuple[str, ...]
    policy: str = ""  # the gate policy that decided, in words (GatePolicy.describe)
    warnings: tuple[str, ...] = ()  # items whose failure the policy lowers to a warning

    @property
    def label(self) -> str:
        return "READY" if self.ready else "NOT READY"

    def summary(self, duration_s: float) -> str:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in self.counts.items())
        policy = f" (policy: {self.policy})" if self.policy else ""
        warned = f", {len(self.warnings)} warning{'s' * (len(self.warnings) != 1)}"
        return (
            f"{self.label}{policy} - {counts}{warned if self.warnings else ''} "
            f"in {duration_s:.0f} s"
        )

    def to_json(self, duration_s: float) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "label": self.label,
            "policy": self.policy,
            "counts": self.counts,
            "blocking": list(self.blocking),
            "warnings": list(self.warnings),
            "summary": self.summary(duration_s),
        }


def blocks(checklist: Checklist, decision: Decision) -> bool:
    """Whether the run's gate counts the item against the release; never a sign-off item, which
    only the signatures made after the run decide."""
    if decision.item.verify == "signoff":
        return False
    return decision.selected and checklist.policy.blocking(
        decision.item.severity, decision.outcome.value
    )


def warns(checklist: Checklist, decision: Decision) -> bool:
    """Whether the item's failure is a warning under the policy (it does not block)."""
    if decision.item.verify == "signoff":
        return False
    return decision.selected and checklist.policy.warning(
        decision.item.severity, decision.outcome.value
    )


def gate(checklist: Checklist, decisions: Sequence[Decision]) -> Verdict:
    """READY when no selected item blocks by the checklist's gate policy."""
    counts = Counter(d.outcome.value for d in decisions)
    blocking = tuple(d.item.id for d in decisions if blocks(checklist, d))
    return Verdict(
        ready=not blocking,
        counts={o.value: counts.get(o.value, 0) for o in OUTCOMES},
        blocking=blocking,
        policy=checklist.policy.describe(),
        warnings=tuple(d.item.id for d in decisions if warns(checklist, d)),
    )


def selection_filter(
    areas: Iterable[str] | None, severities: Iterable[str] | None
) -> Callable[[Item], str | None]:
    """A function saying why an item is not selected, or None when it is."""
    area_set = set(areas) if areas else None
    severity_set = set(severities) if severities else None

    def why_not(item: Item) -> str | None:
        if area_set is not None and item.area not in area_set:
            return f"--area {','.join(sorted(area_set))}"
        if severity_set is not None and item.severity not in severity_set:
            return f"--severity {','.join(sorted(severity_set))}"
        return None

    return why_not

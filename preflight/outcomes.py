"""The closed set of outcomes and the probe results that the pytest plugin hands to a run.

A probe (one pytest test) ends `pass`, `fail` (the system is off-spec), `error` (the probe could
not decide) or `skip` (not applicable, with a reason). An item adds `waived`, `attested` and
`unverified` (nothing decided it). One test may decide several items; one item may have several
tests: `combine` says what they amount to.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from preflight.errors import PreflightError


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"
    WAIVED = "waived"
    ATTESTED = "attested"
    UNVERIFIED = "unverified"


OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)
PROBE_OUTCOMES: tuple[Outcome, ...] = (Outcome.PASS, Outcome.FAIL, Outcome.ERROR, Outcome.SKIP)
PROBE_RESULTS_SCHEMA = "preflight.probe-results/1"

# Evidence is a list of small JSON objects, each with a `kind`:
#   {"kind": "request", "method", "url", "status", "headers": {...}, "body": "excerpt", ...}
#   {"kind": "figure", "name", "value", "unit"}
#   {"kind": "note", "text"}
#   {"kind": "attachment", "name", "media_type", "content"}   (text, or base64 when binary)
Evidence = dict[str, Any]


@dataclass(frozen=True)
class ProbeResult:
    """What one pytest test decided about the checklist items its markers name."""

    nodeid: str
    items: tuple[str, ...]
    outcome: Outcome  # one of PROBE_OUTCOMES
    message: str  # one sentence for fail, error and skip; "" for pass
    duration_s: float
    evidence: tuple[Evidence, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "items": list(self.items),
            "outcome": self.outcome.value,
            "message": self.message,
            "duration_s": round(self.duration_s, 4),
            "evidence": list(self.evidence),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeResult:
        return cls(
            nodeid=str(data["nodeid"]),
            items=tuple(str(i) for i in data["items"]),
            outcome=Outcome(data["outcome"]),
            message=str(data.get("message", "")),
            duration_s=float(data.get("duration_s", 0.0)),
            evidence=tuple(data.get("evidence", ())),
        )


@dataclass
class ProbeResults:
    """Every probe that ran, and which tests were collected for which item."""

    results: list[ProbeResult] = field(default_factory=list)
    collected: dict[str, list[str]] = field(default_factory=dict)  # item id -> node ids
    errors: list[str] = field(default_factory=list)  # collection errors, one sentence each

    def for_item(self, item_id: str) -> list[ProbeResult]:
        return [r for r in self.results if item_id in r.items]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": PROBE_RESULTS_SCHEMA,
            "results": [r.to_json() for r in self.results],
            "collected": self.collected,
            "errors": self.errors,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def read(cls, path: Path) -> ProbeResults:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PreflightError(f"{path}: cannot read probe results ({exc})") from None
        if not isinstance(data, dict) or data.get("schema") != PROBE_RESULTS_SCHEMA:
            raise PreflightError(f"{path}: not a {PROBE_RESULTS_SCHEMA} file")
        return cls(
            results=[ProbeResult.from_json(r) for r in data["results"]],
            collected={k: list(v) for k, v in data["collected"].items()},
            errors=list(data.get("errors", [])),
        )


# A skip whose message starts with this says the probe looked and the target holds nothing it
# could decide from yet (no production history, say): the item is `unverified`, not `skip`
# (not applicable). Probes say it with preflight.probe.undecided(reason).
UNDECIDED = "undecided: "


def combine(
    results: Sequence[ProbeResult], optional: Callable[[ProbeResult], str | None] | None = None
) -> tuple[Outcome, str]:
    """An item's outcome from its tests: any fail -> fail; else any error -> error; else any
    part the target could not yet decide (UNDECIDED) -> unverified; else any skipped part ->
    skip, with that part's reason (a pass says every part looked); else pass. No test at all
    -> unverified. `optional` names the capability a skipped test is optional for (None: it is
    not), as the checklist states: such a skip does not hold the item back."""
    if not results:
        return Outcome.UNVERIFIED, "no probe ran for it"
    for outcome in (Outcome.FAIL, Outcome.ERROR):
        deciding = [r for r in results if r.outcome is outcome]
        if deciding:
            return outcome, _first_message(deciding)
    undecided = [
        r for r in results if r.outcome is Outcome.SKIP and r.message.startswith(UNDECIDED)
    ]
    if undecided:
        return Outcome.UNVERIFIED, _first_message(undecided).removeprefix(UNDECIDED)
    passed = [r for r in results if r.outcome is Outcome.PASS]
    skipped = [r for r in results if r.outcome is Outcome.SKIP]
    excused = {r.nodeid: why for r in skipped if optional and (why := optional(r)) is not None}
    missing = [r for r in skipped if r.nodeid not in excused]
    if not passed:
        return Outcome.SKIP, _first_message(results)
    if missing:
        looked = f"{len(passed)} of {len(results)} probes passed, {len(missing)} did not run"
        return Outcome.SKIP, f"{looked}: {_first_message(missing)}"
    extra = ""
    if excused:
        why = "; ".join(dict.fromkeys(excused.values()))
        extra = f" ({len(excused)} optional without {why})"
    return Outcome.PASS, f"{len(passed)} of {len(results)} probes passed{extra}"


def _first_message(results: Iterable[ProbeResult]) -> str:
    for r in results:
        if r.message:
            return f"{r.message} [{r.nodeid}]"
    first = next(iter(results))
    return f"{first.outcome.value} [{first.nodeid}]"

"""The final verdict of a release: the run's verdict plus the signatures on its record.

`preflight run` decides the items it can and signs the record as the harness; the SIGN-* items
(`verify: signoff`) are decided afterwards by the stakeholders' signatures on that record
(`preflight sign`). A release is SIGNED when the record is intact (no signature on it signs
another version of it), the run's verdict is READY and every role in `signoff.required` has a
valid signature. `preflight verify` and the report both say so, from this one function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from preflight.scope import verdict_label
from preflight.signing import HARNESS, Registry, VerifyResult, required_roles_of, verify_record

# Signature statuses that say the record is not what was signed.
BROKEN = ("malformed", "bad-signature", "edited")

SIGNED, EDITED, UNSIGNED, NOT_READY, AWAITING, NOT_VERIFIED = (
    "SIGNED",
    "EDITED",
    "NOT SIGNED BY THE HARNESS",
    "NOT READY",
    "AWAITING SIGN-OFF",
    "NOT VERIFIED",
)


@dataclass(frozen=True)
class FinalVerdict:
    run_ready: bool
    run_verdict: str  # the run's verdict with its scope
    integrity: str  # intact | edited | unsigned
    signed: tuple[str, ...]  # required roles with a valid signature
    missing: tuple[str, ...]  # required roles without one
    result: VerifyResult

    @property
    def state(self) -> str:
        if self.integrity == "edited":
            return EDITED
        if self.integrity == "unsigned":
            return UNSIGNED
        if not self.run_ready:
            return NOT_READY
        if self.missing:
            return AWAITING
        return SIGNED if self.result.ok else NOT_VERIFIED

    @property
    def ok(self) -> bool:
        return self.state == SIGNED

    def integrity_text(self) -> str:
        digest = self.result.digest[:16]
        if self.integrity == "edited":
            broken = [v.problem for v in self.result.signatures if v.status in BROKEN]
            return f"EDITED - the record ({digest}...) is not what was signed: {broken[0]}"
        if self.integrity == "unsigned":
            harness = [v.problem for v in self.result.signatures if v.role == HARNESS]
            why = harness[0] if harness and harness[0] else "the harness did not sign it"
            return f"UNPROVEN - record {digest}...: {why}"
        return f"INTACT - record {digest}... is what every signature on it signed"

    def roles_text(self) -> str:
        total = len(self.signed) + len(self.missing)
        text = f"{len(self.signed)} of {total} required roles signed"
        if self.signed:
            text += f" ({', '.join(self.signed)})"
        if self.missing:
            text += f"; missing {', '.join(self.missing)}"
        return text

    def summary(self) -> str:
        """One line: the release state and why."""
        if self.state == SIGNED:
            return f"SIGNED - {self.run_verdict}, intact, signed by all {len(self.signed)} roles"
        if self.state == EDITED:
            return "EDITED - the record was changed after it was signed; nothing on it counts"
        if self.state == UNSIGNED:
            return f"{UNSIGNED} - no signature proves a preflight run wrote this record"
        if self.state == NOT_READY:
            return f"{NOT_READY} - the run's verdict is {self.run_verdict}; {self.roles_text()}"
        if self.state == AWAITING:
            return f"{AWAITING} - {self.run_verdict}; {self.roles_text()}"
        problems = self.result.problems
        return f"{NOT_VERIFIED} - {problems[0] if problems else 'a signature does not count'}"


def final_verdict(
    record: Mapping[str, Any],
    registry: Registry | None = None,
    *,
    allow_unpinned_harness: bool = False,
) -> FinalVerdict:
    """The release verdict of a record; without a registry (the report) each signature is judged
    by the key it carries, with one (`preflight verify`) by the keys registered for its role."""
    result = verify_record(record, registry, allow_unpinned_harness=allow_unpinned_harness)
    required = required_roles_of(record)
    if any(v.status in BROKEN for v in result.signatures):
        integrity = "edited"
    elif HARNESS in result.missing:
        integrity = "unsigned"
    else:
        integrity = "intact"
    return FinalVerdict(
        run_ready=bool(record["verdict"]["ready"]),
        run_verdict=verdict_label(record),
        integrity=integrity,
        signed=tuple(r for r in required if r not in result.missing),
        missing=tuple(r for r in required if r in result.missing),
        result=result,
    )

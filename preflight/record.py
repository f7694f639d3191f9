"""The run record: one JSON document with everything a run decided, how it is assembled
(`build_record`), and its canonical digest.

The canonical form is the record without its `signatures`, serialised by the JSON
Canonicalization Scheme (RFC 8785, the `rfc8785` package) as the record's `canonical` field says;
its sha256 is the record digest that the harness and every stakeholder sign, and any verifier
with an RFC 8785 library can recompute it. Any edit to anything but the signatures changes the
digest. Records written before the field existed keep their digest: sorted keys, no
insignificant whitespace, UTF-8, as Python's json module writes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import rfc8785
from jsonschema import Draft202012Validator, ValidationError

from preflight.checklist import Checklist, load_schema
from preflight.decide import Decision, Verdict, blocks
from preflight.diff import diff_records
from preflight.errors import PreflightError
from preflight.load.results import LoadResults
from preflight.outcomes import ProbeResult
from preflight.redvariants import RedVariant
from preflight.waivers import Waiver

RECORD_SCHEMA = "preflight.record/1"
RECORD_FILE = "record.json"
CANONICAL = "rfc8785"  # the record's `canonical` field: how its digest serialises it
SHOWN_PROBLEMS = 3


class RecordInvalid(PreflightError):
    """A run record cannot be read or does not have the shape of a preflight record."""


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON; RecordInvalid for what it cannot carry (NaN, huge integers)."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise RecordInvalid(f"not representable as RFC 8785 canonical JSON: {exc}") from None


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """The signed bytes of a document: everything but its `signatures`, in RFC 8785 form when
    its `canonical` field says so, else in the sorted-keys form of records written before that
    field existed."""
    body = {k: v for k, v in document.items() if k != "signatures"}
    if document.get("canonical") == CANONICAL:
        return jcs(body)
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def record_digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def evidence_digest(value: Any) -> str:
    """sha256 of one item's evidence in RFC 8785 canonical JSON."""
    return hashlib.sha256(jcs(value)).hexdigest()


def record_path(path: Path) -> Path:
    """A record file, or a run directory holding one."""
    return path / RECORD_FILE if path.is_dir() else path


def load_record(path: Path) -> dict[str, Any]:
    file = record_path(path)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise RecordInvalid(f"{file}: no such run record") from None
    except (OSError, ValueError) as exc:
        raise RecordInvalid(f"{file}: not readable as JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != RECORD_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise RecordInvalid(f"{file}: not a {RECORD_SCHEMA} record (schema: {found!r})")
    validate_record(data, str(file))
    return data


def schema() -> dict[str, Any]:
    return load_schema("record")


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def _error_key(error: ValidationError) -> list[tuple[int, int, str]]:
    return [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.absolute_path]


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_record(record: object, where: str = "record") -> None:
    """Raise RecordInvalid naming the JSON path of the first problems against the schema."""
    errors = sorted(_validator().iter_errors(record), key=_error_key)
    if not errors:
        return
    shown = "; ".join(f"{e.json_path}: {_short(e.message)}" for e in errors[:SHOWN_PROBLEMS])
    more = len(errors) - SHOWN_PROBLEMS
    tail = f" (and {more} more)" if more > 0 else ""
    raise RecordInvalid(
        f"{where}: not a valid {RECORD_SCHEMA} record: {shown}{tail}; records are written by "
        "`preflight run` (preflight/schema/record.schema.json): re-run it rather than edit the file"
    )


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write atomically (a reader never sees half a record), pretty-printed for review."""
    text = json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".record-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def preflight_version() -> str:
    """This harness's installed version."""
    try:
        return metadata.version("preflight")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def iso_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_record(
    *,
    run_id: str,
    started: datetime,
    duration_s: float,
    checklist: Checklist,
    selection: dict[str, Any],
    target: dict[str, Any],
    decisions: Sequence[Decision],
    verdict: Verdict,
    load: LoadResults,
    drills: Sequence[ProbeResult],
    waivers: Sequence[Waiver],
    now: datetime,
    signoff_roles: Sequence[str],
    previous: dict[str, Any] | None,
    red_variants: Mapping[str, Sequence[RedVariant]] | None = None,
    stages: Sequence[tuple[str, float]] = (),
) -> dict[str, Any]:
    """The run's record, unsigned: what was selected and what ran, every item's decision with
    its evidence, the verdict, the load run and the drills, the waivers as of `now`, the roles
    whose sign-off it needs, and what changed since the `previous` run's record. An item with
    `red_variants` (item id -> the tests that turned it red on a broken system) lists them;
    `stages` (name, seconds) says where the run's time went."""
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "canonical": CANONICAL,
        "run_id": run_id,
        "preflight_version": preflight_version(),
        "started_at": iso_time(started),
        "finished_at": iso_time(datetime.now(UTC)),
        "duration_s": round(duration_s, 3),
        "stages": [{"stage": name, "seconds": round(seconds, 1)} for name, seconds in stages],
        "checklist": {
            "path": str(checklist.path),
            "sha256": hashlib.sha256(checklist.path.read_bytes()).hexdigest(),
            "version": checklist.version,
            "items": len(checklist.items),
            "gate": {k: list(v) for k, v in checklist.gate.items()},
        },
        "selection": selection,
        "target": target,
        "verdict": verdict.to_json(duration_s),
        "items": [
            _item_json(checklist, d, (red_variants or {}).get(d.item.id, ())) for d in decisions
        ],
        "load": load.to_json(),
        "drills": [_drill_json(r) for r in drills],
        "waivers": [w.to_json(now) for w in waivers],
        "previous": None,
        "changes": [],
        "signoff": {"required": list(signoff_roles)},
    }
    if previous is not None:
        record["previous"] = {
            "run_id": previous["run_id"],
            "record_sha256": record_digest(previous),
        }
        record["changes"] = [c.to_json() for c in diff_records(previous, record)]
    return record


def _item_json(checklist: Checklist, d: Decision, red: Sequence[RedVariant] = ()) -> dict[str, Any]:
    tests = [t.to_json() for t in d.tests]
    item = d.item
    shown = {"red_variants": [{"defect": v.defect, "test": v.test} for v in red]} if red else {}
    return {
        **item.to_json(),
        "selected": d.selected,
        "outcome": d.outcome.value,
        "reason": d.reason,
        "blocking": blocks(checklist, d),
        "tests": tests,
        "evidence_sha256": evidence_digest(tests),
        "waiver": dict(d.waiver) if d.waiver else None,
        "attestation": dict(d.attestation) if d.attestation else None,
        "figures": dict(d.figures),
        **shown,
    }


def _drill_json(result: ProbeResult) -> dict[str, Any]:
    """One drill test in the record: what it decided, how long it took, and its figures."""
    path = result.nodeid.split("::", 1)[0]
    return {
        "name": Path(path).stem.removeprefix("test_"),
        "nodeid": result.nodeid,
        "items": list(result.items),
        "outcome": result.outcome.value,
        "message": result.message,
        "duration_s": round(result.duration_s, 3),
        "figures": [
            {k: e[k] for k in ("name", "value", "unit") if k in e}
            for e in result.evidence
            if e.get("kind") == "figure"
        ],
    }

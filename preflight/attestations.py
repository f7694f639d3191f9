"""Signed attestations: how a person in the owner role decides a `manual` item until a date, for
the one release the statement names (its version and commit, or checklist and system digests)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from preflight.checklist import Checklist, Item
from preflight.errors import PreflightError
from preflight.release import Release, label
from preflight.signing import PANEL_ROLES, Registry, utc_stamp
from preflight.statements import sign_statement, statement_problem
from preflight.waivers import DATE, as_utc, end_of_day

ATTESTATION_SCHEMA = "preflight.attestation/1"  # one without `release` counts for no release
DEFAULT_DIR = Path("signoff/attestations")
STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
KEY_ID = re.compile(r"[0-9a-f]{16}")
MAX_DAYS = 400  # a statement about people and process goes stale: renew it at least yearly
FIELDS = (
    "schema",
    "item",
    "item_title",
    "role",
    "signer",
    "note",
    "signed_at",
    "expires",
    "key_id",
    "public_key",
    "algorithm",
    "signature",
)


class AttestationInvalid(PreflightError):
    """An attestation cannot be made or read; the message names the item or the file."""


@dataclass(frozen=True)
class Attestation:
    path: Path
    statement: dict[str, Any]

    @property
    def item(self) -> str:
        return str(self.statement["item"])

    @property
    def role(self) -> str:
        return str(self.statement["role"])

    @property
    def signer(self) -> str:
        return str(self.statement["signer"])

    @property
    def key_id(self) -> str:
        return str(self.statement["key_id"])

    @property
    def public_key(self) -> str:
        return str(self.statement["public_key"])

    @property
    def release(self) -> object:
        return self.statement.get("release")

    @property
    def signed_at(self) -> datetime:
        return as_utc(datetime.fromisoformat(self.statement["signed_at"]))

    @property
    def expires(self) -> date:
        return date.fromisoformat(self.statement["expires"])

    def signature_problem(self) -> str:
        """Why the signature does not hold ('' when it does)."""
        return statement_problem(self.statement)


def create_attestation(
    item: Item,
    private_key: Ed25519PrivateKey,
    *,
    role: str,
    signer: str,
    note: str,
    expires: date,
    release: Release,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A signed statement for `release` (its binding: version and commit, else digests); refuses
    items that are not manual and expiries out of range."""
    now = as_utc(now or datetime.now(UTC))
    if role not in PANEL_ROLES:
        raise AttestationInvalid(f"{role!r} is not a sign-off role ({', '.join(PANEL_ROLES)})")
    if not item.attestable:
        raise AttestationInvalid(
            f"{item.id} is verified by {item.verify}, not manual; only manual items and probe "
            "items marked `attest` are attested"
        )
    if end_of_day(expires) <= now:
        raise AttestationInvalid(f"--expires {expires} is in the past; choose a future date")
    days = (expires - now.date()).days
    if days > MAX_DAYS:
        raise AttestationInvalid(
            f"--expires {expires} is {days} days ahead; an attestation about people and process "
            f"must be renewed within {MAX_DAYS} days"
        )
    if not note.strip():
        raise AttestationInvalid("--note must say what was checked (it is empty)")
    try:
        binding = release.binding()
    except ValueError as exc:
        raise AttestationInvalid(f"cannot attest {item.id}: {exc}") from None
    fields: dict[str, Any] = {
        "schema": ATTESTATION_SCHEMA,
        "item": item.id,
        "item_title": item.title,
        "role": role,
        "signer": signer,
        "note": note.strip(),
        "signed_at": utc_stamp(now),
        "expires": expires.isoformat(),
        "release": binding,
    }
    return sign_statement(fields, private_key)


def write_attestation(statement: dict[str, Any], directory: Path) -> Path:
    stamp = statement["signed_at"].replace("-", "").replace(":", "")
    name = f"{statement['item']}.{statement['role']}.{stamp}.{statement['key_id'][:8]}.json"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(json.dumps(statement, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    except FileExistsError:
        raise AttestationInvalid(f"{path} already exists; try again in a second") from None
    return path


def _shape_problems(data: dict[str, Any]) -> list[str]:
    """What keeps a statement from being shown in a run record (record.schema.json)."""
    problems: list[str] = []
    if data["role"] not in PANEL_ROLES:
        problems.append(f"field role: must be one of {', '.join(PANEL_ROLES)}")
    if not KEY_ID.fullmatch(data["key_id"]):
        problems.append("field key_id: must be 16 hex digits")
    for name, pattern, parse, shape in (
        ("signed_at", STAMP, datetime.fromisoformat, "a UTC time YYYY-MM-DDTHH:MM:SSZ"),
        ("expires", DATE, date.fromisoformat, "a date YYYY-MM-DD"),
    ):
        try:
            if not pattern.fullmatch(data[name]):
                raise ValueError(name)
            parse(data[name])
        except ValueError:
            problems.append(f"field {name}: must be {shape} (got {data[name]!r})")
    return problems


def _parse(path: Path, data: object) -> Attestation:
    if not isinstance(data, dict) or data.get("schema") != ATTESTATION_SCHEMA:
        raise AttestationInvalid(f"{path}: not a {ATTESTATION_SCHEMA} statement")
    missing = [name for name in FIELDS if not isinstance(data.get(name), str)]
    if missing:
        raise AttestationInvalid(f"{path}: field {', '.join(missing)} is missing or not text")
    problems = _shape_problems(data)
    if problems:
        raise AttestationInvalid(f"{path}: " + "; ".join(problems))
    return Attestation(path=path, statement=data)


def load_attestations(directory: Path = DEFAULT_DIR) -> list[Attestation]:
    """Every statement in the directory (none when it does not exist)."""
    if not directory.is_dir():
        return []
    found: list[Attestation] = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise AttestationInvalid(f"{path}: not readable as JSON ({exc})") from None
        found.append(_parse(path, data))
    return found


@dataclass(frozen=True)
class AttestationVerdict:
    valid: bool
    status: str  # valid | expired | wrong-role | bad-signature | unregistered-key | wrong-release
    # | none
    reason: str
    attestation: Attestation | None = None

    def to_json(self) -> dict[str, Any] | None:
        if self.attestation is None:
            return None
        statement = self.attestation.statement
        return {
            **{name: statement[name] for name in ("role", "signer", "key_id", "note")},
            **{name: statement[name] for name in ("signed_at", "expires")},
            "release": self.attestation.release,
            "status": self.status,
            "reason": self.reason,
            "file": self.attestation.path.name,
        }


def _judge(
    item: Item, attestation: Attestation, registry: Registry, now: datetime, release: Release
) -> AttestationVerdict:
    who = f"{attestation.role} ({attestation.signer})"
    signature = attestation.signature_problem()
    if signature:
        reason = f"the attestation in {attestation.path.name} is not valid: {signature}"
        return AttestationVerdict(False, "bad-signature", reason, attestation)
    if attestation.role != item.owner:
        reason = f"attested by {who}, but only the item's owner {item.owner} can attest it"
        return AttestationVerdict(False, "wrong-role", reason, attestation)
    unregistered = registry.not_registered(item.owner, attestation.public_key)
    if unregistered:
        reason = f"the attestation by {who} does not count: {unregistered}"
        return AttestationVerdict(False, "unregistered-key", reason, attestation)
    if end_of_day(attestation.expires) <= as_utc(now):
        reason = f"the attestation by {who} expired on {attestation.expires}"
        return AttestationVerdict(False, "expired", reason, attestation)
    other = release.mismatch(attestation.release)
    if other:
        reason = f"the attestation by {who} does not count: {other}"
        return AttestationVerdict(False, "wrong-release", reason, attestation)
    reason = (
        f"attested by {who} on {attestation.signed_at.date()} for release "
        f"{label(attestation.statement['release'])}, valid until {attestation.expires}"
    )
    return AttestationVerdict(True, "valid", reason, attestation)


def evaluate_attestation(
    item: Item,
    attestations: Iterable[Attestation],
    registry: Registry,
    now: datetime,
    release: Release,
) -> AttestationVerdict:
    """The newest valid attestation for the item and this release; else why the newest one does
    not count."""
    mine = sorted(
        (a for a in attestations if a.item == item.id), key=lambda a: a.signed_at, reverse=True
    )
    if not mine:
        return AttestationVerdict(False, "none", f"no attestation for {item.id}")
    verdicts = [_judge(item, a, registry, now, release) for a in mine]
    return next((v for v in verdicts if v.valid), verdicts[0])


def find_item(checklist: Checklist, item_id: str) -> Item:
    for item in checklist.items:
        if item.id == item_id:
            return item
    raise AttestationInvalid(f"no item {item_id!r} in {checklist.path}")

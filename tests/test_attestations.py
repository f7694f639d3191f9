"""Attestations decide a manual item only when signed by the owner role's key and not expired."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from preflight.attestations import (
    AttestationInvalid,
    create_attestation,
    evaluate_attestation,
    load_attestations,
    write_attestation,
)
from preflight.checklist import Checklist, Item, load_checklist
from preflight.signing import Registry, key_id, load_registry, public_bytes, register_key

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 25, 20, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def checklist() -> Checklist:
    return load_checklist(REPO / "checklist.yaml")


@pytest.fixture(scope="module")
def item(checklist: Checklist) -> Item:
    """A manual item owned by the ops lead (the on-call rota)."""
    return next(i for i in checklist.items if i.verify == "manual" and i.owner == "ops-lead")


@pytest.fixture(scope="module")
def keys() -> dict[str, Ed25519PrivateKey]:
    return {role: Ed25519PrivateKey.generate() for role in ("ops-lead", "dev-lead", "stranger")}


@pytest.fixture
def registry(tmp_path: Path, keys: dict[str, Ed25519PrivateKey]) -> Registry:
    path = tmp_path / "keys.yaml"
    register_key(path, "ops-lead", keys["ops-lead"], "Ada")
    register_key(path, "dev-lead", keys["dev-lead"], "Linus")
    return load_registry(path)


def attest(
    item: Item,
    key: Ed25519PrivateKey,
    directory: Path,
    *,
    role: str = "ops-lead",
    now: datetime = NOW,
    days: int = 90,
    note: str = "Rota for launch week is in PagerDuty with a named primary and secondary.",
) -> Path:
    statement = create_attestation(
        item,
        key,
        role=role,
        signer=f"someone in {role}",
        note=note,
        expires=(now + timedelta(days=days)).date(),
        now=now,
    )
    return write_attestation(statement, directory)


def test_an_owner_attestation_is_valid_until_it_expires(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    path = attest(item, keys["ops-lead"], tmp_path / "att")
    statement = json.loads(path.read_text())
    assert statement["item"] == item.id
    assert statement["item_title"] == item.title
    assert statement["key_id"] == key_id(public_bytes(keys["ops-lead"]))
    found = load_attestations(tmp_path / "att")
    verdict = evaluate_attestation(item, found, registry, NOW)
    assert (verdict.valid, verdict.status) == (True, "valid")
    assert (
        verdict.reason
        == "attested by ops-lead (someone in ops-lead) on 2026-11-25, valid until 2027-02-23"
    )
    assert verdict.to_json() == {
        "role": "ops-lead",
        "signer": "someone in ops-lead",
        "key_id": statement["key_id"],
        "note": statement["note"],
        "signed_at": "2026-11-25T20:15:00Z",
        "expires": "2027-02-23",
        "status": "valid",
        "reason": verdict.reason,
        "file": path.name,
    }
    last_day = datetime(2027, 2, 23, 23, 59, tzinfo=UTC)
    assert evaluate_attestation(item, found, registry, last_day).valid
    expired = evaluate_attestation(item, found, registry, last_day + timedelta(minutes=1))
    assert (expired.valid, expired.status) == (False, "expired")
    assert (
        expired.reason == "the attestation by ops-lead (someone in ops-lead) expired on 2027-02-23"
    )


def test_an_attestation_signed_by_another_role_does_not_count(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    attest(item, keys["dev-lead"], tmp_path, role="dev-lead")
    verdict = evaluate_attestation(item, load_attestations(tmp_path), registry, NOW)
    assert (verdict.valid, verdict.status) == (False, "wrong-role")
    assert "only the item's owner ops-lead can attest it" in verdict.reason


def test_another_roles_key_claiming_the_owner_role_does_not_count(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    attest(item, keys["dev-lead"], tmp_path, role="ops-lead")
    attest(item, keys["stranger"], tmp_path, role="ops-lead", now=NOW + timedelta(seconds=1))
    found = load_attestations(tmp_path)
    verdict = evaluate_attestation(item, found, registry, NOW + timedelta(days=1))
    assert (verdict.valid, verdict.status) == (False, "unregistered-key")
    stranger = key_id(public_bytes(keys["stranger"]))
    assert f"key {stranger} is not registered for ops-lead" in verdict.reason
    dev = key_id(public_bytes(keys["dev-lead"]))
    by_dev = evaluate_attestation(item, [a for a in found if a.key_id == dev], registry, NOW)
    assert by_dev.status == "unregistered-key"
    assert by_dev.reason.endswith(
        f"key {dev} is not registered for ops-lead in {registry.path} "
        "(it is registered for dev-lead)"
    )


def test_an_expired_attestation_does_not_count(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    attest(item, keys["ops-lead"], tmp_path, now=NOW - timedelta(days=200), days=100)
    verdict = evaluate_attestation(item, load_attestations(tmp_path), registry, NOW)
    assert (verdict.valid, verdict.status) == (False, "expired")


def test_a_tampered_note_fails_its_signature(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    path = attest(item, keys["ops-lead"], tmp_path)
    statement = json.loads(path.read_text())
    statement["note"] = "Everyone is trained, trust me."
    path.write_text(json.dumps(statement))
    verdict = evaluate_attestation(item, load_attestations(tmp_path), registry, NOW)
    assert (verdict.valid, verdict.status) == (False, "bad-signature")
    assert "does not match its content" in verdict.reason


def test_the_newest_valid_attestation_wins(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    attest(item, keys["ops-lead"], tmp_path, now=NOW - timedelta(days=30), note="First rota.")
    attest(item, keys["ops-lead"], tmp_path, now=NOW - timedelta(days=1), note="Renewed rota.")
    attest(item, keys["dev-lead"], tmp_path, role="dev-lead", note="Not the owner, newest.")
    verdict = evaluate_attestation(item, load_attestations(tmp_path), registry, NOW)
    assert verdict.valid
    assert verdict.attestation is not None
    assert verdict.attestation.statement["note"] == "Renewed rota."


def test_no_attestation_leaves_the_item_without_one(
    tmp_path: Path, item: Item, registry: Registry
) -> None:
    verdict = evaluate_attestation(item, load_attestations(tmp_path / "none"), registry, NOW)
    assert (verdict.valid, verdict.status, verdict.to_json()) == (False, "none", None)


def test_only_manual_items_and_sensible_expiries_are_attested(
    checklist: Checklist, item: Item, keys: dict[str, Ed25519PrivateKey]
) -> None:
    probe = next(i for i in checklist.items if i.verify == "probe")
    key = keys["ops-lead"]
    cases = [
        (probe, date(2027, 1, 1), "text", "not manual; only manual items are attested"),
        (item, date(2026, 11, 24), "text", "is in the past"),
        (item, date(2027, 12, 31), "text", "is 401 days ahead"),
        (item, date(2027, 1, 1), "  ", "--note must say what was checked"),
    ]
    for subject, expires, note, message in cases:
        with pytest.raises(AttestationInvalid, match=message):
            create_attestation(
                subject, key, role="ops-lead", signer="Ada", note=note, expires=expires, now=NOW
            )
    assert create_attestation(
        item, key, role="ops-lead", signer="Ada", note="x", expires=date(2026, 11, 25), now=NOW
    )


def test_an_unreadable_attestation_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(AttestationInvalid, match=r"broken\.json: not readable as JSON"):
        load_attestations(tmp_path)
    (tmp_path / "broken.json").write_text('{"schema": "preflight.attestation/1", "item": "X"}')
    with pytest.raises(AttestationInvalid, match=r"broken\.json: field item_title, role"):
        load_attestations(tmp_path)


def test_a_statement_that_cannot_be_shown_in_a_record_is_refused(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey]
) -> None:
    with pytest.raises(AttestationInvalid, match="'qa-lead' is not a sign-off role"):
        attest(item, keys["ops-lead"], tmp_path, role="qa-lead")
    path = attest(item, keys["ops-lead"], tmp_path)
    statement = json.loads(path.read_text())
    statement.update(role="qa-lead", key_id="XYZ", signed_at="2026-11-25", expires="2027-02-30")
    path.write_text(json.dumps(statement))
    with pytest.raises(AttestationInvalid) as raised:
        load_attestations(tmp_path)
    assert str(raised.value) == (
        f"{path}: field role: must be one of dev-lead, ops-lead, security-lead, product-manager, "
        "cto; field key_id: must be 16 hex digits; field signed_at: must be a UTC time "
        "YYYY-MM-DDTHH:MM:SSZ (got '2026-11-25'); field expires: must be a date YYYY-MM-DD "
        "(got '2027-02-30')"
    )

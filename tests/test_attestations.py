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
from preflight.ci_junit import CI_TESTS_ITEM, decide_ci_junit
from preflight.outcomes import Outcome
from preflight.release import Release, current_release
from preflight.signing import Registry, key_id, load_registry, public_bytes, register_key

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 25, 20, 15, tzinfo=UTC)
COMMIT = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
RELEASE = Release("v1.4.0", COMMIT, checklist_sha256="c" * 64, system_sha256="s" * 64)


@pytest.fixture(scope="module")
def checklist() -> Checklist:
    return load_checklist(REPO / "checklist.yaml")


@pytest.fixture(scope="module")
def item(checklist: Checklist) -> Item:
    """A manual item owned by the ops lead."""
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
    release: Release | None = None,
) -> Path:
    release = release or RELEASE
    statement = create_attestation(
        item,
        key,
        role=role,
        signer=f"someone in {role}",
        note=note,
        expires=(now + timedelta(days=days)).date(),
        release=release,
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
    verdict = evaluate_attestation(item, found, registry, NOW, RELEASE)
    assert (verdict.valid, verdict.status) == (True, "valid")
    assert (
        verdict.reason
        == "attested by ops-lead (someone in ops-lead) on 2026-11-25 for release v1.4.0 "
        "(commit 1a2b3c4d5e6f), valid until 2027-02-23"
    )
    assert verdict.to_json() == {
        "role": "ops-lead",
        "signer": "someone in ops-lead",
        "key_id": statement["key_id"],
        "note": statement["note"],
        "signed_at": "2026-11-25T20:15:00Z",
        "expires": "2027-02-23",
        "release": {"version": "v1.4.0", "commit": COMMIT},
        "status": "valid",
        "reason": verdict.reason,
        "file": path.name,
    }
    last_day = datetime(2027, 2, 23, 23, 59, tzinfo=UTC)
    assert evaluate_attestation(item, found, registry, last_day, RELEASE).valid
    expired = evaluate_attestation(item, found, registry, last_day + timedelta(minutes=1), RELEASE)
    assert (expired.valid, expired.status) == (False, "expired")
    assert (
        expired.reason == "the attestation by ops-lead (someone in ops-lead) expired on 2027-02-23"
    )


def test_an_attestation_signed_by_another_role_does_not_count(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    attest(item, keys["dev-lead"], tmp_path, role="dev-lead")
    verdict = evaluate_attestation(item, load_attestations(tmp_path), registry, NOW, RELEASE)
    assert (verdict.valid, verdict.status) == (False, "wrong-role")
    assert "only the item's owner ops-lead can attest it" in verdict.reason


def test_another_roles_key_claiming_the_owner_role_does_not_count(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    attest(item, keys["dev-lead"], tmp_path, role="ops-lead")
    attest(item, keys["stranger"], tmp_path, role="ops-lead", now=NOW + timedelta(seconds=1))
    found = load_attestations(tmp_path)
    verdict = evaluate_attestation(item, found, registry, NOW + timedelta(days=1), RELEASE)
    assert (verdict.valid, verdict.status) == (False, "unregistered-key")
    stranger = key_id(public_bytes(keys["stranger"]))
    assert f"key {stranger} is not registered for ops-lead" in verdict.reason
    dev = key_id(public_bytes(keys["dev-lead"]))
    by_dev = evaluate_attestation(
        item, [a for a in found if a.key_id == dev], registry, NOW, RELEASE
    )
    assert by_dev.status == "unregistered-key"
    assert by_dev.reason.endswith(
        f"key {dev} is not registered for ops-lead in {registry.path} "
        "(it is registered for dev-lead)"
    )


def test_an_expired_attestation_does_not_count(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    attest(item, keys["ops-lead"], tmp_path, now=NOW - timedelta(days=200), days=100)
    verdict = evaluate_attestation(item, load_attestations(tmp_path), registry, NOW, RELEASE)
    assert (verdict.valid, verdict.status) == (False, "expired")


def test_a_tampered_note_fails_its_signature(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    path = attest(item, keys["ops-lead"], tmp_path)
    statement = json.loads(path.read_text())
    statement["note"] = "Everyone is trained, trust me."
    path.write_text(json.dumps(statement))
    verdict = evaluate_attestation(item, load_attestations(tmp_path), registry, NOW, RELEASE)
    assert (verdict.valid, verdict.status) == (False, "bad-signature")
    assert "does not match its content" in verdict.reason


def test_the_newest_valid_attestation_wins(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    attest(item, keys["ops-lead"], tmp_path, now=NOW - timedelta(days=30), note="First rota.")
    attest(item, keys["ops-lead"], tmp_path, now=NOW - timedelta(days=1), note="Renewed rota.")
    attest(item, keys["dev-lead"], tmp_path, role="dev-lead", note="Not the owner, newest.")
    verdict = evaluate_attestation(item, load_attestations(tmp_path), registry, NOW, RELEASE)
    assert verdict.valid
    assert verdict.attestation is not None
    assert verdict.attestation.statement["note"] == "Renewed rota."


def test_no_attestation_leaves_the_item_without_one(
    tmp_path: Path, item: Item, registry: Registry
) -> None:
    verdict = evaluate_attestation(
        item, load_attestations(tmp_path / "none"), registry, NOW, RELEASE
    )
    assert (verdict.valid, verdict.status, verdict.to_json()) == (False, "none", None)


def test_only_manual_items_and_sensible_expiries_are_attested(
    checklist: Checklist, item: Item, keys: dict[str, Ed25519PrivateKey]
) -> None:
    probe = next(i for i in checklist.items if i.verify == "probe" and not i.attest)
    key = keys["ops-lead"]
    cases = [
        (probe, date(2027, 1, 1), "text", "not manual; only manual items and probe items marked"),
        (item, date(2026, 11, 24), "text", "is in the past"),
        (item, date(2027, 12, 31), "text", "is 401 days ahead"),
        (item, date(2027, 1, 1), "  ", "--note must say what was checked"),
    ]
    for subject, expires, note, message in cases:
        with pytest.raises(AttestationInvalid, match=message):
            create_attestation(
                subject,
                key,
                role="ops-lead",
                signer="Ada",
                note=note,
                expires=expires,
                release=RELEASE,
                now=NOW,
            )
    assert create_attestation(
        item,
        key,
        role="ops-lead",
        signer="Ada",
        note="x",
        expires=date(2026, 11, 25),
        release=RELEASE,
        now=NOW,
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


# --- bound to a release ----------------------------------------------------------------------


def test_an_attestation_for_another_commit_does_not_count(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    attest(item, keys["ops-lead"], tmp_path)
    found = load_attestations(tmp_path)
    assert evaluate_attestation(item, found, registry, NOW, RELEASE).valid
    next_commit = Release(version="v1.4.0", commit="9" * 40)
    verdict = evaluate_attestation(item, found, registry, NOW, next_commit)
    assert (verdict.valid, verdict.status) == (False, "wrong-release")
    assert verdict.reason == (
        "the attestation by ops-lead (someone in ops-lead) does not count: attested for release "
        "v1.4.0 (commit 1a2b3c4d5e6f), this run is release v1.4.0 (commit 999999999999)"
    )


def test_a_release_named_by_digests_and_an_unbound_statement(
    tmp_path: Path, item: Item, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    by_digest = Release(checklist_sha256="c" * 64, system_sha256="s" * 64)
    path = attest(item, keys["ops-lead"], tmp_path, release=by_digest)
    assert json.loads(path.read_text())["release"] == {
        "checklist_sha256": "c" * 64,
        "system_sha256": "s" * 64,
    }
    assert evaluate_attestation(item, load_attestations(tmp_path), registry, NOW, RELEASE).valid
    changed = Release(checklist_sha256="c" * 64, system_sha256="t" * 64)
    verdict = evaluate_attestation(item, load_attestations(tmp_path), registry, NOW, changed)
    assert verdict.status == "wrong-release"
    assert "this run is release checklist cccccccccccc, system tttttttttttt" in verdict.reason
    # a statement that names no release (made before attestations were bound) counts for none
    statement = json.loads(path.read_text())
    del statement["release"]
    path.write_text(json.dumps(statement))
    verdict = evaluate_attestation(item, load_attestations(tmp_path), registry, NOW, RELEASE)
    assert verdict.status == "bad-signature", "the signature covers the release"


def test_the_current_release_is_the_checkouts_commit() -> None:
    release = current_release(REPO / "checklist.yaml", REPO / "system", REPO)
    assert release.commit
    assert len(release.commit) == 40
    assert release.binding() == {"version": release.version, "commit": release.commit}
    assert release.system_sha256
    assert release.checklist_sha256


# --- DEP-TESTS-GREEN from the CI's JUnit file ------------------------------------------------


def junit(tmp_path: Path, commit: str | None, cases: str) -> Path:
    prop = f'<properties><property name="commit" value="{commit}"/></properties>' if commit else ""
    path = tmp_path / "ci-junit.xml"
    path.write_text(
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{prop}{cases}'
        "</testsuite></testsuites>"
    )
    return path


def test_dep_tests_green_is_decided_by_the_ci_junit_of_the_same_commit(
    tmp_path: Path, checklist: Checklist
) -> None:
    tests_green = next(i for i in checklist.items if i.id == CI_TESTS_ITEM)
    green = '<testcase name="a"/><testcase name="b"><skipped/></testcase>'
    red = '<testcase name="a"/><testcase name="b"><failure message="boom"/></testcase>'
    passed = decide_ci_junit(tests_green, junit(tmp_path, COMMIT, green), RELEASE)
    assert (passed.outcome, passed.reason) == (
        Outcome.PASS,
        "the CI test suite passed: 2 tests, 0 failed, 0 errors, 1 skipped in ci-junit.xml for "
        "commit 1a2b3c4d5e6f",
    )
    failed = decide_ci_junit(tests_green, junit(tmp_path, COMMIT, red), RELEASE)
    assert failed.outcome is Outcome.FAIL
    other = decide_ci_junit(tests_green, junit(tmp_path, "9" * 40, green), RELEASE)
    assert (other.outcome, other.reason) == (
        Outcome.UNVERIFIED,
        "ci-junit.xml is for commit 999999999999, this run is release v1.4.0 (commit 1a2b3c4d5e6f)",
    )
    unnamed = decide_ci_junit(tests_green, junit(tmp_path, None, green), RELEASE)
    assert unnamed.outcome is Outcome.UNVERIFIED
    assert "names no commit" in unnamed.reason
    empty = decide_ci_junit(tests_green, junit(tmp_path, COMMIT, ""), RELEASE)
    assert empty.outcome is Outcome.UNVERIFIED
    (tmp_path / "bad.xml").write_text("<html/>")
    assert decide_ci_junit(tests_green, tmp_path / "bad.xml", RELEASE).outcome is Outcome.UNVERIFIED

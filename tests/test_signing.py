"""Keys, the registry, and record signatures: what verifies, and every way it stops verifying."""

from __future__ import annotations

import base64
import copy
import hashlib
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from preflight.record import canonical_bytes, record_digest, validate_record
from preflight.signing import (
    HARNESS,
    PANEL_ROLES,
    KeyFileInvalid,
    Registry,
    RegistryInvalid,
    harness_key,
    key_id,
    load_private_key,
    load_registry,
    public_bytes,
    public_key_text,
    register_key,
    sign_as_harness,
    sign_record,
    signature_status,
    verify_record,
    write_private_key,
)
from tests.records import make_record, role_key

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def keys() -> dict[str, Ed25519PrivateKey]:
    """One key per panel role, one for the harness, and one nobody registered."""
    return {role: Ed25519PrivateKey.generate() for role in (*PANEL_ROLES, HARNESS, "stranger")}


@pytest.fixture
def registry(tmp_path: Path, keys: dict[str, Ed25519PrivateKey]) -> Registry:
    """Every panel role's key, and the harness run key pinned."""
    path = tmp_path / "keys.yaml"
    for role in (*PANEL_ROLES, HARNESS):
        register_key(path, role, keys[role], f"the {role}")
    return load_registry(path)


def fully_signed(keys: dict[str, Ed25519PrivateKey]) -> dict[str, Any]:
    record = sign_as_harness(make_record(signed_by=()), "preflight run on test", keys[HARNESS])
    for role in PANEL_ROLES:
        record = sign_record(record, role, keys[role], f"the {role}")
    return record


def test_keygen_writes_a_private_pkcs8_key_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "me.pem"
    key = write_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public_bytes(load_private_key(path)) == public_bytes(key)
    assert key_id(public_bytes(key)) == hashlib.sha256(public_bytes(key)).hexdigest()[:16]
    with pytest.raises(KeyFileInvalid, match="refusing to overwrite"):
        write_private_key(path)
    assert public_bytes(load_private_key(path)) == public_bytes(key)
    assert list(tmp_path.iterdir()) == [path]


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notakey.pem"
    path.write_text("hello\n")
    with pytest.raises(KeyFileInvalid, match="is not a PEM private key"):
        load_private_key(path)


def test_register_round_trip_keeps_the_header_comment(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("# how to add a key\n# second line\n\ndev-lead: []\ncto: []\n")
    key = write_private_key(tmp_path / "ops.pem")
    entry = register_key(path, "ops-lead", key, "Ada Lovelace")
    assert register_key(path, "ops-lead", key, "Ada Lovelace") == entry  # once only
    registry = load_registry(path)
    assert path.read_text().startswith("# how to add a key\n# second line\n")
    assert list(registry.roles) == ["dev-lead", "cto", "ops-lead"]
    (found,) = registry.keys_for("ops-lead")
    assert (found.key_id, found.public_key, found.name) == (
        key_id(public_bytes(key)),
        public_key_text(key),
        "Ada Lovelace",
    )
    assert registry.lookup("ops-lead", public_key_text(key)) == found
    assert registry.lookup("dev-lead", public_key_text(key)) is None


def test_the_repository_registry_is_valid_and_has_every_role() -> None:
    registry = load_registry(REPO / "signoff" / "keys.yaml")
    assert set(registry.roles) == {*PANEL_ROLES, HARNESS}


def test_bad_registry_entries_are_named_with_role_field_and_line(tmp_path: Path) -> None:
    good = Ed25519PrivateKey.generate()
    path = tmp_path / "keys.yaml"
    path.write_text(
        f"""\
ops-lead:
- key_id: 0123456789abcdef
  public_key: {public_key_text(good)}
  name: Ada
- key_id: {key_id(b"x" * 16)}
  public_key: {base64.b64encode(b"x" * 16).decode()}
  name: Short
- public_key: not base64!
  name: Typo
1: []
qa-lead:
"""
    )
    with pytest.raises(RegistryInvalid) as raised:
        load_registry(path)
    assert raised.value.problems == [
        f"{path}:2: role ops-lead, key #1, field key_id: '0123456789abcdef' is not the id of its "
        f"public key ({key_id(public_bytes(good))})",
        f"{path}:6: role ops-lead, key #2, field public_key: must decode to the 32 bytes of an "
        "Ed25519 key (got 16)",
        f"{path}:8: role ops-lead, key #3, field key_id: is required text",
        f"{path}:8: role ops-lead, key #3, field public_key: is not valid base64 "
        "('not base64!'...)",
        f"{path}:10: role 1: role names must be non-empty text",
    ]


def test_a_missing_registry_registers_nothing_or_is_an_error_when_required(
    tmp_path: Path,
) -> None:
    assert load_registry(tmp_path / "keys.yaml").roles == {}
    with pytest.raises(RegistryInvalid, match="no such key registry"):
        load_registry(tmp_path / "keys.yaml", must_exist=True)


def test_a_record_signed_by_the_panel_and_the_harness_verifies(
    keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    record = fully_signed(keys)
    result = verify_record(record, registry)
    assert result.ok, result.problems
    assert [v.role for v in result.signatures] == [HARNESS, *PANEL_ROLES]
    assert all(v.status == "valid" for v in result.signatures)
    assert result.digest == record_digest(record)
    assert result.missing == ()
    validate_record(record)  # the entries have the shape the record schema gives them


def test_signatures_made_to_the_spec_elsewhere_verify(tmp_path: Path) -> None:
    """tests/records.py signs by the spec's recipe on its own; the two must agree."""
    path = tmp_path / "keys.yaml"
    for role in (*PANEL_ROLES, HARNESS):
        register_key(path, role, role_key(role), role)
    record = make_record(signed_by=(HARNESS, *PANEL_ROLES))
    assert verify_record(record, load_registry(path)).ok


def test_editing_one_outcome_after_signing_fails_and_names_the_edit(
    keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    record = fully_signed(keys)
    record["items"][0]["outcome"] = "fail"
    result = verify_record(record, registry)
    assert not result.ok
    assert {v.status for v in result.signatures} == {"edited"}
    edited = [p for p in result.problems if "the record was edited after it was signed by" in p]
    assert len(edited) == 6
    assert edited[-1].startswith("the record was edited after it was signed by cto (the cto)")
    assert set(result.missing) == {HARNESS, *PANEL_ROLES}


def test_a_missing_required_role_fails(
    keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    record = fully_signed(keys)
    record["signatures"] = [s for s in record["signatures"] if s["role"] != "cto"]
    result = verify_record(record, registry)
    assert result.missing == ("cto",)
    assert result.problems == ("required role cto has no signature",)


def test_a_key_registered_under_another_role_does_not_count(
    keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    record = fully_signed(keys)
    record = sign_record(record, "cto", keys["ops-lead"], "the ops-lead, pretending")
    result = verify_record(record, registry)
    bad = [v for v in result.signatures if not v.valid]
    assert [(v.role, v.status) for v in bad] == [("cto", "unregistered-key")]
    assert f"is not registered for cto in {registry.path} (it is registered for ops-lead)" in (
        bad[0].problem
    )
    assert not result.ok
    # the cto's own signature still stands, so the role is not missing
    assert result.missing == ()


def test_a_forged_signature_is_invalid(
    keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    record = fully_signed(keys)
    forged = copy.deepcopy(record)
    entry = forged["signatures"][1]
    entry["signature"] = base64.b64encode(keys["stranger"].sign(b"anything")).decode()
    result = verify_record(forged, registry)
    assert [v.status for v in result.signatures].count("bad-signature") == 1
    assert result.missing == (entry["role"],)


def test_a_signatures_own_key_judges_it_before_any_registry(
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    """What the report shows of a signature (report/html.py) and what verify says of it come
    from this one check."""
    record = fully_signed(keys)
    digest = record_digest(record)
    entry = record["signatures"][1]
    assert signature_status(entry, digest) == ("valid", "")
    assert signature_status(entry, "0" * 64)[0] == "edited"
    forged = {**entry, "signature": base64.b64encode(keys["stranger"].sign(b"x")).decode()}
    assert signature_status(forged, digest)[0] == "bad-signature"
    status, problem = signature_status({**entry, "key_id": "0" * 16}, digest)
    assert status == "malformed"
    assert f"names key {'0' * 16} but carries key {entry['key_id']}" in problem


def test_the_harness_signature_is_required_and_checked_against_registered_run_keys(
    tmp_path: Path, keys: dict[str, Ed25519PrivateKey], registry: Registry
) -> None:
    record = fully_signed(keys)
    unsigned = {**record, "signatures": record["signatures"][1:]}
    assert verify_record(unsigned, registry).problems == ("the harness has no signature",)
    path = tmp_path / "ci-keys.yaml"
    for role in PANEL_ROLES:
        register_key(path, role, keys[role], f"the {role}")
    register_key(path, HARNESS, keys["stranger"], "CI run key")
    with_ci_key = load_registry(path)
    result = verify_record(record, with_ci_key)
    assert result.signatures[0].status == "unregistered-key"
    assert result.missing == (HARNESS,)
    ci_signed = sign_as_harness(unsigned, "CI", keys["stranger"])
    assert verify_record(ci_signed, with_ci_key).ok


def test_an_unpinned_harness_key_counts_only_when_allowed(
    tmp_path: Path, keys: dict[str, Ed25519PrivateKey]
) -> None:
    """With `harness: []` an edited record re-signed with a fresh harness key used to verify as
    `ok harness`; now its harness signature counts only with allow_unpinned_harness."""
    path = tmp_path / "keys.yaml"
    for role in PANEL_ROLES:
        register_key(path, role, keys[role], f"the {role}")
    path.write_text(path.read_text() + "harness: []\n")
    unpinned = load_registry(path)
    edited = fully_signed(keys)
    edited["items"][0]["outcome"] = "pass"
    resigned = sign_as_harness(edited, "someone", Ed25519PrivateKey.generate())
    result = verify_record(resigned, unpinned)
    harness = next(v for v in result.signatures if v.role == HARNESS and v.signer == "someone")
    assert harness.status == "unpinned-key"
    assert f"{path} pins no harness key" in harness.problem
    assert "--allow-unpinned-harness" in harness.problem
    assert HARNESS in result.missing
    allowed = verify_record(fully_signed(keys), unpinned, allow_unpinned_harness=True)
    assert allowed.ok, allowed.problems


def test_the_digest_is_rfc8785_canonical_json_of_the_record_without_signatures() -> None:
    """What a verifier in another language computes: sha256 of the JCS form (RFC 8785: keys
    sorted by UTF-16 code units, ES6 number form, minimal escapes, no whitespace)."""
    record = {
        "canonical": "rfc8785",
        "z": [1.0, 0.5, 1e21, 12345678.9, -0.0],
        "\u20ac": 'caf\u00e9 \u2028 "q" \n',
        "a": {"b": None, "a": True},
        "signatures": [{"role": "anything"}],
    }
    expected = (
        '{"a":{"a":true,"b":null},"canonical":"rfc8785",'
        '"z":[1,0.5,1e+21,12345678.9,0],"\u20ac":"caf\u00e9 \u2028 \\"q\\" \\n"}'
    ).encode()
    assert canonical_bytes(record) == expected
    assert record_digest(record) == hashlib.sha256(expected).hexdigest()


def test_records_written_before_rfc8785_keep_their_digest() -> None:
    legacy = {"schema": "preflight.record/1", "duration_s": 84.0, "b": "\u00e9", "a": 1}
    assert canonical_bytes(legacy) == '{"a":1,"b":"\u00e9","duration_s":84.0,"schema":'.encode() + (
        b'"preflight.record/1"}'
    )
    assert make_record()["canonical"] == "rfc8785"


def test_signing_again_replaces_the_same_keys_signature(
    keys: dict[str, Ed25519PrivateKey],
) -> None:
    record = sign_record(make_record(signed_by=()), "cto", keys["cto"], "first")
    record = sign_record(record, "cto", keys["cto"], "second")
    record = sign_record(record, "cto", keys["stranger"], "another key")
    assert [s["signer"] for s in record["signatures"]] == ["second", "another key"]


def test_the_harness_key_is_created_once_and_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFLIGHT_RUN_KEY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    first = harness_key()
    path = tmp_path / "state" / "preflight" / "run-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_bytes(harness_key()) == public_bytes(first)
    monkeypatch.setenv("PREFLIGHT_RUN_KEY", str(tmp_path / "ci" / "run.pem"))
    ci = harness_key()
    assert public_bytes(ci) != public_bytes(first)
    assert stat.S_IMODE((tmp_path / "ci" / "run.pem").stat().st_mode) == 0o600
    (tmp_path / "ci" / "run.pem").write_text("not a key")
    with pytest.raises(KeyFileInvalid, match=r"run\.pem is not a PEM private key"):
        harness_key()
    monkeypatch.setenv("PREFLIGHT_RUN_KEY", str(path))
    assert public_bytes(harness_key()) == public_bytes(first)

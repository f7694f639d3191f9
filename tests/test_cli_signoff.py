"""`preflight keygen | sign | verify | attest | waivers`: exit codes and what they print."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from preflight.cli import main
from preflight.record import load_record, write_record
from preflight.signing import HARNESS, PANEL_ROLES, load_registry, sign_as_harness
from tests.records import make_record

REPO = Path(__file__).resolve().parents[1]
CHECKLIST = str(REPO / "checklist.yaml")


@pytest.fixture
def signoff(tmp_path: Path) -> Path:
    """A registry with one key per panel role, made with `preflight keygen --register`."""
    keys = tmp_path / "keys.yaml"
    keys.write_text("# header\n")
    for role in PANEL_ROLES:
        out = tmp_path / f"{role}.pem"
        assert main(["keygen", "--out", str(out), "--role", role, "--name", role.upper(),
                     "--register", "--keys", str(keys)]) == 0  # fmt: skip
    return tmp_path


def run_dir(tmp_path: Path) -> Path:
    """A run directory with a record the harness signed."""
    directory = tmp_path / "run"
    directory.mkdir()
    record = sign_as_harness(
        make_record(signed_by=()), "preflight run", Ed25519PrivateKey.generate()
    )
    write_record(record, directory / "record.json")
    return directory


def cli(*args: str) -> int:
    return main(list(args))


def sign(signoff: Path, record: Path, role: str, key_role: str | None = None) -> int:
    key = signoff / f"{key_role or role}.pem"
    return cli(
        "sign", str(record), "--role", role, "--key", str(key), "--keys", str(signoff / "keys.yaml")
    )


def test_keygen_registers_the_key_and_prints_its_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.yaml"
    code = cli("keygen", "--out", str(tmp_path / "k.pem"), "--role", "cto", "--name", "Grace",
               "--register", "--keys", str(keys))  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    (entry,) = load_registry(keys).keys_for("cto")
    assert f"key id      {entry.key_id}" in out
    assert f"public key  {entry.public_key}" in out
    assert entry.name == "Grace"
    assert cli("keygen", "--out", str(tmp_path / "k.pem")) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert cli("keygen", "--out", str(tmp_path / "k2.pem"), "--register") == 2
    assert "--register needs --role and --name" in capsys.readouterr().err


def test_keygen_without_register_prints_how_to_register(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("keygen", "--out", str(tmp_path / "k.pem"), "--role", "cto") == 0
    out = capsys.readouterr().out
    assert "to register it, add under `cto:`" in out
    assert not (tmp_path / "signoff").exists()


def test_the_panel_signs_and_verify_passes_then_an_edit_fails_it(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = run_dir(tmp_path)
    keys = str(signoff / "keys.yaml")
    for role in PANEL_ROLES:
        assert sign(signoff, directory, role) == 0
    out = capsys.readouterr().out
    assert "signed " in out
    assert out.rstrip().endswith("roles still to sign: none")
    assert cli("verify", str(directory), "--keys", keys) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok                harness")
    assert lines[-1].startswith("VERIFIED - record ")
    assert lines[-1].endswith("signed by the harness and 5 of 5 required roles")

    record = load_record(directory)
    record["items"][0]["outcome"] = "fail"
    write_record(record, directory / "record.json")
    assert cli("verify", str(directory / "record.json"), "--keys", keys) == 1
    out = capsys.readouterr().out
    assert "EDITED" in out
    assert "the record was edited after it was signed by security-lead (SECURITY-LEAD)" in out
    assert out.splitlines()[-1].startswith("NOT VERIFIED - 6 invalid signatures, 6 missing")

    assert sign(signoff, directory, "cto") == 1
    assert "refusing to sign" in capsys.readouterr().err


def test_verify_fails_when_a_required_role_is_missing(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = run_dir(tmp_path)
    for role in PANEL_ROLES[:-1]:
        assert sign(signoff, directory, role) == 0
    capsys.readouterr()
    assert cli("verify", str(directory), "--keys", str(signoff / "keys.yaml")) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "MISSING           cto              no valid signature" in lines
    assert lines[-1].startswith("NOT VERIFIED - 0 invalid signatures, 1 missing (cto)")


def test_sign_refuses_a_key_not_registered_for_the_role(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = run_dir(tmp_path)
    before = (directory / "record.json").read_text()
    assert sign(signoff, directory, "cto", key_role="ops-lead") == 2
    err = capsys.readouterr().err
    assert "is not registered for cto" in err
    assert "(it is registered for ops-lead)" in err
    assert "to register it, add under `cto:`" in err
    assert (directory / "record.json").read_text() == before


def test_sign_refuses_a_role_outside_the_records_signoff(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = run_dir(tmp_path)
    assert sign(signoff, directory, HARNESS, key_role="cto") == 2
    assert "--role harness is not a sign-off role of" in capsys.readouterr().err


def test_sign_refuses_a_record_the_harness_did_not_sign(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "record.json"
    write_record(make_record(signed_by=()), path)
    assert sign(signoff, path, "cto") == 1
    assert "no valid harness signature" in capsys.readouterr().err
    assert load_record(path)["signatures"] == []


def test_verify_of_an_unreadable_record_exits_2(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "record.json").write_text("{")
    assert cli("verify", str(tmp_path), "--keys", str(signoff / "keys.yaml")) == 2
    assert "not readable as JSON" in capsys.readouterr().err
    directory = run_dir(tmp_path)
    assert cli("verify", str(directory), "--keys", str(tmp_path / "typo.yaml")) == 2
    assert "typo.yaml: no such key registry" in capsys.readouterr().err


def test_attest_writes_a_statement_the_owner_role_can_make(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    common = ["--checklist", CHECKLIST, "--dir", str(tmp_path / "att"),
              "--keys", str(signoff / "keys.yaml"), "--expires", expires]  # fmt: skip
    code = cli("attest", "OPS-ONCALL-ROTA", "--key", str(signoff / "ops-lead.pem"),
               "--note", "Rota in PagerDuty.", *common)  # fmt: skip
    assert code == 0
    assert f"valid until {expires}" in capsys.readouterr().out
    (written,) = (tmp_path / "att").iterdir()
    statement = json.loads(written.read_text())
    assert (statement["role"], statement["signer"]) == ("ops-lead", "OPS-LEAD")

    code = cli("attest", "OPS-ONCALL-ROTA", "--key", str(signoff / "ops-lead.pem"),
               "--note", "x", "--role", "cto", *common)  # fmt: skip
    assert code == 2
    assert "is not registered for cto" in capsys.readouterr().err
    code = cli("attest", "SEC-HDR-HSTS", "--key", str(signoff / "security-lead.pem"),
               "--note", "x", *common)  # fmt: skip
    assert code == 2
    assert "SEC-HDR-HSTS is verified by probe, not manual" in capsys.readouterr().err
    code = cli("attest", "NO-SUCH", "--key", str(signoff / "cto.pem"), "--note", "x", *common)
    assert code == 2
    assert "no item 'NO-SUCH'" in capsys.readouterr().err
    assert len(list((tmp_path / "att").iterdir())) == 1


def test_waivers_lists_status_and_rejects_a_bad_file(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "waivers.yaml"
    path.write_text(
        "- item: SEC-HDR-HSTS\n  tests: [checks/*hsts*]\n  justification: CDN sets it.\n"
        "  owner: dev-lead\n  approver: cto\n  granted: 2019-02-01\n  expires: 2020-01-31\n"
    )
    keys = ["--keys", str(signoff / "keys.yaml")]
    listing = ["waivers", str(path), "--checklist", CHECKLIST, *keys]
    assert cli(*listing) == 2
    assert f"{path}:1: waiver for SEC-HDR-HSTS, field signature" in capsys.readouterr().err
    sign = ["waive", "sign", "SEC-HDR-HSTS", "--file", str(path), "--checklist", CHECKLIST, *keys]
    assert cli(*sign, "--key", str(signoff / "cto.pem")) == 0
    capsys.readouterr()
    assert cli(*listing) == 0
    out = capsys.readouterr().out
    assert "expired  SEC-HDR-HSTS  until 2020-01-31" in out
    assert out.rstrip().endswith("1 waivers, 0 active, 1 expired")
    path.write_text(path.read_text().replace("approver: cto", "approver: dev-lead"))
    assert cli(*listing) == 2
    assert f"{path}:5: waiver for SEC-HDR-HSTS, field approver" in capsys.readouterr().err


def test_the_harness_role_needs_no_registry_entry(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = run_dir(tmp_path)
    record = load_record(directory)
    assert [s["role"] for s in record["signatures"]] == [HARNESS]
    assert load_registry(signoff / "keys.yaml").keys_for(HARNESS) == ()
    assert cli("verify", str(directory), "--keys", str(signoff / "keys.yaml")) == 1
    assert "ok                harness" in capsys.readouterr().out

"""`preflight keygen | sign | verify | attest | waivers`: exit codes and what they print."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from preflight.cli import main
from preflight.record import load_record, write_record
from preflight.report import write_reports
from preflight.signing import (
    HARNESS,
    PANEL_ROLES,
    load_private_key,
    load_registry,
    sign_as_harness,
    warn_unpinned_harness,
    write_private_key,
)
from tests.records import make_ready_record, make_record

REPO = Path(__file__).resolve().parents[1]
CHECKLIST = str(REPO / "checklist.yaml")


@pytest.fixture
def signoff(tmp_path: Path) -> Path:
    """A registry with one key per panel role and the harness run key pinned, made with
    `preflight keygen --register`."""
    keys = tmp_path / "keys.yaml"
    keys.write_text("# header\n")
    for role in (*PANEL_ROLES, HARNESS):
        out = tmp_path / f"{role}.pem"
        assert main(["keygen", "--out", str(out), "--role", role, "--name", role.upper(),
                     "--register", "--keys", str(keys)]) == 0  # fmt: skip
    return tmp_path


def run_dir(tmp_path: Path, *, ready: bool = False, harness: Path | None = None) -> Path:
    """A run directory with a record (READY or not) that the harness signed, with the key the
    `signoff` fixture pinned unless told otherwise, and its reports."""
    directory = tmp_path / ("ready-run" if ready else "run")
    directory.mkdir()
    unsigned = make_ready_record() if ready else make_record(signed_by=())
    key = load_private_key(harness or tmp_path / "harness.pem")
    record = sign_as_harness(unsigned, "preflight run", key)
    write_record(record, directory / "record.json")
    write_reports(record, directory)
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


def _banner(html: str) -> str:
    """The top of the report: everything before its outcomes table."""
    return html.split('<section id="outcomes">', 1)[0]


def test_the_panel_signs_a_ready_record_verify_exits_0_and_the_report_says_signed(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = run_dir(tmp_path, ready=True)
    keys = str(signoff / "keys.yaml")
    for role in PANEL_ROLES:
        assert sign(signoff, directory, role) == 0
    out = capsys.readouterr().out
    assert "5 of 5 required roles signed" in out
    assert out.rstrip().endswith("SIGNED - READY, intact, signed by all 5 roles")
    assert cli("verify", str(directory), "--keys", keys) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "run verdict       READY"
    assert lines[1].startswith("integrity         INTACT - record ")
    assert lines[2].startswith("ok                harness")
    assert lines[-2] == (
        "roles             5 of 5 required roles signed "
        "(dev-lead, ops-lead, security-lead, product-manager, cto)"
    )
    assert lines[-1] == "VERIFIED - SIGNED - READY, intact, signed by all 5 roles"
    banner = _banner((directory / "report.html").read_text())
    assert "<title>SIGNED - READY - preflight run" in banner
    assert "SIGNED - READY, intact, signed by all 5 roles" in banner
    assert 'id="edited"' not in banner


def test_one_edited_byte_makes_verify_and_the_report_say_edited(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = run_dir(tmp_path, ready=True)
    for role in PANEL_ROLES:
        assert sign(signoff, directory, role) == 0
    path = directory / "record.json"
    text = path.read_text()
    at = text.index("1 of 1 probes passed")
    path.write_text(text[:at] + "2" + text[at + 1 :])  # one byte of one item's reason
    capsys.readouterr()
    assert cli("verify", str(path), "--keys", str(signoff / "keys.yaml")) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("integrity         EDITED - the record (")
    assert "the record was edited after it was signed by security-lead (SECURITY-LEAD)" in out
    assert out.splitlines()[-1] == (
        "NOT VERIFIED - EDITED - the record was changed after it was signed; nothing on it counts"
    )
    assert cli("report", str(directory)) == 0
    html = (directory / "report.html").read_text()
    body = html.split("<body>", 1)[1].lstrip()
    assert body.startswith('<div id="edited" class="edited-banner" role="alert">')
    assert '<p class="edited-label">EDITED</p>' in body[:300]
    assert "<title>EDITED - READY - preflight run" in html
    assert sign(signoff, directory, "cto") == 1
    assert "refusing to sign" in capsys.readouterr().err


def test_verify_fails_when_a_required_role_is_missing_and_names_it(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = run_dir(tmp_path, ready=True)
    for role in PANEL_ROLES[:-1]:
        assert sign(signoff, directory, role) == 0
    capsys.readouterr()
    assert cli("verify", str(directory), "--keys", str(signoff / "keys.yaml")) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "MISSING           cto              no valid signature" in lines
    assert lines[-1].startswith("NOT VERIFIED - AWAITING SIGN-OFF - READY; 4 of 5 required roles")
    assert lines[-1].endswith("; missing cto")
    banner = _banner((directory / "report.html").read_text())
    assert "AWAITING SIGN-OFF - READY; 4 of 5 required roles signed" in banner


def test_verify_of_a_not_ready_record_fails_however_many_signed(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = run_dir(tmp_path)
    for role in PANEL_ROLES:
        assert sign(signoff, directory, role) == 0
    capsys.readouterr()
    assert cli("verify", str(directory), "--keys", str(signoff / "keys.yaml")) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "run verdict       NOT READY"
    assert lines[-1].startswith("NOT VERIFIED - NOT READY - the run's verdict is NOT READY; 5 of 5")


def test_verify_says_when_the_run_covered_part_of_the_checklist(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = make_ready_record()
    for item in record["items"]:
        item["selected"] = item["area"] == "security"
        item["outcome"] = item["outcome"] if item["selected"] else "skip"
    record = make_ready_record(
        items=record["items"], selection={**record["selection"], "areas": ["security"]}
    )
    path = tmp_path / "record.json"
    write_record(sign_as_harness(record, "run", load_private_key(signoff / "harness.pem")), path)
    for role in PANEL_ROLES:
        assert sign(signoff, path, role) == 0
    capsys.readouterr()
    assert cli("verify", str(path), "--keys", str(signoff / "keys.yaml")) == 0
    lines = capsys.readouterr().out.splitlines()
    selected = sum(1 for i in record["items"] if i["selected"])
    label = f"READY (security only, {selected} of {len(record['items'])} items)"
    assert lines[0] == f"run verdict       {label}"
    assert lines[-1] == f"VERIFIED - SIGNED - {label}, intact, signed by all 5 roles"


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

    listing = ["--checklist", CHECKLIST, "--dir", str(tmp_path / "att"),
               "--keys", str(signoff / "keys.yaml")]  # fmt: skip
    assert cli("attestations", *listing) == 0
    lines = capsys.readouterr().out.splitlines()
    rota = next(line for line in lines if " OPS-ONCALL-ROTA " in line)
    assert rota.startswith("valid ")
    assert f"valid until {expires}" in rota
    assert any(line.startswith("none ") for line in lines)
    assert lines[-1].split(": ")[1].startswith("1 of ")


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


def _unpin(signoff: Path) -> str:
    """The registry without its harness key (`harness: []`), as keys.yaml ships."""
    keys = signoff / "keys.yaml"
    text = keys.read_text()
    keys.write_text(text[: text.index("harness:")] + "harness: []\n")
    return str(keys)


def test_verify_refuses_an_unpinned_harness_key_unless_allowed(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `harness: []`, a record edited and re-signed with a fresh harness key used to
    verify as `ok harness`."""
    directory = run_dir(tmp_path, ready=True)
    for role in PANEL_ROLES:
        assert sign(signoff, directory, role) == 0
    keys = _unpin(signoff)
    capsys.readouterr()
    assert cli("verify", str(directory), "--keys", keys) == 2
    err = capsys.readouterr().err
    assert f"refusing to verify {directory / 'record.json'}: {keys} pins no harness key" in err
    assert "ci/README.md" in err
    assert "--allow-unpinned-harness" in err
    assert cli("verify", str(directory), "--keys", keys, "--allow-unpinned-harness") == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err
    assert captured.out.splitlines()[-1].startswith("VERIFIED - SIGNED")


def test_sign_refuses_a_record_no_pinned_harness_key_signed(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = tmp_path / "stranger.pem"
    write_private_key(stranger)
    directory = run_dir(tmp_path, ready=True, harness=stranger)
    before = (directory / "record.json").read_text()
    assert sign(signoff, directory, "cto") == 1
    err = capsys.readouterr().err
    assert "refusing to sign" in err
    assert "the signature by harness (preflight run) does not count" in err
    assert "is not registered for harness" in err
    assert (directory / "record.json").read_text() == before

    keys = _unpin(signoff)
    code = cli("sign", str(directory), "--role", "cto", "--key", str(signoff / "cto.pem"),
               "--keys", keys)  # fmt: skip
    assert code == 2
    assert "refusing to sign" in capsys.readouterr().err
    code = cli("sign", str(directory), "--role", "cto", "--key", str(signoff / "cto.pem"),
               "--keys", keys, "--allow-unpinned-harness")  # fmt: skip
    assert code == 0
    assert "WARNING" in capsys.readouterr().err


def test_every_run_warns_while_no_harness_key_is_pinned(
    tmp_path: Path, signoff: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warn_unpinned_harness(signoff / "keys.yaml")
    assert capsys.readouterr().err == ""
    keys = _unpin(signoff)
    warn_unpinned_harness(Path(keys))
    err = capsys.readouterr().err
    assert err.startswith(f"preflight: WARNING: {keys} pins no harness key")
    assert "`preflight verify` refuses its records" in err


def test_keygen_refuses_a_role_no_item_names_and_suggests_the_nearest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("keygen", "--out", str(tmp_path / "k.pem"), "--role", "ops-laed") == 2
    err = capsys.readouterr().err
    assert "--role ops-laed is not a role of" in err
    assert "did you mean ops-lead?" in err
    assert cli("keygen", "--out", str(tmp_path / "k.pem"), "--role", "chef") == 2
    assert "did you mean" not in capsys.readouterr().err
    assert not (tmp_path / "k.pem").exists()

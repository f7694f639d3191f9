"""`preflight report --format hdf`: the record in MITRE's Heimdall Data Format, checked by MITRE's
own parser of it (inspecjs, run by Node.js; set-up fetches it into .tools/inspecjs)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from preflight.cli import main
from preflight.record import write_record
from preflight.report.hdf import render_hdf
from tests import records
from tests.records import make_record

REPO = Path(__file__).resolve().parents[1]
PARSER = REPO / ".tools/inspecjs/lib/generated_parsers/v_1_0/exec-json.js"
CHECK = (
    "const {Convert} = require(process.argv[1]); const fs = require('fs');"
    "const hdf = Convert.toExecJSON(fs.readFileSync(process.argv[2], 'utf8'));"
    "console.log(hdf.profiles[0].controls.length);"
)


def inspecjs(document: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "set-up installs Node.js (scripts/debian-packages.txt)"
    assert PARSER.is_file(), "set-up fetches inspecjs (scripts/inspecjs.sh)"
    return subprocess.run(
        [node, "-e", CHECK, str(PARSER), str(document)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def controls(hdf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {control["id"]: control for control in hdf["profiles"][0]["controls"]}


def test_the_whole_checklist_exports_as_hdf_that_mitres_parser_accepts(tmp_path: Path) -> None:
    record = make_record(every_item=True)
    path = tmp_path / "record.hdf.json"
    path.write_text(json.dumps(render_hdf(record)))
    parsed = inspecjs(path)
    assert parsed.returncode == 0, parsed.stderr
    assert int(parsed.stdout) == len([i for i in record["items"] if i["selected"]])


def test_a_document_breaking_the_format_is_refused_by_the_parser(tmp_path: Path) -> None:
    hdf = render_hdf(make_record())
    hdf["profiles"][0]["controls"][0]["results"][0]["status"] = "green"
    path = tmp_path / "bad.hdf.json"
    path.write_text(json.dumps(hdf))
    parsed = inspecjs(path)
    assert parsed.returncode != 0
    assert "Invalid value" in parsed.stderr


def test_outcomes_waivers_and_attestations_keep_their_meaning() -> None:
    by_id = controls(render_hdf(make_record()))
    failed = by_id[records.BLOCKING_FAIL_ID]
    assert [r["status"] for r in failed["results"]] == ["failed"]
    assert failed["results"][0]["code_desc"] == records.CSP_TEST
    assert failed["impact"] == 0.7
    assert by_id[records.PASS_ID]["impact"] == 0.9
    assert {r["status"] for r in by_id[records.ERROR_ID]["results"]} == {"error"}
    waived = by_id[records.WAIVED_ID]
    assert [r["status"] for r in waived["results"]] == ["failed"]
    assert waived["waiver_data"]["justification"]
    attested = by_id[records.ATTESTED_ID]
    assert attested["attestation_data"]["status"] == "passed"
    assert attested["attestation_data"]["updated_by"].startswith("ops-lead")
    unverified = by_id[records.LOAD_UNVERIFIED_ID]["results"]
    assert [r["status"] for r in unverified] == ["skipped"]
    assert "1000" in unverified[0]["skip_message"]


def test_the_cli_writes_the_hdf_file_next_to_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_record(make_record(), tmp_path / "record.json")
    assert main(["report", str(tmp_path), "--format", "hdf"]) == 0
    assert f"wrote {tmp_path / 'record.hdf.json'}" in capsys.readouterr().out
    assert inspecjs(tmp_path / "record.hdf.json").returncode == 0

"""`preflight run` end to end against the real native target: outputs, outcomes, the gate,
waivers, attestations, progress and harness errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from preflight.checklist import load_checklist
from preflight.cli import main
from preflight.outcomes import OUTCOMES
from preflight.signing import HARNESS, PANEL_ROLES, harness_key, register_key

REPO = Path(__file__).resolve().parents[1]

ITEMS = """
version: 1
gate:
  warn_only: [low]  # the tests' teapot of severity low fails as a warning
  must_be:
    critical: [pass, waived, attested]
    high: [pass, waived, attested]
items:
- id: T-READY
  area: application
  title: The API answers its readiness endpoint through the edge
  severity: critical
  owner: ops-lead
  verify: probe
  risk: A system that is not ready drops every request.
  remediation: Start the API workers and their databases.
  refs: []
  source: 'seed-summary: readiness'
- id: T-TEAPOT
  area: security
  title: The API answers its readiness endpoint with 418, which it never does
  severity: {teapot_severity}
  owner: security-lead
  verify: probe
  risk: This item exists to fail against every real target.
  remediation: Nothing to remediate; the probe is deliberately wrong.
  refs: []
  source: 'seed-summary: a failing probe'
- id: T-TRAINED
  area: operations
  title: The on-call team is trained on the runbooks
  severity: {trained_severity}
  owner: ops-lead
  verify: manual
  risk: An untrained team turns incidents into outages.
  remediation: Run the runbook training and attest it.
  refs: []
  source: 'operations/1: team trained'
- id: T-LOAD
  area: performance
  title: API p95 latency stays under 500 ms with 500 users
  severity: low
  owner: dev-lead
  verify: load
  metric: http_p95_ms
  comparison: <
  value: 500
  scale: {{users: 500}}
  risk: Slow responses at peak lose users.
  remediation: Profile and fix the slow endpoints.
  refs: []
  source: 'performance/1: p95 < 500 ms'
- id: T-NOPROBE
  area: monitoring
  title: A probe item that no test decides yet
  severity: medium
  owner: ops-lead
  verify: probe
  risk: An item nobody checks drifts silently.
  remediation: Write its probe in checks/.
  refs: []
  source: 'seed-summary: no probe'
"""

PROBES = '''
from __future__ import annotations

import pytest


@pytest.mark.checklist("T-READY")
def test_ready(target, evidence):
    """A system that is not ready drops every request."""
    resp = target.http.get("/v1/health/ready")
    evidence.request(resp)
    assert resp.status == 200, f"GET /v1/health/ready must answer 200 (got {resp.status})"


@pytest.mark.checklist("T-TEAPOT")
def test_teapot(target):
    """Deliberately wrong: the readiness endpoint never answers 418."""
    resp = target.http.get("/v1/health/ready")
    assert resp.status == 418, f"GET /v1/health/ready must answer 418 (got {resp.status})"
'''
# The workspace's own red-variant test (beside its checks/, as in this repository): a run's
# record lists it under the item it names.
RED_VARIANTS = """
import pytest


@pytest.mark.turns_red("T-TEAPOT", defect="A readiness endpoint that answers 200, not 418.")
def test_teapot_turns_red():
    assert "T-TEAPOT"
"""


@dataclass
class Workspace:
    root: Path
    checklist: Path
    checks: Path
    out: Path

    def args(self, *extra: str) -> list[str]:
        return [
            "run",
            "--target",
            "native",
            "--checklist",
            str(self.checklist),
            "--checks",
            str(self.checks),
            "--out",
            str(self.out),
            "--waivers",
            str(self.root / "waivers.yaml"),
            "--keys",
            str(self.root / "keys.yaml"),
            "--attestations",
            str(self.root / "attestations"),
            "--no-load",  # the load runner is tested in tests/test_load.py
            *extra,
        ]

    def record(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.out / "latest" / "record.json").read_text())
        return loaded

    def outcomes(self) -> dict[str, str]:
        return {i["id"]: i["outcome"] for i in self.record()["items"]}


def workspace(
    tmp: Path, *, teapot_severity: str = "high", trained_severity: str = "medium"
) -> Workspace:
    checklist = tmp / "checklist.yaml"
    checklist.write_text(
        ITEMS.format(teapot_severity=teapot_severity, trained_severity=trained_severity)
    )
    checks = tmp / "checks"
    (checks / "any").mkdir(parents=True)
    (checks / "any" / "test_probes.py").write_text(textwrap.dedent(PROBES))
    (tmp / "tests").mkdir()
    (tmp / "tests" / "test_variants.py").write_text(RED_VARIANTS)
    (tmp / "attestations").mkdir()
    return Workspace(tmp, checklist, checks, tmp / "reports")


@pytest.fixture(autouse=True)
def _harness_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLIGHT_RUN_KEY", str(tmp_path / "run-key.pem"))


def test_run_decides_every_item_writes_three_outputs_and_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = workspace(tmp_path)
    code = main(ws.args())
    out, err = capsys.readouterr()
    assert code == 1, out + err
    outcomes = ws.outcomes()
    assert outcomes == {
        "T-READY": "pass",
        "T-TEAPOT": "fail",
        "T-TRAINED": "unverified",
        "T-LOAD": "unverified",
        "T-NOPROBE": "unverified",
    }
    record = ws.record()
    assert record["verdict"]["blocking"] == ["T-TEAPOT"]
    assert out.strip().splitlines()[-1] == record["verdict"]["summary"]
    assert record["verdict"]["summary"].startswith(
        "NOT READY (policy: any fail or error blocks (low: warning); skip/unverified block for "
        "critical, high) - 1 pass, 1 fail, 0 error"
    )
    teapot = next(i for i in record["items"] if i["id"] == "T-TEAPOT")
    assert "must answer 418 (got 200)" in teapot["reason"]
    assert teapot["red_variants"] == [
        {
            "defect": "A readiness endpoint that answers 200, not 418.",
            "test": "tests/test_variants.py::test_teapot_turns_red",
        }
    ]
    ready = next(i for i in record["items"] if i["id"] == "T-READY")
    assert "red_variants" not in ready, "an item no test turned red lists none"
    assert ready["tests"][0]["evidence"][0]["status"] == 200
    assert record["target"]["versions"]["postgresql"].startswith("15")
    assert record["target"]["config_digests"], "the native target's config files are digested"
    run_dir = (ws.out / "latest").resolve()
    assert {p.name for p in run_dir.iterdir()} >= {"record.json", "report.html", "junit.xml"}
    cases = ET.parse(run_dir / "junit.xml").getroot().iter("testcase")  # noqa: S314 - our own output
    assert len(list(cases)) == 5
    report = (run_dir / "report.html").read_text()
    assert "T-TEAPOT" in report
    # progress: the area and each probe's outcome on stderr, while it ran
    assert "area security" in err
    assert "fail  T-TEAPOT" in err
    # where the time went: each stage, in order, timed in the record, the report and on stderr
    stages = record["stages"]
    assert [s["stage"] for s in stages] == [
        "start the target",
        "probes",
        "load",
        "drills",
        "stop the target",
    ]
    assert stages[0]["seconds"] > 0, "starting PostgreSQL, Redis, workers and NGINX takes time"
    assert sum(s["seconds"] for s in stages) <= record["duration_s"]
    assert 'id="stages"' in report
    assert f"start the target: {stages[0]['seconds']:.1f} s" in err


def test_gate_follows_the_policy_and_an_active_waiver_waives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = workspace(tmp_path)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    keys, pem = ws.root / "keys.yaml", ws.root / "cto.pem"
    assert main(["keygen", "--out", str(pem), "--role", "cto", "--name", "Grace",
                 "--register", "--keys", str(keys)]) == 0  # fmt: skip
    waiver = textwrap.dedent(
        """\
        - item: T-TEAPOT
          tests: ['*::test_teapot']
          justification: The teapot probe is a deliberate failure for this test.
          owner: security-lead
          approver: cto
          granted: '{granted}'
          expires: '{expires}'
        """
    )

    def waive(expires: str) -> None:
        granted = (date.fromisoformat(expires) - timedelta(days=2)).isoformat()
        (ws.root / "waivers.yaml").write_text(waiver.format(granted=granted, expires=expires))
        assert main(["waive", "sign", "T-TEAPOT", "--key", str(pem), "--keys", str(keys),
                     "--file", str(ws.root / "waivers.yaml"),
                     "--checklist", str(ws.checklist)]) == 0  # fmt: skip

    waive(yesterday)
    assert main(ws.args()) == 1
    assert ws.outcomes()["T-TEAPOT"] == "fail", "an expired waiver must not waive"

    waive(tomorrow)
    assert main(ws.args()) == 0
    record = ws.record()
    assert ws.outcomes()["T-TEAPOT"] == "waived"
    assert record["verdict"]["ready"] is True
    assert record["previous"] is not None, "the second run is compared with the first"
    assert {"id": "T-TEAPOT", "before": "fail", "after": "waived"}.items() <= next(
        c for c in record["changes"] if c["id"] == "T-TEAPOT"
    ).items()
    capsys.readouterr()


def test_selection_skips_unselected_items_and_they_never_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = workspace(tmp_path, teapot_severity="critical")
    assert main(ws.args("--area", "application,operations,performance,monitoring")) == 0
    record = ws.record()
    selected = sum(1 for i in record["items"] if i["selected"])
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    assert closing.startswith(
        "READY (application, operations, performance, monitoring only, "
        f"{selected} of {len(record['items'])} items) (policy: any fail or error blocks "
        "(low: warning); skip/unverified block for critical, high) - "
    ), closing
    teapot = next(i for i in record["items"] if i["id"] == "T-TEAPOT")
    assert (teapot["selected"], teapot["outcome"]) == (False, "skip")
    assert teapot["reason"].startswith("not selected (--area")
    assert not teapot["tests"], "an unselected item's probe does not run"
    assert {i["outcome"] for i in record["items"]} <= set(OUTCOMES)


DRILL_ITEMS = """
- id: T-DRILL-A
  area: backup
  title: A drill that measures something and passes
  severity: high
  owner: ops-lead
  verify: probe
  risk: An undrilled recovery fails when it is needed.
  remediation: Run the drill.
  refs: []
  source: 'seed-summary: drill a'
- id: T-DRILL-B
  area: backup
  title: Another drill, left out by the selection
  severity: critical
  owner: ops-lead
  verify: probe
  risk: An undrilled recovery fails when it is needed.
  remediation: Run the drill.
  refs: []
  source: 'seed-summary: drill b'
"""

DRILL = '''
import pytest


@pytest.mark.checklist("{item}")
def test_drill(target, evidence):
    """Breaks nothing; reports one figure."""
    evidence.figure("recovery time", 1.5, "s")
    assert target.http.get("/v1/health/ready").status == 200
'''


def test_drills_run_after_the_probes_and_the_selection_leaves_the_others_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = workspace(tmp_path, teapot_severity="low")
    ws.checklist.write_text(ws.checklist.read_text() + DRILL_ITEMS)
    (ws.checks / "drills").mkdir()
    for name, item in (("alpha", "T-DRILL-A"), ("beta", "T-DRILL-B")):
        (ws.checks / "drills" / f"test_{name}.py").write_text(DRILL.format(item=item))
    assert main(ws.args("--drills", "gamma")) == 2
    assert "no drill named gamma" in capsys.readouterr().err
    assert not ws.out.exists()

    assert main(ws.args("--drills", "alpha")) == 0
    err = capsys.readouterr().err
    record = ws.record()
    items = {i["id"]: i for i in record["items"]}
    assert items["T-DRILL-A"]["outcome"] == "pass"
    assert len(items["T-DRILL-A"]["tests"]) == 1, "drills run once, after the load"
    assert (items["T-DRILL-B"]["selected"], items["T-DRILL-B"]["outcome"]) == (False, "skip")
    assert items["T-DRILL-B"]["reason"] == "not selected (--drills alpha)"
    assert err.index("drills: running pytest") > err.index("load:")
    assert [(d["name"], d["outcome"], d["figures"]) for d in record["drills"]] == [
        ("alpha", "pass", [{"name": "recovery time", "value": 1.5, "unit": "s"}])
    ]


def test_a_critical_manual_item_blocks_until_attested(tmp_path: Path) -> None:
    ws = workspace(tmp_path, teapot_severity="low", trained_severity="critical")
    assert main(ws.args()) == 1
    assert ws.record()["verdict"]["blocking"] == ["T-TRAINED"]
    assert ws.record()["verdict"]["warnings"] == ["T-TEAPOT"]


def test_a_failing_low_item_blocks_unless_the_checklist_lowers_it_to_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = workspace(tmp_path, teapot_severity="low", trained_severity="low")
    assert main(ws.args()) == 0
    out = capsys.readouterr().out
    assert "warnings (do not block under this policy): T-TEAPOT" in out
    assert (
        "1 failing item the gate policy lowers to a warning"
        in (ws.out / "latest" / "report.html").read_text()
    )
    ws.checklist.write_text(ws.checklist.read_text().replace("  warn_only: [low]", ""))
    assert main(ws.args()) == 1
    verdict = ws.record()["verdict"]
    assert verdict["blocking"] == ["T-TEAPOT"]
    assert verdict["policy"] == "any fail or error blocks; skip/unverified block for critical, high"
    assert (
        capsys.readouterr()
        .out.strip()
        .splitlines()[-1]
        .startswith(
            "NOT READY (policy: any fail or error blocks; skip/unverified block for critical, high)"
        )
    )


def test_harness_errors_exit_2_and_start_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = workspace(tmp_path)
    ws.checklist.write_text(ws.checklist.read_text().replace("id: T-LOAD", "id: T-READY"))
    assert main(ws.args()) == 2
    assert "duplicate" in capsys.readouterr().err.lower()

    (tmp_path / "down").mkdir()
    ws = workspace(tmp_path / "down")
    target = tmp_path / "down.yaml"
    target.write_text("name: down\nedge_url: https://127.0.0.1:9\nadmin_key: x\n")
    assert main([*ws.args()[:2], str(target), *ws.args()[3:]]) == 2
    err = capsys.readouterr().err
    assert "the edge does not answer" in err
    assert not ws.out.exists(), "no report for a run that could not start"


def test_a_marker_naming_an_unknown_item_is_a_harness_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = workspace(tmp_path)
    (ws.checks / "any" / "test_unknown.py").write_text(
        'import pytest\n\n\n@pytest.mark.checklist("T-NOSUCH")\ndef test_x(target):\n    pass\n'
    )
    assert main(ws.args()) == 2
    err = capsys.readouterr().err
    assert "T-NOSUCH" in err
    assert not ws.out.exists()


@pytest.mark.usefixtures("one_heavy_module_at_a_time")  # browser journeys: tests/conftest.py
def test_the_repository_checklist_runs_and_every_item_gets_an_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "reports"
    code = main(["run", "--target", "native", "--no-load", "--out", str(out)])
    stdout = capsys.readouterr().out
    record = json.loads((out / "latest" / "record.json").read_text())
    checklist = load_checklist(REPO / "checklist.yaml")
    assert [i["id"] for i in record["items"]] == [i.id for i in checklist.items]
    assert all(i["outcome"] in set(OUTCOMES) for i in record["items"])
    assert code == (0 if record["verdict"]["ready"] else 1)
    assert stdout.strip().splitlines()[-1] == record["verdict"]["summary"]
    probed = {i["id"]: i for i in record["items"] if i["tests"]}
    probe_items = {i.id for i in checklist.items if i.verify == "probe"}
    assert set(probed) == probe_items, "every probe item was decided by its probes"
    # On the bundled system every probe passes, skips for a stated reason, or fails under a
    # waiver in waivers.yaml (an expired waiver shows up here first: renew it or fix the gap).
    # DEP-SECURITY-SCAN cannot decide here: pip-audit's vulnerability service is unreachable.
    # INF-DB-VERSION fails on the native target only, truthfully: it runs this host's
    # PostgreSQL, 15 on Debian 12 (the shipped deployment runs 17: tests/targets).
    # One gap is in the bundled deployment's records, failing honestly: nobody on the example
    # rota has acknowledged a test page (only the people on call can). Probe items that need
    # their owner's attestation too (`attest: true`) stay unverified after their probes pass:
    # nobody attested here.
    # PERF-RESOURCE-LIMITS fails on the native target only, truthfully: its processes run
    # without limits of their own (the shipped deployment's containers have them: tests/targets).
    # DEP-ZERO-DOWNTIME loses nothing but says when its senders, sharing the 2 cores, stayed
    # under the item's 100 messages/s.
    undecidable = {"DEP-SECURITY-SCAN"}
    undecided_here = {
        "DEP-ZERO-DOWNTIME": "does not decide it at its rate",
        "POST-POSTMORTEM": "post-mortem is due within its first month",
        "POST-DR-UPDATE": "due within the launch's first month",
        **dict.fromkeys(
            ("POST-PERF-REVIEW", "POST-REAL-USAGE", "MON-UPTIME-SLO"),
            "no production history over the window",
        ),
    }
    known_fails = {
        "INF-DB-VERSION": "must be version 16 or later (got 15.",
        "OPS-ONCALL-SHIFTS": "acknowledged no test page",
        "PERF-RESOURCE-LIMITS": "must run with CPU and memory limits",
    }
    attested_too = {i.id for i in checklist.items if i.attest}
    unexpected = {
        item_id: (item["outcome"], item["reason"])
        for item_id, item in probed.items()
        if item["outcome"] not in ("pass", "skip", "waived")
        and item_id not in undecidable
        and undecided_here.get(item_id, "\0") not in item["reason"]
        and not (item["outcome"] == "fail" and known_fails.get(item_id, "\0") in item["reason"])
        and not (
            item_id in attested_too
            and item["outcome"] == "unverified"
            and "needs its owner's attestation too" in item["reason"]
        )
    }
    assert not unexpected, unexpected


def test_a_real_run_is_attested_signed_verified_and_an_edit_breaks_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole sign-off on a record `preflight run` wrote: an owner's attestation decides the
    manual item, the five roles sign, verify passes; one edited outcome makes verify fail."""
    ws = workspace(tmp_path, teapot_severity="low", trained_severity="critical")
    keys = ws.root / "keys.yaml"
    for role in PANEL_ROLES:
        pem = ws.root / f"{role}.pem"
        assert main(["keygen", "--out", str(pem), "--role", role, "--name", role.title(),
                     "--register", "--keys", str(keys)]) == 0  # fmt: skip
    register_key(keys, HARNESS, harness_key(), "CI run key")  # pinned: verify counts only it
    expires = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    attest = ["attest", "T-TRAINED", "--expires", expires, "--note", "Runbook drill held.",
              "--checklist", str(ws.checklist), "--dir", str(ws.root / "attestations"),
              "--keys", str(keys)]  # fmt: skip
    # Signed by the wrong role's key it does not count, and the critical item still blocks.
    assert main([*attest, "--key", str(ws.root / "cto.pem"), "--role", "cto"]) == 0
    assert main(ws.args()) == 1
    assert ws.outcomes()["T-TRAINED"] == "unverified"
    assert main([*attest, "--key", str(ws.root / "ops-lead.pem")]) == 0
    assert main(ws.args()) == 0
    assert ws.outcomes()["T-TRAINED"] == "attested"

    run_dir = ws.out / "latest"
    assert main(["verify", str(run_dir), "--keys", str(keys)]) == 1, "no stakeholder signed yet"
    for role in PANEL_ROLES:
        sign = ["sign", str(run_dir), "--role", role, "--key", str(ws.root / f"{role}.pem")]
        assert main([*sign, "--keys", str(keys)]) == 0
    assert main(["verify", str(run_dir), "--keys", str(keys)]) == 0
    assert "Security-Lead" in (run_dir / "report.html").read_text(), "signing re-renders it"

    record = json.loads((run_dir / "record.json").read_text())
    next(i for i in record["items"] if i["id"] == "T-TEAPOT")["outcome"] = "pass"
    (run_dir / "record.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["verify", str(run_dir), "--keys", str(keys)]) == 1
    out = capsys.readouterr().out
    assert "edited after it was signed" in out
    assert out.splitlines()[-1].startswith("NOT VERIFIED - EDITED")


def test_sigterm_during_the_probes_stops_everything_and_exits_2(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    (ws.checks / "any" / "test_slow.py").write_text(
        "import time\n\nimport pytest\n\n\n"
        '@pytest.mark.checklist("T-NOPROBE")\n'
        "def test_slow(target):\n"
        '    """Long enough to be interrupted."""\n'
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "preflight.cli", *ws.args()],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PREFLIGHT_RUN_KEY": str(tmp_path / "run-key.pem")},
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "T-TEAPOT" in line:  # the probes are running; test_slow is next or running
                break
        time.sleep(1.0)
        children = _children(proc.pid)
        assert children, "the native target's processes run under preflight"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 2, "".join(seen) + rest
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert "SIGTERM received, while the probes ran; stopped the target" in rest
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)], "every process of the target is gone"
    assert not ws.out.exists(), "an interrupted run writes no verdict"


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = (
        Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else "X"
    )
    return state not in ("Z", "X")

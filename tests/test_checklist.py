"""checklist.yaml and its loader: the real file is complete; a bad file names item, field, line."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from preflight.checklist import Checklist, load_checklist
from preflight.errors import ChecklistInvalid

REPO = Path(__file__).resolve().parents[1]
CHECKLIST = REPO / "checklist.yaml"

# Checkboxes per block of the original checklist, as checklist.yaml's header states them.
ORIGINAL_BLOCKS = {
    "infrastructure": 20,
    "security": 16,
    "application": 11,
    "monitoring": 20,
    "performance": 11,
    "backup": 10,
    "testing": 15,
    "deployment": 26,
    "operations": 13,
    "sign-off": 5,
    "post-launch": 15,
    "rollback": 7,
}

VALID = """\
version: 1
gate:
  must_be:
    critical: [pass, waived, attested]
items:
- id: SEC-HDR-HSTS
  area: security
  title: HSTS with max-age of at least one year
  severity: critical
  owner: security-lead
  verify: probe
  risk: A first plain-HTTP request can be downgraded.
  remediation: Send Strict-Transport-Security with max-age=31536000.
  refs: [RFC 6797]
  source: 'security/15: Security headers configured'
- id: PERF-API-P95
  area: performance
  title: API p95 latency below 500 ms at 500 users
  severity: critical
  owner: dev-lead
  verify: load
  metric: api_latency_p95_ms
  comparison: <
  value: 500
  scale: {users: 500}
  risk: Slow responses make the chat feel broken.
  remediation: Profile the slowest routes under load.
  refs: []
  source: 'testing/1: message sending at 500+ users'
"""


@pytest.fixture(scope="module")
def checklist() -> Checklist:
    return load_checklist(CHECKLIST)


def test_the_real_checklist_is_valid(checklist: Checklist) -> None:
    assert len(checklist.items) >= 169
    assert checklist.gate["critical"] == ("pass", "waived", "attested")
    assert checklist.gate["high"] == ("pass", "waived", "attested")


def test_at_least_85_percent_is_automated(checklist: Checklist) -> None:
    manual = [item.id for item in checklist.items if not item.automated]
    assert checklist.automated_share >= 0.85, f"too many manual items: {manual}"


def test_the_header_states_the_blocks_we_count() -> None:
    header = CHECKLIST.read_text(encoding="utf-8").split("\nversion:", 1)[0]
    stated = " ".join(line.lstrip("# ") for line in header.splitlines())
    blocks = stated.split("Original blocks and their checkboxes:", 1)[1].split("(", 1)[0]
    counts = re.findall(r"([a-z-]+) (\d+)", blocks)
    assert {block: int(n) for block, n in counts} == ORIGINAL_BLOCKS
    assert "(169 in all)" in stated


def test_every_original_item_is_accounted_for(checklist: Checklist) -> None:
    assert sum(ORIGINAL_BLOCKS.values()) == 169
    covered: Counter[tuple[str, int]] = Counter()
    for item in checklist.items:
        match = re.match(r"^([a-z-]+)/(\d+): ", item.source)
        if match:
            covered[(match[1], int(match[2]))] += 1
    expected = {(block, n) for block, count in ORIGINAL_BLOCKS.items() for n in range(1, count + 1)}
    assert set(covered) - expected == set(), "sources name items the original does not have"
    assert expected - set(covered) == set(), "original items with no checklist entry"


def test_seed_summary_claims_are_items(checklist: Checklist) -> None:
    ids = {item.id for item in checklist.items}
    for item_id in ("SEC-HDR-CSP", "INF-K8S-PDB", "INF-K8S-NETPOL", "INF-K8S-QUOTA"):
        assert item_id in ids
    targets = {(i.metric, i.comparison, i.value) for i in checklist.items if i.verify == "load"}
    for target in (
        ("api_latency_p95_ms", "<", 500),
        ("ws_delivery_p95_ms", "<", 200),
        ("error_ratio_pct", "<", 1),
        ("concurrent_users", ">=", 500),
        ("ws_connections_open", ">=", 1000),
        ("messages_per_s", ">=", 100),
    ):
        assert target in targets


def test_manual_items_are_ones_only_a_person_can_know(checklist: Checklist) -> None:
    manual_areas = {item.area for item in checklist.items if item.verify == "manual"}
    assert manual_areas <= {"operations", "compliance", "deployment", "backup"}


def test_a_minimal_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "checklist.yaml"
    path.write_text(VALID)
    loaded = load_checklist(path)
    assert [item.id for item in loaded.items] == ["SEC-HDR-HSTS", "PERF-API-P95"]
    assert loaded.items[1].line == 16
    assert loaded.items[1].value == 500.0


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "checklist.yaml"
    path.write_text(text)
    with pytest.raises(ChecklistInvalid) as invalid:
        load_checklist(path)
    return invalid.value.problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "  owner: security-lead\n",
            "",
            "checklist.yaml:6: item SEC-HDR-HSTS, field owner: is required",
            id="missing-field",
        ),
        pytest.param(
            "  severity: critical\n  owner: security-lead",
            "  severity: urgent\n  owner: security-lead",
            "checklist.yaml:9: item SEC-HDR-HSTS, field severity: must be one of",
            id="bad-severity",
        ),
        pytest.param(
            "- id: PERF-API-P95",
            "- id: SEC-HDR-HSTS",
            "checklist.yaml:16: item SEC-HDR-HSTS, field id: duplicate id (first used on line 6)",
            id="duplicate-id",
        ),
        pytest.param(
            "  metric: api_latency_p95_ms\n",
            "",
            "checklist.yaml:16: item PERF-API-P95, field metric: is required",
            id="load-without-metric",
        ),
        pytest.param(
            "  area: security",
            "  area: marketing",
            "checklist.yaml:7: item SEC-HDR-HSTS, field area: must be one of",
            id="unknown-area",
        ),
        pytest.param(
            "  verify: probe\n",
            "  verify: probe\n  metric: x\n",
            "checklist.yaml:12: item SEC-HDR-HSTS, field metric: only load items carry metric",
            id="probe-with-metric",
        ),
        pytest.param(
            "- id: SEC-HDR-HSTS",
            "- id: sec_hsts",
            "checklist.yaml:6: item sec_hsts, field id: must match",
            id="bad-id",
        ),
        pytest.param(
            "  owner: dev-lead",
            "  owner: intern",
            "checklist.yaml:20: item PERF-API-P95, field owner: must be one of",
            id="unknown-owner",
        ),
        pytest.param(
            "  refs: [RFC 6797]\n",
            "  refs: [RFC 6797]\n  ref: [typo]\n",
            "checklist.yaml:15: item SEC-HDR-HSTS, field ref: is not a known field",
            id="unknown-field",
        ),
        pytest.param(
            "- id: SEC-HDR-HSTS\n  area: security",
            "- area: security",
            "checklist.yaml:6: item #1 (no id), field id: is required",
            id="missing-id",
        ),
    ],
)
def test_a_broken_item_names_item_field_and_line(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in VALID
    problems = _problems(tmp_path, VALID.replace(old, new, 1))
    assert len(problems) == 1, problems
    assert problems[0].startswith(str(tmp_path / expected)), problems


def test_every_problem_is_listed_not_just_the_first(tmp_path: Path) -> None:
    text = VALID.replace("severity: critical", "severity: urgent").replace("area: ", "area: x", 1)
    assert len(_problems(tmp_path, text)) == 3


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    problems = _problems(tmp_path, VALID.replace("refs: []", "refs: [unclosed"))
    assert re.search(r"checklist\.yaml:\d+: not valid YAML", problems[0]), problems


def test_a_missing_file_is_a_checklist_error(tmp_path: Path) -> None:
    with pytest.raises(ChecklistInvalid, match="cannot read"):
        load_checklist(tmp_path / "absent.yaml")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "preflight.cli", "checklist", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def test_cli_validate_prints_one_summary_line_and_exits_0() -> None:
    result = run_cli("validate")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert re.search(
        r"valid - \d+ items \(\d+ probe, \d+ load, \d+ manual, \d+ signoff\); [\d.]+% automated",
        lines[0],
    )


def test_cli_validate_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(VALID.replace("severity: critical", "severity: urgent"))
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert "2 problems" in result.stderr
    assert "item SEC-HDR-HSTS, field severity" in result.stderr
    assert "item PERF-API-P95, field severity" in result.stderr


def test_cli_show_lists_items_of_an_area() -> None:
    result = run_cli("show", "--area", "backup")
    assert result.returncode == 0, result.stderr
    header, *lines, footer = result.stdout.splitlines()
    assert header.split() == ["id", "area", "severity", "verify", "title"]
    rows = [line for line in lines if not line.startswith("    ")]
    assert rows
    for row, following in itertools.pairwise(lines):
        if not row.startswith(" "):
            assert following.startswith("    decided by: "), f"{row} says what decides it"
    assert all(row.split()[1] == "backup" for row in rows)
    assert footer.endswith("probe items have a test")

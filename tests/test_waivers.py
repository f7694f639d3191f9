"""waivers.yaml: a waiver waives until the end of its day; bad entries are named with their line."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from preflight.checklist import Checklist, load_checklist
from preflight.waivers import Waiver, WaiversInvalid, load_waivers, waiver_for

REPO = Path(__file__).resolve().parents[1]

VALID = """\
# accepted risks
- item: SEC-HDR-HSTS
  justification: The edge is replaced next sprint; HSTS is set by the CDN meanwhile.
  owner: security-lead
  approver: cto
  expires: 2026-06-30
- item: INF-RES-CPU
  justification: Staging nodes have 2 cores; production has 8.
  owner: Ada Lovelace
  approver: "Grace Hopper"
  expires: '2027-01-15'
"""


@pytest.fixture(scope="module")
def checklist() -> Checklist:
    return load_checklist(REPO / "checklist.yaml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "waivers.yaml"
    path.write_text(text)
    return path


def problems_of(path: Path, checklist: Checklist) -> list[str]:
    with pytest.raises(WaiversInvalid) as raised:
        load_waivers(path, checklist)
    assert str(path) in str(raised.value)
    return raised.value.problems


def test_a_valid_file_loads_every_waiver(tmp_path: Path, checklist: Checklist) -> None:
    waivers = load_waivers(write(tmp_path, VALID), checklist)
    assert [(w.item, w.owner, w.approver, w.expires, w.line) for w in waivers] == [
        ("SEC-HDR-HSTS", "security-lead", "cto", date(2026, 6, 30), 2),
        ("INF-RES-CPU", "Ada Lovelace", "Grace Hopper", date(2027, 1, 15), 7),
    ]


def test_the_repository_waivers_file_is_valid(checklist: Checklist) -> None:
    waivers = load_waivers(REPO / "waivers.yaml", checklist)
    assert all(w.owner != w.approver and w.justification for w in waivers)


def test_a_missing_file_means_no_waivers(tmp_path: Path, checklist: Checklist) -> None:
    assert load_waivers(tmp_path / "none.yaml", checklist) == []


def test_a_waiver_is_active_until_the_end_of_its_day_utc() -> None:
    waiver = Waiver("SEC-HDR-HSTS", "why", "dev-lead", "cto", date(2026, 6, 30))
    last_second = datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC)
    next_day = datetime(2026, 7, 1, 0, 0, 0, tzinfo=UTC)
    assert waiver.status(last_second) == "active"
    assert waiver.status(next_day) == "expired"
    assert waiver.to_json(next_day) == {
        "id": "SEC-HDR-HSTS",
        "justification": "why",
        "owner": "dev-lead",
        "approver": "cto",
        "expires": "2026-06-30",
        "status": "expired",
    }


def test_an_expired_waiver_stops_waiving(tmp_path: Path, checklist: Checklist) -> None:
    waivers = load_waivers(write(tmp_path, VALID), checklist)
    before = datetime(2026, 6, 30, 12, tzinfo=UTC)
    after = datetime(2026, 7, 1, 0, 0, 1, tzinfo=UTC)
    active = waiver_for("SEC-HDR-HSTS", waivers, before)
    assert active is not None
    assert active.item == "SEC-HDR-HSTS"
    assert waiver_for("SEC-HDR-HSTS", waivers, after) is None
    assert waiver_for("INF-RES-CPU", waivers, after) is not None
    assert waiver_for("INF-RES-MEM", waivers, before) is None


def test_the_longest_active_waiver_wins() -> None:
    short = Waiver("X-1", "why", "a", "b", date(2026, 1, 31))
    long = Waiver("X-1", "why", "a", "b", date(2026, 3, 31))
    assert waiver_for("X-1", [short, long], datetime(2026, 1, 1, tzinfo=UTC)) is long


def test_owner_as_approver_and_an_unknown_id_are_named_with_their_lines(
    tmp_path: Path, checklist: Checklist
) -> None:
    path = write(
        tmp_path,
        """\
- item: SEC-HDR-HSTS
  justification: The CDN sets HSTS meanwhile.
  owner: security-lead
  approver: Security-Lead
  expires: 2026-06-30
- item: SEC-NO-SUCH-ITEM
  justification: Nothing.
  owner: dev-lead
  approver: cto
  expires: 2026-06-30
""",
    )
    assert problems_of(path, checklist) == [
        f"{path}:4: waiver for SEC-HDR-HSTS, field approver: must differ from the owner "
        "('security-lead'): a risk is accepted by a second person",
        f"{path}:6: waiver for SEC-NO-SUCH-ITEM, field item: no item 'SEC-NO-SUCH-ITEM' in "
        f"{checklist.path}",
    ]


def test_missing_empty_and_unknown_fields_and_bad_dates_are_each_named(
    tmp_path: Path, checklist: Checklist
) -> None:
    path = write(
        tmp_path,
        """\
- item: SEC-HDR-HSTS
  justification: ''
  owner: dev-lead
  approver: cto
  expires: 2026-02-30
- item: INF-RES-CPU
  owner: dev-lead
  approver: cto
  expires: 31.12.2026
  ticket: OPS-1
""",
    )
    assert problems_of(path, checklist) == [
        f"{path}:2: waiver for SEC-HDR-HSTS, field justification: must not be empty",
        f"{path}:5: waiver for SEC-HDR-HSTS, field expires: not a real date "
        "(day is out of range for month)",
        f"{path}:6: waiver for INF-RES-CPU, field justification: is required",
        f"{path}:9: waiver for INF-RES-CPU, field expires: must be a date YYYY-MM-DD "
        "(got '31.12.2026')",
        f"{path}:10: waiver for INF-RES-CPU, field ticket: is not a known field",
    ]


def test_a_file_that_is_not_a_list_is_an_error(tmp_path: Path, checklist: Checklist) -> None:
    path = write(tmp_path, "item: SEC-HDR-HSTS\n")
    assert problems_of(path, checklist) == [
        f"{path}:1: must be a list of waivers (an empty file or [] for none), got dict"
    ]


def test_broken_yaml_names_the_line(tmp_path: Path, checklist: Checklist) -> None:
    path = write(tmp_path, "- item: [SEC-HDR-HSTS\n- item: x\n")
    (problem,) = problems_of(path, checklist)
    assert problem.startswith(f"{path}:2: not valid YAML")

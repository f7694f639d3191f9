"""`preflight diff`: what changed between two runs, new failures first."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from preflight.cli import main
from preflight.diff import Change, Kind, classify, diff_records, selection_difference, summary
from preflight.record import write_record
from tests.records import (
    ATTESTED_ID,
    BLOCKING_FAIL_ID,
    ERROR_ID,
    EXPIRED_ATTESTATION_ID,
    FIGURE_ID,
    LOAD_PASS_ID,
    OPEN_FAIL_ID,
    PASS_ID,
    SKIP_ID,
    WAIVED_ID,
    make_record,
)


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        ("pass", "fail", Kind.NEW_FAILURE),
        ("unverified", "error", Kind.NEW_FAILURE),
        ("waived", "fail", Kind.NEW_FAILURE),
        ("pass", "unverified", Kind.REGRESSION),
        ("pass", "skip", Kind.REGRESSION),
        ("attested", "waived", Kind.REGRESSION),
        ("fail", "error", Kind.CHANGED),
        ("skip", "unverified", Kind.CHANGED),
        ("pass", "attested", Kind.CHANGED),
        ("fail", "waived", Kind.IMPROVEMENT),
        ("error", "pass", Kind.IMPROVEMENT),
        ("unverified", "attested", Kind.IMPROVEMENT),
        (None, "fail", Kind.ADDED),
        ("pass", None, Kind.REMOVED),
    ],
)
def test_classify(before: str | None, after: str | None, kind: Kind) -> None:
    assert classify(before, after) is kind


def _with_outcomes(outcomes: dict[str, str], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    items = copy.deepcopy(make_record()["items"])
    for item in items:
        item["outcome"] = outcomes.get(item["id"], item["outcome"])
    return make_record(items=[i for i in items if i["id"] not in drop])


@pytest.fixture
def old_and_new() -> tuple[dict[str, Any], dict[str, Any]]:
    old = _with_outcomes({}, drop=(FIGURE_ID,))
    new = _with_outcomes(
        {
            PASS_ID: "fail",  # new failure
            LOAD_PASS_ID: "unverified",  # regression
            OPEN_FAIL_ID: "error",  # changed within the failing rank
            ERROR_ID: "pass",  # improvement
            EXPIRED_ATTESTATION_ID: "attested",  # improvement
            ATTESTED_ID: "error",  # new failure
        },
        drop=(SKIP_ID,),
    )
    return old, new


def test_changes_are_ordered_new_failures_first(
    old_and_new: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    changes = diff_records(*old_and_new)
    assert [(c.kind, c.id, c.before, c.after) for c in changes] == [
        (Kind.NEW_FAILURE, ATTESTED_ID, "attested", "error"),
        (Kind.NEW_FAILURE, PASS_ID, "pass", "fail"),
        (Kind.REGRESSION, LOAD_PASS_ID, "pass", "unverified"),
        (Kind.CHANGED, OPEN_FAIL_ID, "fail", "error"),
        (Kind.IMPROVEMENT, EXPIRED_ATTESTATION_ID, "unverified", "attested"),
        (Kind.IMPROVEMENT, ERROR_ID, "error", "pass"),
        (Kind.ADDED, FIGURE_ID, None, "pass"),
        (Kind.REMOVED, SKIP_ID, "skip", None),
    ]
    assert changes[0].title.startswith("An incident channel")
    assert changes[-1].title.startswith("The namespace has resource quotas")
    assert summary(changes) == (
        "8 changes: 2 new failures, 1 regression, 1 changed, 2 improvements, 1 added, 1 removed"
    )


def test_identical_records_have_no_changes() -> None:
    record = make_record()
    assert diff_records(record, copy.deepcopy(record)) == []
    assert summary([]) == "no outcome changed"


def test_a_change_has_the_shape_of_a_record_change() -> None:
    change = Change(BLOCKING_FAIL_ID, "pass", "fail")
    assert change.to_json() == {"id": BLOCKING_FAIL_ID, "before": "pass", "after": "fail"}
    assert change.worse
    assert not Change(WAIVED_ID, "fail", "waived").worse


def _write(tmp_path: Path, name: str, record: dict[str, Any]) -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    write_record(record, run_dir / "record.json")
    return run_dir


def test_cli_lists_changes_and_exits_0(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    old_and_new: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    old, new = old_and_new
    new["run_id"] = "20261126T090000Z-aaaaaa"
    old_dir, new_dir = _write(tmp_path, "old", old), _write(tmp_path, "new", new)
    assert main(["diff", str(old_dir), str(new_dir / "record.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10
    assert lines[0] == "compared the 11 items both runs selected"
    assert lines[1].split()[:5] == ["new", "failure", ATTESTED_ID, "attested", "->"]
    assert lines[7].split()[:4] == ["added", FIGURE_ID, "(new)", "->"]
    assert lines[8].split()[:5] == ["removed", SKIP_ID, "skip", "->", "(gone)"]
    assert lines[9] == (
        "8 changes: 2 new failures, 1 regression, 1 changed, 2 improvements, 1 added, "
        f"1 removed (from run {old['run_id']} to run 20261126T090000Z-aaaaaa)"
    )
    assert main(["diff", str(old_dir), str(new_dir), "--fail-on-regression"]) == 1


def test_fail_on_regression_passes_when_nothing_got_worse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _with_outcomes({PASS_ID: "fail"})
    better = _with_outcomes({ERROR_ID: "pass"})
    old_dir, new_dir = _write(tmp_path, "old", old), _write(tmp_path, "new", better)
    assert main(["diff", str(old_dir), str(new_dir), "--fail-on-regression"]) == 0
    out = capsys.readouterr().out
    assert "2 changes: 2 improvements" in out
    same = _write(tmp_path, "same", old)
    assert main(["diff", str(old_dir), str(same), "--fail-on-regression"]) == 0
    assert "no outcome changed" in capsys.readouterr().out


def test_cli_names_a_record_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path, "good", make_record())
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["diff", str(good), str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad.json'}: not readable as JSON" in err


def _area_only(record: dict[str, Any], area: str) -> dict[str, Any]:
    """The record as a run limited by --area would have written it."""
    partial = copy.deepcopy(record)
    for item in partial["items"]:
        if item["area"] != area:
            item.update(selected=False, outcome="skip", reason=f"not selected (--area {area})")
    partial["selection"]["areas"] = [area]
    return partial


def test_items_only_one_run_selected_are_not_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full run against an --area security run once listed every other item as a regression
    (pass -> skip): the second run never selected them."""
    full = make_record(every_item=True)
    security = _area_only(full, "security")
    assert diff_records(full, security) == []
    assert diff_records(security, full) == []
    worse = copy.deepcopy(security)
    hsts = next(i for i in worse["items"] if i["id"] == PASS_ID)
    hsts["outcome"] = "fail"
    assert [(c.id, c.kind) for c in diff_records(full, worse)] == [(PASS_ID, Kind.NEW_FAILURE)]

    difference = selection_difference(full, security)
    selected = sum(1 for i in security["items"] if i["selected"])
    total = len(full["items"])
    assert (difference.compared, len(difference.only_old), difference.only_new) == (
        selected,
        total - selected,
        (),
    )
    old_dir, new_dir = _write(tmp_path, "old", full), _write(tmp_path, "new", worse)
    assert main(["diff", str(old_dir), str(new_dir), "--fail-on-regression"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"compared only the {selected} items both runs selected (old: every item; new: security "
        f"only, {selected} of {total} items); not compared: {total - selected} selected by the "
        "old run only, 0 by the new run only"
    )
    assert lines[1].split()[:3] == ["new", "failure", PASS_ID]
    assert lines[2].startswith("1 change: 1 new failure")

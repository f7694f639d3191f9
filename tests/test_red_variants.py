"""Every critical and high probe item is shown able to fail: a test marked
`@pytest.mark.turns_red(ITEM, defect=...)` runs its probe against a deliberately broken system
and asserts the item ends `fail`. The markers are read statically (preflight/redvariants.py);
the items still without one are excepted here, and only here, each with its reason."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from preflight.checklist import load_checklist
from preflight.redvariants import MarkerError, RedVariant, red_variants, scan

REPO = Path(__file__).resolve().parents[1]
SEVERITIES = ("critical", "high")

# Item id (or a pattern of ids) -> why it has no red variant. The only list of exceptions.
EXCEPTIONS: dict[str, str] = {
    "INF-RES-MEM": (
        "the probe reads the host kernel's MemTotal, which no target option or cgroup limit "
        "lowers: only a machine with less than 8 GB turns it red"
    ),
}


def probe_items(severities: tuple[str, ...] = SEVERITIES) -> dict[str, str]:
    """Id -> severity of the checklist's probe items of these severities."""
    checklist = load_checklist(REPO / "checklist.yaml")
    return {
        i.id: i.severity
        for i in checklist.items
        if i.verify == "probe" and i.severity in severities
    }


def excepted(item_id: str) -> str | None:
    return next((why for key, why in EXCEPTIONS.items() if fnmatch.fnmatch(item_id, key)), None)


@pytest.fixture(scope="module")
def variants() -> list[RedVariant]:
    return scan(REPO)


def test_every_critical_and_high_probe_item_has_a_red_variant_or_an_exception() -> None:
    shown = red_variants(REPO)
    missing = sorted(i for i in probe_items() if i not in shown and excepted(i) is None)
    assert not missing, (
        f"{missing} have no test marked @pytest.mark.turns_red(ITEM, defect=...) that turns them "
        "red; write one (tests/checks/support.py) or add the item to EXCEPTIONS with its reason"
    )


def test_no_critical_item_is_excepted() -> None:
    critical = probe_items(("critical",))
    excused = sorted(i for i in critical if excepted(i) is not None)
    assert not excused, f"critical items must have a red variant: {excused}"


def test_every_exception_is_still_needed_and_names_real_items() -> None:
    items = set(probe_items())
    shown = red_variants(REPO)
    for key, why in EXCEPTIONS.items():
        assert why.strip(), f"the exception of {key} gives no reason"
        matched = fnmatch.filter(items, key)
        assert matched, f"the exception {key} names no critical or high probe item"
        stale = [i for i in matched if i in shown]
        assert not stale, f"{stale} have a red variant now: remove their exception"


def test_every_marker_names_known_items(variants: list[RedVariant]) -> None:
    known = {i.id for i in load_checklist(REPO / "checklist.yaml").items}
    unknown = {v.test: sorted(set(v.items) - known) for v in variants if set(v.items) - known}
    assert not unknown, f"turns_red names items the checklist does not have: {unknown}"


def test_every_marked_test_mentions_the_items_it_names(variants: list[RedVariant]) -> None:
    """A marker is a claim; the test's own source (its body, its parameters, the module's
    constants and helpers it uses) must at least name the item it claims to turn red."""
    suspicious = {v.test: v.unmentioned() for v in variants if v.unmentioned()}
    assert not suspicious, f"these tests never mention the items their marker names: {suspicious}"


SAMPLE = """
import pytest

ITEM = "X-ONE"
PARAMS = [
    pytest.param("a", {"X-TWO": "words"}, marks=pytest.mark.turns_red("X-TWO", defect="Two."),
                 id="two"),
    pytest.param("b", {}, id="none"),
]


@pytest.mark.turns_red(ITEM_LITERAL, defect="One,\\n  broken.")
def test_one():
    assert ITEM


@pytest.mark.parametrize(("name", "expected"), PARAMS)
def test_params(name, expected):
    assert expected


@pytest.mark.parametrize("x", [pytest.param(1, marks=[pytest.mark.turns_red("X-ONE",
                         defect="Inline.")])])
def test_inline(x):
    assert x


def test_unmarked():
    assert "X-ONE"
"""


def test_the_scanner_reads_decorators_and_parameter_marks(tmp_path: Path) -> None:
    (tmp_path / "tests" / "deep").mkdir(parents=True)
    (tmp_path / "tests" / "deep" / "test_x.py").write_text(
        SAMPLE.replace("ITEM_LITERAL", '"X-ONE"')
    )
    found = red_variants(tmp_path)
    assert sorted(found) == ["X-ONE", "X-TWO"]
    assert [(v.defect, v.test) for v in found["X-ONE"]] == [
        ("One, broken.", "tests/deep/test_x.py::test_one"),
        ("Inline.", "tests/deep/test_x.py::test_inline"),
    ]
    (two,) = found["X-TWO"]
    assert (two.defect, two.test) == ("Two.", "tests/deep/test_x.py::test_params[two]")
    assert not two.unmentioned()  # in its own parameter set
    assert not found["X-ONE"][0].unmentioned()  # in the body of test_one


def test_a_marker_that_cannot_be_read_statically_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(SAMPLE.replace("ITEM_LITERAL", "ITEM"))
    with pytest.raises(MarkerError, match="test_one: turns_red takes literal strings only"):
        scan(tmp_path)

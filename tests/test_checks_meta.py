"""Meta-tests that keep checks/ and checklist.yaml honest: unique ids, every marker names a real
item, every probe item has a test or is listed in checks/pending-probes.txt (and that list is
exact, so it only shrinks)."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from preflight.checklist import Checklist, load_checklist
from preflight.outcomes import ProbeResults
from preflight.plugin import collect_probes
from preflight.run import read_pending

REPO = Path(__file__).resolve().parents[1]
CHECKS = REPO / "checks"
CHECKLIST = REPO / "checklist.yaml"
PENDING = CHECKS / "pending-probes.txt"


def pending_problems(
    checklist: Checklist, collected: Mapping[str, list[str]], pending: Sequence[str]
) -> list[str]:
    probe_ids = {item.id for item in checklist.items if item.verify == "probe"}
    verify = {item.id: item.verify for item in checklist.items}
    problems = [f"{i} is listed twice" for i, n in Counter(pending).items() if n > 1]
    for item_id in dict.fromkeys(pending):
        if item_id not in verify:
            problems.append(f"{item_id} is not an item of checklist.yaml; remove it")
        elif item_id not in probe_ids:
            problems.append(f"{item_id} is verified by {verify[item_id]}, not probe; remove it")
        elif item_id in collected:
            problems.append(
                f"{item_id} has a probe now ({collected[item_id][0]}); remove it from the list"
            )
    for item_id in sorted(probe_ids - set(collected) - set(pending)):
        problems.append(f"{item_id} is a probe item with no test in checks/; write its probe")
    return problems


@pytest.fixture(scope="module")
def checklist() -> Checklist:
    return load_checklist(CHECKLIST)


@pytest.fixture(scope="module")
def collected() -> ProbeResults:
    return collect_probes([CHECKS], CHECKLIST)


def test_checklist_ids_are_unique(checklist: Checklist) -> None:
    counts = Counter(item.id for item in checklist.items)
    assert [i for i, n in counts.items() if n > 1] == []


def test_every_marker_names_a_real_item(collected: ProbeResults) -> None:
    assert collected.errors == []
    assert collected.collected, "checks/ holds no probe at all"
    # Collection only: no probe ran, so no target was started.
    assert collected.results == []


def test_every_probe_item_has_a_test_or_is_pending(
    checklist: Checklist, collected: ProbeResults
) -> None:
    problems = pending_problems(checklist, collected.collected, read_pending(CHECKS))
    assert problems == [], "checks/pending-probes.txt is out of date:\n  " + "\n  ".join(problems)


def test_the_pending_check_sees_every_kind_of_drift(checklist: Checklist) -> None:
    manual = next(item.id for item in checklist.items if item.verify == "manual")
    collected = {"SEC-HDR-HSTS": ["checks/security/test_headers.py::test_hsts"]}
    pending = ["SEC-HDR-HSTS", "NO-SUCH-ITEM", manual, "SEC-CORS", "SEC-CORS"]
    problems = pending_problems(checklist, collected, pending)
    assert problems[:5] == [
        "SEC-CORS is listed twice",
        "SEC-HDR-HSTS has a probe now (checks/security/test_headers.py::test_hsts); "
        "remove it from the list",
        "NO-SUCH-ITEM is not an item of checklist.yaml; remove it",
        f"{manual} is verified by manual, not probe; remove it",
        # Every other probe item is neither collected nor pending here.
        "APP-BUILD-PROD is a probe item with no test in checks/; write its probe",
    ]


def test_an_unknown_marker_fails_the_meta_test(tmp_path: Path) -> None:
    probes = tmp_path / "checks"
    probes.mkdir()
    (probes / "test_typo.py").write_text(
        'import pytest\n\n@pytest.mark.checklist("SEC-HDR-HTST")\ndef test_hsts(target): pass\n'
    )
    (error,) = collect_probes([probes], CHECKLIST).errors
    assert error.startswith("test_typo.py:3: test_typo.py::test_hsts: marker ")
    assert "'SEC-HDR-HTST', which is not an item of" in error


def test_every_probe_has_a_one_line_docstring_naming_its_risk() -> None:
    missing = []
    for path in sorted(CHECKS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                doc = ast.get_docstring(node)
                if not doc or "\n" in doc:
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert missing == []

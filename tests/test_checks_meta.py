"""Meta-tests that keep checks/ and checklist.yaml honest: unique ids, every marker names a real
item, every probe item has a test."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest

from preflight.checklist import Checklist, load_checklist
from preflight.outcomes import ProbeResults
from preflight.plugin import collect_probes

REPO = Path(__file__).resolve().parents[1]
CHECKS = REPO / "checks"
CHECKLIST = REPO / "checklist.yaml"


def untested_probe_items(checklist: Checklist, collected: Mapping[str, list[str]]) -> list[str]:
    probe_ids = {item.id for item in checklist.items if item.verify == "probe"}
    return [
        f"{item_id} is a probe item with no test in checks/; write its probe"
        for item_id in sorted(probe_ids - set(collected))
    ]


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


def test_every_probe_item_has_a_test(checklist: Checklist, collected: ProbeResults) -> None:
    problems = untested_probe_items(checklist, collected.collected)
    assert problems == [], "\n  ".join(problems)


def test_the_check_names_every_probe_item_without_a_test(checklist: Checklist) -> None:
    collected = {"SEC-HDR-HSTS": ["checks/security/test_headers.py::test_hsts"]}
    problems = untested_probe_items(checklist, collected)
    probe_items = [item.id for item in checklist.items if item.verify == "probe"]
    assert len(problems) == len(probe_items) - 1
    assert "APP-BUILD-PROD is a probe item with no test in checks/; write its probe" in problems
    assert not [p for p in problems if p.startswith("SEC-HDR-HSTS ")]


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


# A fork of the multi-threaded run process can inherit a lock mid-acquire and wait on it forever
# (detect-secrets' scan_files forks a multiprocessing pool): probes scan in their own process or
# start a fresh one (subprocess), never a fork of this one.
FORKING_CALLS = ("scan_files", "Pool", "ProcessPoolExecutor", "fork", "forkpty", "get_context")


def test_no_probe_forks_the_run_process() -> None:
    found: list[str] = []
    for path in sorted(CHECKS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in FORKING_CALLS:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}(...)")
    assert not found, found


def test_every_optional_part_names_a_collected_test(
    checklist: Checklist, collected: ProbeResults
) -> None:
    dangling = [
        f"{item.id}: optional test {part.test!r} matches none of its tests"
        for item in checklist.items
        for part in item.optional
        if not any(part.excuses(n) for n in collected.collected.get(item.id, []))
    ]
    assert not dangling, dangling

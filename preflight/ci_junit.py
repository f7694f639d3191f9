"""DEP-TESTS-GREEN from the CI's own JUnit XML: the release's test suite passed for this commit.

`preflight run --ci-junit FILE` decides the item from the file instead of an attestation. The
file must name the commit its tests ran on, as a testsuite property `commit` (pytest:
`record_testsuite_property("commit", sha)`, or `-o junit_suite_name` plus a conftest that records
it); a file for another commit, or naming none, decides nothing. The item passes when the file
holds at least one test and no failure or error; it fails when any test failed or errored.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from preflight.checklist import Item
from preflight.decide import Decision
from preflight.outcomes import Outcome
from preflight.release import Release

CI_TESTS_ITEM = "DEP-TESTS-GREEN"
COMMIT_PROPERTY = "commit"


@dataclass(frozen=True)
class JUnitSummary:
    commits: frozenset[str]  # every `commit` property of the file's testsuites
    tests: int
    failures: int
    errors: int
    skipped: int


def read_junit(path: Path) -> JUnitSummary:
    """Counts of the testcases in a JUnit XML file (<testsuites> or one <testsuite>), and the
    commits its testsuites name. ValueError says why the file is not one."""
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - the CI's own report, read by expat
    except (OSError, ET.ParseError) as exc:
        raise ValueError(f"{path} is not readable JUnit XML ({exc})") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise ValueError(f"{path} is not JUnit XML (its root is <{root.tag}>)")
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    commits = {
        prop.get("value", "").strip()
        for suite in suites
        for prop in suite.iter("property")
        if prop.get("name") == COMMIT_PROPERTY
    }
    cases = list(root.iter("testcase"))
    return JUnitSummary(
        commits=frozenset(c for c in commits if c),
        tests=len(cases),
        failures=sum(1 for c in cases if c.find("failure") is not None),
        errors=sum(1 for c in cases if c.find("error") is not None),
        skipped=sum(1 for c in cases if c.find("skipped") is not None),
    )


def decide_ci_junit(item: Item, path: Path, release: Release) -> Decision:
    """The item from the CI's JUnit file, for the run's release commit only."""
    try:
        junit = read_junit(path)
    except ValueError as exc:
        return Decision(item, True, Outcome.UNVERIFIED, str(exc))
    if not junit.commits:
        reason = (
            f"{path.name} names no commit (a testsuite property {COMMIT_PROPERTY!r}): it cannot "
            "say which release its tests ran on"
        )
        return Decision(item, True, Outcome.UNVERIFIED, reason)
    if release.commit is None or junit.commits != {release.commit}:
        named = ", ".join(sorted(c[:12] for c in junit.commits))
        reason = f"{path.name} is for commit {named}, this run is release {release.label()}"
        return Decision(item, True, Outcome.UNVERIFIED, reason)
    counts = (
        f"{junit.tests} tests, {junit.failures} failed, {junit.errors} errors, "
        f"{junit.skipped} skipped in {path.name} for commit {release.commit[:12]}"
    )
    if junit.tests == 0:
        return Decision(item, True, Outcome.UNVERIFIED, f"no test ran: {counts}")
    if junit.failures or junit.errors:
        return Decision(item, True, Outcome.FAIL, f"the CI test suite did not pass: {counts}")
    return Decision(item, True, Outcome.PASS, f"the CI test suite passed: {counts}")

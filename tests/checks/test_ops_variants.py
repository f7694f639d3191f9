"""The operations records' probes (checks/operations: the rota, escalation, incident plan,
access, patch SLA, lessons, post-mortems, DR reviews) against deliberately broken copies of the
files they read: each defect turns its item red and the reason names it. A completed copy (every
test page acknowledged, a launch post-mortem, a DR review after the launch) passes every item, so
the repository's own red and skipped items are its records' state, not the probes'.

Only system/docs, system/deploy/k8s and system/monitoring are copied: nothing else is read, and no
target is contacted."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from preflight.outcomes import Outcome
from preflight.plugin import RunContext, run_probes
from preflight.targets.base import Edge, TargetInfo
from tests.checks.support import CHECKLIST, CHECKS, REPO, apply_edits, outcomes

ITEMS = {
    "OPS-ONCALL-ROTA",
    "OPS-ONCALL-SHIFTS",
    "OPS-ESCALATION",
    "OPS-INCIDENT-PLAN",
    "OPS-ACCESS",
    "SEC-PATCH-SLA",
    "RB-LESSONS",
    "POST-POSTMORTEM",
    "POST-DR-UPDATE",
}
COPIED = ("system/docs", "system/deploy/k8s", "system/monitoring")
NEVER_CONTACTED = TargetInfo(
    name="records-only", kind="external", edge=Edge("https://127.0.0.1:9"), admin_key="unused"
)
OPS = "system/docs/operations"
PAGES = "".join(
    f"- {{person: {p}, sent: 2026-12-10T09:00:00Z, acknowledged: 2026-12-10T09:0{n}:00Z}}\n"
    for n, p in enumerate(("ada", "grace", "linus", "margaret"), start=1)
)
POSTMORTEM = """# Launch post-mortem

Owner: cto
Date: 2027-01-11

## Summary

The launch went out on 2026-12-14.

## Actions

- [ ] Raise the API pool size before the next campaign (owner: ops-lead, due: 2027-02-01)
"""

Edit = Callable[[str], str]


def copy(tmp: Path, edits: dict[str, Edit], *, completed: bool = True) -> Path:
    """The files the probes read, completed as after a launch month unless told otherwise, then
    passed through `edits`."""
    root = tmp / "repo"
    for part in COPIED:
        shutil.copytree(REPO / part, root / part)
    if completed:
        apply_edits(
            root,
            {
                f"{OPS}/oncall.yaml": lambda t: t.replace(
                    "test_pages: []\n", f"test_pages:\n{PAGES}"
                ),
                f"{OPS}/disaster-recovery.md": lambda t: t.replace(
                    "Last reviewed: 2026-12-07", "Last reviewed: 2027-01-12"
                ).replace(
                    "- 2026-12-07, ops-lead:",
                    "- 2027-01-12, ops-lead: after the launch month, against the running "
                    "deployment; nothing changed.\n- 2026-12-07, ops-lead:",
                ),
            },
        )
        (root / OPS / "postmortems" / "2027-01-11-launch.md").write_text(POSTMORTEM)
    return apply_edits(root, edits)


def judge(root: Path) -> dict[str, tuple[Outcome, str]]:
    results = run_probes(
        [CHECKS / "operations"],
        RunContext(target=NEVER_CONTACTED, selected=ITEMS),
        CHECKLIST,
        extra_args=[f"--repo-dir={root}"],
    )
    assert not results.errors, results.errors
    decided = outcomes(results)
    assert set(decided) == ITEMS, sorted(ITEMS - set(decided))
    return decided


def red(root: Path) -> dict[str, str]:
    return {i: reason for i, (o, reason) in judge(root).items() if o is Outcome.FAIL}


def test_completed_records_pass_every_item(tmp_path: Path) -> None:
    decided = judge(copy(tmp_path, {}))
    assert {i: o for i, (o, _) in decided.items() if o is not Outcome.PASS} == {}, decided


def test_the_repository_waits_for_its_launch_and_its_test_pages(tmp_path: Path) -> None:
    """Before the launch: no one acknowledged a test page yet (a fail), and the post-launch
    records are not due (unverified, saying why), never a pass."""
    decided = judge(copy(tmp_path, {}, completed=False))
    assert decided["OPS-ONCALL-SHIFTS"][0] is Outcome.FAIL
    assert decided["POST-POSTMORTEM"][0] is Outcome.UNVERIFIED
    assert "due within its first month" in decided["POST-POSTMORTEM"][1]
    assert decided["POST-DR-UPDATE"][0] is Outcome.UNVERIFIED


def _drop_shift(text: str) -> str:
    line = (
        "- {start: 2026-12-20T12:00:00Z, end: 2026-12-21T00:00:00Z, primary: grace, "
        "secondary: linus}\n"
    )
    assert line in text
    return text.replace(line, "")


VARIANTS = [
    pytest.param(
        {f"{OPS}/oncall.yaml": _drop_shift},
        {"OPS-ONCALL-ROTA": "no one is on call from 2026-12-20 12:00 .. 2026-12-21 00:00"},
        marks=pytest.mark.turns_red(
            "OPS-ONCALL-ROTA", defect="The rota leaves one twelve-hour shift of the launch empty."
        ),
        id="rota-with-a-gap",
    ),
    pytest.param(
        {f"{OPS}/oncall.yaml": lambda t: t.replace(PAGES.splitlines()[2] + "\n", "")},
        {"OPS-ONCALL-SHIFTS": "linus on the rota acknowledged no test page"},
        marks=pytest.mark.turns_red(
            "OPS-ONCALL-SHIFTS", defect="One person on the rota never acknowledged a test page."
        ),
        id="one-test-page-missing",
    ),
    pytest.param(
        {
            f"{OPS}/escalation.yaml": lambda t: (
                t.split("  warning:\n")[0] + "  info:\n" + t.split("  info:\n")[1]
            )
        },
        {"OPS-ESCALATION": "missing warning"},
        marks=pytest.mark.turns_red(
            "OPS-ESCALATION", defect="The escalation policy has no entry for warning alerts."
        ),
        id="escalation-without-warning",
    ),
    pytest.param(
        {f"{OPS}/incident-response.md": lambda t: t.replace("## Communication", "## Notes")},
        {"OPS-INCIDENT-PLAN": "must have sections on communication"},
        marks=pytest.mark.turns_red(
            "OPS-INCIDENT-PLAN", defect="The incident response plan says nothing on communication."
        ),
        id="incident-plan-without-communication",
    ),
    pytest.param(
        {
            "system/deploy/k8s/90-rbac.yaml": lambda t: t.replace(
                "{apiGroup: rbac.authorization.k8s.io, kind: Group, name: chatsdk-oncall}",
                "{apiGroup: rbac.authorization.k8s.io, kind: User, name: admin}",
            )
        },
        {"OPS-ACCESS": "binds the shared account User admin"},
        marks=pytest.mark.turns_red(
            "OPS-ACCESS", defect="The on-call role is bound to a shared `admin` user."
        ),
        id="rbac-shared-admin",
    ),
    pytest.param(
        {
            f"{OPS}/patching.md": lambda t: t.replace(
                "| 9.0-10.0 | 7 days |", "| 9.0-10.0 | 30 days |"
            )
        },
        {"SEC-PATCH-SLA": "within 7 days (it says 30 days)"},
        marks=pytest.mark.turns_red(
            "SEC-PATCH-SLA", defect="The patch SLA gives critical fixes 30 days instead of 7."
        ),
        id="patch-sla-30-days",
    ),
    pytest.param(
        {
            f"{OPS}/rollback.md": lambda t: t.replace(
                "[lessons-learned.md](lessons-learned.md)", "the lessons"
            ),
            f"{OPS}/postmortems/2027-01-11-launch.md": lambda t: t.replace(
                " (owner: ops-lead, due: 2027-02-01)", ""
            ),
        },
        {
            "RB-LESSONS": "must be linked from rollback.md",
            "POST-POSTMORTEM": "every action needs `(owner: ..., due: YYYY-MM-DD)`",
        },
        marks=pytest.mark.turns_red(
            "RB-LESSONS",
            "POST-POSTMORTEM",
            defect="The rollback runbook no longer links the lessons, and a post-mortem action "
            "has no owner.",
        ),
        id="lessons-unlinked-postmortem-action-without-owner",
    ),
]


@pytest.mark.parametrize(("edits", "expected"), VARIANTS)
def test_each_defect_turns_its_item_red(
    tmp_path: Path, edits: dict[str, Edit], expected: dict[str, str]
) -> None:
    failed = red(copy(tmp_path, edits))
    assert set(failed) == set(expected), failed
    for item, words in expected.items():
        assert words in failed[item], failed[item]

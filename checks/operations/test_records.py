"""The records that follow incidents and the launch: lessons from rollbacks, the post-mortems and
the disaster-recovery plan's reviews, each with an owner and a date and linked from the runbooks.
Post-launch records cannot exist before the launch: until one is due they skip, saying so."""

from __future__ import annotations

import re
from datetime import date

import pytest

from checks.deployment._artefacts import Repo
from checks.operations._docs import Doc
from checks.operations._records import OWNER, accountable, linked_from, load_yaml, moment
from preflight.evidence import EvidenceLog
from preflight.probe import undecided

ENTRY = re.compile(r"^##\s+(\d{4}-\d{2}-\d{2})\b.*$", re.M)
REVIEW = re.compile(r"^-\s+(\d{4}-\d{2}-\d{2}),\s*([a-z-]+):", re.M)
ACTION = re.compile(r"^\s*- \[[ x]\] (.+)$", re.M)
ACTION_OWNED = re.compile(r"\(owner: [^,)]+, due: \d{4}-\d{2}-\d{2}\)")


def launch(repo: Repo) -> date:
    """The first day of the launch window in the on-call rota."""
    return moment((load_yaml(repo, "oncall.yaml").get("window") or {}).get("start"), "").date()


@pytest.mark.checklist("RB-LESSONS")
def test_the_lessons_of_rollbacks_are_written_and_linked(repo: Repo, evidence: EvidenceLog) -> None:
    """Unwritten lessons are relearned the hard way."""
    path = repo.operations / "lessons-learned.md"
    owner, reviewed = accountable(repo, path)
    text = path.read_text()
    dates = ENTRY.findall(text)
    evidence.note(f"lessons-learned.md: owner {owner}, reviewed {reviewed}, entries {dates}")
    assert dates, "lessons-learned.md must hold dated entries (`## YYYY-MM-DD: what happened`)"
    sections = Doc(path, text).sections()
    unowned = [
        t for t, body in sections.items() if ENTRY.match(f"## {t}") and not OWNER.search(body)
    ]
    assert not unowned, f"lessons-learned.md: entries without `Owner:` ({'; '.join(unowned)})"
    linked_from(repo, path, "rollback.md")


@pytest.mark.checklist("POST-POSTMORTEM")
def test_the_launch_post_mortem_has_owned_actions(repo: Repo, evidence: EvidenceLog) -> None:
    """Without a review the same launch problems recur."""
    folder = repo.operations / "postmortems"
    accountable(repo, folder / "README.md")
    linked_from(repo, folder / "README.md", "runbooks.md")
    first_day = launch(repo)
    after = []
    for path in sorted(folder.glob("*.md")):
        if path.name == "README.md":
            continue
        owner, when = accountable(repo, path)
        evidence.note(f"{path.name}: owner {owner}, date {when}")
        actions = ACTION.findall(path.read_text())
        assert actions, f"{repo.relative(path)} must list its actions (`- [ ] ...`)"
        unowned = [a for a in actions if not ACTION_OWNED.search(a)]
        assert not unowned, (
            f"{repo.relative(path)}: every action needs `(owner: ..., due: YYYY-MM-DD)` "
            f"(not: {'; '.join(unowned)})"
        )
        if when >= first_day:
            after.append(path.name)
    if not after:
        undecided(
            f"no post-mortem dated on or after the launch ({first_day}) yet: the launch "
            "post-mortem is due within its first month"
        )


@pytest.mark.checklist("POST-DR-UPDATE")
def test_the_dr_plan_was_reviewed_after_the_launch(repo: Repo, evidence: EvidenceLog) -> None:
    """Systems drift away from their DR plans within weeks."""
    path = repo.operations / "disaster-recovery.md"
    owner, reviewed = accountable(repo, path)
    linked_from(repo, path, "runbooks.md")
    reviews = Doc(path, path.read_text()).section("reviews")
    entries = [(date.fromisoformat(d), who) for d, who in REVIEW.findall(reviews)]
    evidence.note(f"disaster-recovery.md: owner {owner}, reviewed {reviewed}, reviews {entries}")
    assert entries, (
        "disaster-recovery.md must log its reviews (`## Reviews`: `- YYYY-MM-DD, role:`)"
    )
    newest = max(d for d, _ in entries)
    assert reviewed >= newest, (
        f"disaster-recovery.md: `Last reviewed: {reviewed}` is older than its newest review "
        f"{newest}"
    )
    first_day = launch(repo)
    if newest < first_day:
        undecided(
            f"the newest review ({newest}) is before the launch ({first_day}); the review "
            "against the running system is due within the launch's first month"
        )

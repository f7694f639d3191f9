"""What changed between two run records: items whose outcome moved, new failures first.

Only items that both runs selected are compared: an item one run did not select was not
decided there (its outcome says `skip`, "not selected"), so it is neither a regression nor an
improvement. `selection_difference` says which items were left out, and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from preflight.outcomes import Outcome
from preflight.scope import scope

# How bad an outcome is for a release, coarse on purpose: a move within one rank (fail <-> error,
# skip <-> unverified, pass <-> attested) is a change, neither better nor worse.
_RANK: dict[str, int] = {
    Outcome.PASS: 0,
    Outcome.ATTESTED: 0,
    Outcome.WAIVED: 1,  # off-spec, but an accepted risk
    Outcome.SKIP: 2,
    Outcome.UNVERIFIED: 2,
    Outcome.ERROR: 3,
    Outcome.FAIL: 3,
}
_FAILING = {Outcome.FAIL.value, Outcome.ERROR.value}


class Kind(IntEnum):
    """The kinds of change, in the order they are listed."""

    NEW_FAILURE = 0  # now fail or error, was anything else
    REGRESSION = 1  # worse, but not (newly) failing, e.g. pass -> unverified
    CHANGED = 2  # different outcome of the same rank, e.g. fail -> error
    IMPROVEMENT = 3
    ADDED = 4
    REMOVED = 5

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


@dataclass(frozen=True)
class Change:
    id: str
    before: str | None  # None: the item is new
    after: str | None  # None: the item is gone
    title: str = ""

    @property
    def kind(self) -> Kind:
        return classify(self.before, self.after)

    @property
    def worse(self) -> bool:
        return self.kind in (Kind.NEW_FAILURE, Kind.REGRESSION)

    def to_json(self) -> dict[str, Any]:
        """The shape of one entry of a record's `changes`."""
        return {"id": self.id, "before": self.before, "after": self.after}


def classify(before: str | None, after: str | None) -> Kind:
    if before is None:
        return Kind.ADDED
    if after is None:
        return Kind.REMOVED
    if after in _FAILING and before not in _FAILING:
        return Kind.NEW_FAILURE
    if _RANK[after] > _RANK[before]:
        return Kind.REGRESSION
    if _RANK[after] < _RANK[before]:
        return Kind.IMPROVEMENT
    return Kind.CHANGED


def order(changes: Sequence[Change]) -> list[Change]:
    """By kind (new failures first), then by item id."""
    return sorted(changes, key=lambda c: (c.kind, c.id))


def _items(record: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {item["id"]: item for item in record["items"]}


def _selected(record: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {item["id"]: item for item in record["items"] if item["selected"]}


@dataclass(frozen=True)
class SelectionDifference:
    """Items in both records that only one run selected; they are not compared."""

    compared: int  # items both runs selected
    only_old: tuple[str, ...]  # selected by the old run only
    only_new: tuple[str, ...]  # selected by the new run only

    @property
    def same(self) -> bool:
        return not self.only_old and not self.only_new

    def describe(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
        """One line on what was compared, naming each run's scope when they differ."""
        if self.same:
            return f"compared the {self.compared} items both runs selected"
        old_scope, new_scope = scope(old) or "every item", scope(new) or "every item"
        return (
            f"compared only the {self.compared} items both runs selected (old: {old_scope}; "
            f"new: {new_scope}); not compared: {len(self.only_old)} selected by the old run "
            f"only, {len(self.only_new)} by the new run only"
        )


def selection_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> SelectionDifference:
    before, after = _items(old), _items(new)
    selected_old, selected_new = _selected(old), _selected(new)
    both = before.keys() & after.keys()
    return SelectionDifference(
        compared=len(selected_old.keys() & selected_new.keys()),
        only_old=tuple(sorted(i for i in both if i in selected_old and i not in selected_new)),
        only_new=tuple(sorted(i for i in both if i in selected_new and i not in selected_old)),
    )


def diff_records(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Outcome changes of the items both runs selected, then the items only one record has."""
    all_before, all_after = _items(old), _items(new)
    selected = _selected(old).keys() & _selected(new).keys()
    # An item in both records but selected by only one run is not compared; an item only one
    # record has at all is added or removed.
    before = {i: e for i, e in all_before.items() if i in selected or i not in all_after}
    after = {i: e for i, e in all_after.items() if i in selected or i not in all_before}
    changes = [
        Change(
            id=item_id,
            before=before[item_id]["outcome"] if item_id in before else None,
            after=after[item_id]["outcome"] if item_id in after else None,
            title=(after.get(item_id) or before[item_id])["title"],
        )
        for item_id in before.keys() | after.keys()
        if item_id not in before
        or item_id not in after
        or before[item_id]["outcome"] != after[item_id]["outcome"]
    ]
    return order(changes)


def describe(change: Change) -> str:
    """One line: kind, id, before -> after, title."""
    move = f"{change.before or '(new)'} -> {change.after or '(gone)'}"
    return f"{change.kind.label:<12} {change.id:<24} {move:<24} {change.title}".rstrip()


def summary(changes: Sequence[Change]) -> str:
    if not changes:
        return "no outcome changed"
    parts = []
    for kind in Kind:
        n = sum(1 for c in changes if c.kind is kind)
        if n:
            countable = kind in (Kind.NEW_FAILURE, Kind.REGRESSION, Kind.IMPROVEMENT)
            parts.append(f"{n} {kind.label}{'s' if countable and n != 1 else ''}")
    noun = "change" if len(changes) == 1 else "changes"
    return f"{len(changes)} {noun}: {', '.join(parts)}"

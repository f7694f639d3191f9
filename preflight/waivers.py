"""waivers.yaml: accepted risks, each waiving one item's failure until the end of its expiry day."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from preflight.checklist import Checklist, describe_error, load_schema
from preflight.yamlfile import FileInvalid, YamlPath, line_of, read_yaml

DEFAULT_PATH = Path("waivers.yaml")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # the schema's pattern; the rules check the rest


class WaiversInvalid(FileInvalid):
    noun = "waivers file"


def end_of_day(day: date) -> datetime:
    """The first instant after `day` in UTC: something that expires on `day` is over then."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def as_utc(now: datetime) -> datetime:
    """An aware datetime in UTC (a naive one is taken to be UTC already)."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


@dataclass(frozen=True)
class Waiver:
    item: str
    justification: str
    owner: str
    approver: str
    expires: date
    line: int = 0

    def status(self, now: datetime) -> str:
        return "active" if as_utc(now) < end_of_day(self.expires) else "expired"

    def active(self, now: datetime) -> bool:
        return self.status(now) == "active"

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.item,  # named like every item id in the record
            "justification": self.justification,
            "owner": self.owner,
            "approver": self.approver,
            "expires": self.expires.isoformat(),
            "status": self.status(now),
        }


def waiver_for(item_id: str, waivers: Iterable[Waiver], now: datetime) -> Waiver | None:
    """The active waiver for an item (the one that lasts longest when several are), or None."""
    active = [w for w in waivers if w.item == item_id and w.active(now)]
    return max(active, key=lambda w: w.expires) if active else None


def schema() -> dict[str, Any]:
    return load_schema("waivers")


def _label(data: object, index: int) -> str:
    entry = data[index] if isinstance(data, list) and index < len(data) else None
    if isinstance(entry, dict) and isinstance(entry.get("item"), str) and entry["item"].strip():
        return f"waiver for {entry['item']}"
    return f"waiver #{index + 1}"


def _message(error: ValidationError, name: str) -> str:
    if name == "expires" and error.validator in ("type", "pattern"):
        return f"must be a date YYYY-MM-DD (got {error.instance!r})"
    if isinstance(error.instance, str) and not error.instance.strip():
        return "must not be empty"
    return describe_error(error)[1]


def _schema_problems(path: Path, data: object, lines: dict[YamlPath, int]) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    for error in Draft202012Validator(schema()).iter_errors(data):
        where = list(error.absolute_path)
        if not where:
            message = "must be a list of waivers (an empty file or [] for none)"
            problems.append((1, f"{path}:1: {message}, got {type(data).__name__}"))
            continue
        index = where[0]
        assert isinstance(index, int)  # the top level is a list by now
        names, _ = describe_error(error)
        fields = names or [str(p) for p in where[1:2]] or ["(entry)"]
        for name in fields:
            line = line_of(lines, (index, name))
            message = _message(error, name)
            problems.append(
                (line, f"{path}:{line}: {_label(data, index)}, field {name}: {message}")
            )
    return problems


def _rule_problems(
    path: Path, entries: list[Any], lines: dict[YamlPath, int], checklist: Checklist
) -> list[tuple[int, str]]:
    """Rules the schema cannot say: a known item, a real date, an approver who is not the owner."""
    known = {item.id for item in checklist.items}
    problems: list[tuple[int, str]] = []

    def problem(index: int, name: str, message: str) -> None:
        line = line_of(lines, (index, name))
        problems.append((line, f"{path}:{line}: {_label(entries, index)}, field {name}: {message}"))

    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        item = entry.get("item")
        if isinstance(item, str) and item.strip() and item not in known:
            problem(index, "item", f"no item {item!r} in {checklist.path}")
        expires = entry.get("expires")
        if isinstance(expires, str) and DATE.fullmatch(expires):
            try:
                date.fromisoformat(expires)
            except ValueError as exc:
                problem(index, "expires", f"not a real date ({exc})")
        owner, approver = entry.get("owner"), entry.get("approver")
        if (
            isinstance(owner, str)
            and isinstance(approver, str)
            and owner.strip()
            and owner.strip().casefold() == approver.strip().casefold()
        ):
            problem(
                index,
                "approver",
                f"must differ from the owner ({owner!r}): a risk is accepted by a second person",
            )
    return problems


def load_waivers(path: Path, checklist: Checklist) -> list[Waiver]:
    """Every waiver in the file (none when it does not exist); WaiversInvalid lists each problem."""
    if not path.exists():
        return []
    data, lines = read_yaml(path, WaiversInvalid)
    if data is None:
        return []
    found = _schema_problems(path, data, lines)
    if isinstance(data, list):
        found += _rule_problems(path, data, lines, checklist)
    if found:
        raise WaiversInvalid(path, [message for _, message in sorted(set(found))])
    assert isinstance(data, list)  # the schema guarantees it
    return [
        Waiver(
            item=entry["item"],
            justification=entry["justification"].strip(),
            owner=entry["owner"],
            approver=entry["approver"],
            expires=date.fromisoformat(entry["expires"]),
            line=line_of(lines, (index,)),
        )
        for index, entry in enumerate(data)
    ]

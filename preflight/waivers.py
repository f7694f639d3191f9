"""waivers.yaml: accepted failures. A waiver names one item and the failures of it that it accepts
(test node ids or patterns, and/or a regex of the failure message); it is signed by its approver
with a key registered for the approver's role, and waives those failures until its expiry day.

Any failure of the item that the waiver does not name is not waived. The rules the schema cannot
say (a known probe or load item, real dates, at most a year, an approver who is not the owner, a
valid signature by a registered key, no two waivers for the same failures) are checked here, each
problem named with entry, field and line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator, ValidationError

from preflight.checklist import Checklist, describe_error, load_schema
from preflight.errors import FileInvalid
from preflight.yamlfile import YamlPath, line_of, read_yaml

if TYPE_CHECKING:
    from preflight.signing import Registry

DEFAULT_PATH = Path("waivers.yaml")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # the schema's pattern; the rules check the rest
WAIVER_SCHEMA = "preflight.waiver/1"  # named in what the approver signs
MAX_DAYS = 365  # from granted to expires: an accepted risk is accepted again at least yearly
SIGNED_FIELDS = ("item", "tests", "message", "justification", "owner", "approver")
SIGNED_DATES = ("granted", "expires")


class WaiversInvalid(FileInvalid):
    noun = "waivers file"


def end_of_day(day: date) -> datetime:
    """The first instant after `day` in UTC: something that expires on `day` is over then."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def as_utc(now: datetime) -> datetime:
    """An aware datetime in UTC (a naive one is taken to be UTC already)."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def node_pattern(pattern: str) -> re.Pattern[str]:
    """A node-id pattern as a regex: `*` and `?` are wildcards; everything else is literal,
    brackets too (they hold the parameters of parametrised tests)."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts))


def signed_fields(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What the approver signs: the entry's scope, reasons, roles and dates, and the signer."""
    fields: dict[str, Any] = {"schema": WAIVER_SCHEMA}
    fields |= {name: entry[name] for name in (*SIGNED_FIELDS, *SIGNED_DATES) if name in entry}
    signature = entry.get("signature")
    if isinstance(signature, Mapping):
        fields |= dict(signature)  # signer, key_id, public_key, algorithm and the signature
    return fields


@dataclass(frozen=True)
class Waiver:
    item: str
    justification: str
    owner: str
    approver: str
    expires: date
    tests: tuple[str, ...] = ()
    message: str | None = None
    granted: date | None = None
    signer: str = ""
    line: int = 0

    def status(self, now: datetime) -> str:
        return "active" if as_utc(now) < end_of_day(self.expires) else "expired"

    def active(self, now: datetime) -> bool:
        return self.status(now) == "active"

    def scope(self) -> str:
        """What it accepts, in words."""
        parts = [", ".join(self.tests)] if self.tests else []
        if self.message is not None:
            parts.append(f"failures matching /{self.message}/")
        return " and ".join(parts)

    def covers(self, nodeid: str | None, message: str) -> bool:
        """Whether it accepts this failure: a test (its node id and message), or a failure that no
        test reported (nodeid None, e.g. a load figure: only a message-only waiver covers it)."""
        if self.tests and (
            nodeid is None or not any(node_pattern(p).fullmatch(nodeid) for p in self.tests)
        ):
            return False
        return self.message is None or re.search(self.message, message) is not None

    def to_json(self, now: datetime) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.item,  # named like every item id in the record
            "tests": list(self.tests),
            "message": self.message,
            "justification": self.justification,
            "owner": self.owner,
            "approver": self.approver,
            "signer": self.signer,
            "granted": self.granted.isoformat() if self.granted else None,
            "expires": self.expires.isoformat(),
            "status": self.status(now),
        }
        return shown


def waivers_for(item_id: str, waivers: Iterable[Waiver], now: datetime) -> list[Waiver]:
    """The item's active waivers, the one that lasts longest first."""
    active = [w for w in waivers if w.item == item_id and w.active(now)]
    return sorted(active, key=lambda w: w.expires, reverse=True)


_Problem = Callable[[int, str, str], None]  # entry index, field, message


def schema() -> dict[str, Any]:
    return load_schema("waivers")


def _label(data: object, index: int) -> str:
    entry = data[index] if isinstance(data, list) and index < len(data) else None
    if isinstance(entry, dict) and isinstance(entry.get("item"), str) and entry["item"].strip():
        return f"waiver for {entry['item']}"
    return f"waiver #{index + 1}"


def _message(error: ValidationError, name: str) -> str:
    if name in SIGNED_DATES and error.validator in ("type", "pattern"):
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


def _dates(entry: Mapping[str, Any], problem: _Problem, index: int) -> dict[str, date]:
    found: dict[str, date] = {}
    for name in SIGNED_DATES:
        text = entry.get(name)
        if isinstance(text, str) and DATE.fullmatch(text):
            try:
                found[name] = date.fromisoformat(text)
            except ValueError as exc:
                problem(index, name, f"not a real date ({exc})")
    if len(found) == len(SIGNED_DATES):
        days = (found["expires"] - found["granted"]).days
        if days < 0:
            problem(index, "expires", f"is before granted ({found['granted']}): never valid")
        elif days > MAX_DAYS:
            problem(
                index,
                "expires",
                f"is {days} days after granted ({found['granted']}); a waiver lasts at most "
                f"{MAX_DAYS} days, then the risk is accepted again",
            )
    return found


def _scope_problems(entry: Mapping[str, Any], problem: _Problem, index: int) -> None:
    if "tests" not in entry and "message" not in entry:
        problem(
            index,
            "tests",
            "is required (or message): a waiver names the failures it accepts, by test node id "
            "or failure message, never the whole item",
        )
    message = entry.get("message")
    if isinstance(message, str):
        try:
            re.compile(message)
        except re.error as exc:
            problem(index, "message", f"is not a regular expression ({exc})")


def _signature_problems(
    entry: Mapping[str, Any], problem: _Problem, index: int, registry: Registry
) -> None:
    # Imported here, not at the top: preflight.record, which statements use, imports this module.
    from preflight.statements import statement_problem  # noqa: PLC0415

    signature, approver = entry.get("signature"), entry.get("approver")
    if signature is None:
        problem(
            index,
            "signature",
            "is required: the approver signs the waiver with a key registered for their role "
            "(preflight waive sign)",
        )
        return
    if not isinstance(signature, Mapping) or not isinstance(approver, str):
        return  # the schema said what is wrong
    broken = statement_problem(signed_fields(entry))
    if broken:
        problem(index, "signature", f"is not valid: {broken}")
        return
    unregistered = registry.not_registered(approver, str(signature.get("public_key")))
    if unregistered:
        problem(index, "signature", f"does not count for approver {approver}: {unregistered}")


def _overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two waivers of one item may accept the same failure (patterns are compared both
    ways; a waiver without tests may accept any test)."""
    tests_a, tests_b = a.get("tests"), b.get("tests")
    if not isinstance(tests_a, list) or not isinstance(tests_b, list):
        return True
    return any(
        x == y or node_pattern(str(x)).fullmatch(str(y)) or node_pattern(str(y)).fullmatch(str(x))
        for x in tests_a
        for y in tests_b
    )


def _rule_problems(
    path: Path,
    entries: list[Any],
    lines: dict[YamlPath, int],
    checklist: Checklist,
    registry: Registry,
) -> list[tuple[int, str]]:
    """Rules the schema cannot say: a known item that is not manual, the failures it accepts,
    real dates at most a year apart, an approver who is not the owner and who signed it with a
    key registered for their role, and no second waiver for the same failures."""
    items = {item.id: item for item in checklist.items}
    problems: list[tuple[int, str]] = []

    def problem(index: int, name: str, message: str) -> None:
        line = line_of(lines, (index, name))
        problems.append((line, f"{path}:{line}: {_label(entries, index)}, field {name}: {message}"))

    seen: list[tuple[int, Mapping[str, Any]]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        item = entry.get("item")
        if isinstance(item, str) and item.strip() and item not in items:
            problem(index, "item", f"no item {item!r} in {checklist.path}")
        elif isinstance(item, str) and item in items and items[item].verify == "manual":
            problem(
                index,
                "item",
                f"{item} is verify: manual; a manual item is attested by its owner, not waived",
            )
        for other_index, other in seen:
            if other.get("item") == item and _overlap(entry, other):
                other_line = line_of(lines, (other_index,))
                problem(
                    index,
                    "item",
                    f"duplicates the waiver at line {other_line}: both accept the same failures "
                    f"of {item} (renew a waiver by replacing it)",
                )
                break
        seen.append((index, entry))
        _scope_problems(entry, problem, index)
        _dates(entry, problem, index)
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
        else:
            _signature_problems(entry, problem, index, registry)
    return problems


def parse_entry(entry: Mapping[str, Any], line: int) -> Waiver:
    """One entry that passed the schema and the rules."""
    signature = entry.get("signature")
    return Waiver(
        item=entry["item"],
        justification=entry["justification"].strip(),
        owner=entry["owner"],
        approver=entry["approver"],
        expires=date.fromisoformat(entry["expires"]),
        tests=tuple(entry.get("tests", ())),
        message=entry.get("message"),
        granted=date.fromisoformat(entry["granted"]),
        signer=str(signature["signer"]) if isinstance(signature, Mapping) else "",
        line=line,
    )


def read_waivers(
    path: Path, checklist: Checklist, registry: Registry
) -> tuple[list[Any], dict[YamlPath, int]]:
    """The file's entries and their lines, once every rule holds; WaiversInvalid lists each
    problem otherwise. A missing or empty file holds none."""
    if not path.exists():
        return [], {}
    data, lines = read_yaml(path, WaiversInvalid)
    if data is None:
        return [], lines
    found = _schema_problems(path, data, lines)
    if isinstance(data, list):
        found += _rule_problems(path, data, lines, checklist, registry)
    if found:
        raise WaiversInvalid(path, [message for _, message in sorted(set(found))])
    assert isinstance(data, list)  # the schema guarantees it
    return data, lines


def load_waivers(path: Path, checklist: Checklist, registry: Registry) -> list[Waiver]:
    """Every waiver in the file (none when it does not exist); WaiversInvalid lists each problem."""
    data, lines = read_waivers(path, checklist, registry)
    return [parse_entry(entry, line_of(lines, (index,))) for index, entry in enumerate(data)]

"""checklist.yaml: load it, validate it against its JSON Schema and rules, and name every problem.

Every problem names the item id (or its position when the id is missing), the field and the line,
so a reviewer can fix a broken checklist from the message alone.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from preflight.errors import ChecklistInvalid

DEFAULT_PATH = Path("checklist.yaml")
LOAD_FIELDS = ("metric", "comparison", "value", "scale")
# signoff: decided after the run by the owner's signature on the run record (preflight sign).
VERIFY_KINDS = ("probe", "load", "manual", "signoff")
AREAS = (
    "infrastructure",
    "security",
    "application",
    "monitoring",
    "performance",
    "backup",
    "testing",
    "deployment",
    "operations",
    "compliance",
)


@dataclass(frozen=True)
class OptionalPart:
    """A test of an item that may skip without holding the item back, for a stated capability
    of the target (its `optional` entries)."""

    test: str  # a node id or an fnmatch pattern of node ids
    when_missing: str

    def excuses(self, nodeid: str) -> bool:
        return fnmatch.fnmatchcase(nodeid, self.test)


@dataclass(frozen=True)
class Item:
    id: str
    area: str
    title: str
    severity: str
    owner: str
    verify: str
    risk: str
    remediation: str
    refs: tuple[str, ...]
    source: str
    line: int
    metric: str | None = None
    comparison: str | None = None
    value: float | None = None
    scale: dict[str, int] = field(default_factory=dict)
    optional: tuple[OptionalPart, ...] = ()
    attest: bool = False  # a probe item its owner must attest as well (decide_probe_attested)

    @property
    def attestable(self) -> bool:
        """Whether its owner's signed attestation decides it (alone, or beside its probes)."""
        return self.verify == "manual" or self.attest

    def optional_for(self, nodeid: str) -> str | None:
        """The capability whose absence may skip this test (None: the test is not optional)."""
        part = next((p for p in self.optional if p.excuses(nodeid)), None)
        return part.when_missing if part else None

    @property
    def automated(self) -> bool:
        return self.verify in ("probe", "load")

    def to_json(self) -> dict[str, Any]:
        """The item as the run record shows it (what a reviewer needs beside its outcome)."""
        return {
            "id": self.id,
            "area": self.area,
            "title": self.title,
            "severity": self.severity,
            "owner": self.owner,
            "verify": self.verify,
            **({"attest": True} if self.attest else {}),
            "source": self.source,
            "risk": self.risk,
            "remediation": self.remediation,
            "refs": list(self.refs),
        }


DEFAULT_BLOCKS = ("fail", "error")
# The order outcomes are named in a policy's description.
_NAMED = ("fail", "error", "skip", "unverified")


@dataclass(frozen=True)
class GatePolicy:
    """The checklist's `gate`: which outcomes block at any severity (`blocks`), which severities
    only warn on those (`warn_only`), and per severity which outcomes may pass (`must_be`)."""

    must_be: dict[str, tuple[str, ...]]
    blocks: tuple[str, ...] = DEFAULT_BLOCKS
    warn_only: tuple[str, ...] = ()

    def blocking(self, severity: str, outcome: str) -> bool:
        """Whether an item of `severity` that ended `outcome` blocks the release."""
        if outcome in self.blocks and severity not in self.warn_only:
            return True
        allowed = self.must_be.get(severity)
        return allowed is not None and outcome not in allowed

    def warning(self, severity: str, outcome: str) -> bool:
        """Whether it is a warning instead: a `blocks` outcome of a warn_only severity."""
        return outcome in self.blocks and not self.blocking(severity, outcome)

    def describe(self) -> str:
        """The policy in a few words, for the closing line and the record."""
        parts: list[str] = []
        if self.blocks:
            named = " or ".join(o for o in _NAMED if o in self.blocks)
            warn = f" ({', '.join(self.warn_only)}: warning)" if self.warn_only else ""
            parts.append(f"any {named} blocks{warn}")
        by_outcomes: dict[tuple[str, ...], list[str]] = {}
        for severity, allowed in self.must_be.items():
            more = tuple(o for o in _NAMED if o not in allowed and o not in self.blocks)
            if more:
                by_outcomes.setdefault(more, []).append(severity)
        for outcomes, severities in by_outcomes.items():
            verb = "blocks" if len(outcomes) == 1 else "block"
            parts.append(f"{'/'.join(outcomes)} {verb} for {', '.join(severities)}")
        return "; ".join(parts) or "nothing blocks"

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.describe(),
            "blocks": list(self.blocks),
            "warn_only": list(self.warn_only),
            "must_be": {k: list(v) for k, v in self.must_be.items()},
        }


@dataclass(frozen=True)
class Checklist:
    path: Path
    version: int
    gate: dict[str, tuple[str, ...]]  # gate.must_be (policy.must_be)
    items: tuple[Item, ...]
    policy: GatePolicy = field(default_factory=lambda: GatePolicy(must_be={}))

    def counts_by_verify(self) -> dict[str, int]:
        counts = Counter(item.verify for item in self.items)
        return {kind: counts.get(kind, 0) for kind in VERIFY_KINDS}

    @property
    def automated_share(self) -> float:
        return sum(item.automated for item in self.items) / len(self.items)

    def summary(self) -> str:
        counts = ", ".join(f"{n} {kind}" for kind, n in self.counts_by_verify().items())
        return (
            f"{self.path}: valid - {len(self.items)} items ({counts}); "
            f"{self.automated_share:.1%} automated"
        )


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One of the JSON Schemas shipped in preflight/schema/ (checklist, record, waivers)."""
    text = resources.files("preflight").joinpath(f"schema/{name}.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def schema() -> dict[str, Any]:
    return load_schema("checklist")


@dataclass
class _Lines:
    """Line numbers (1-based) from the YAML node tree: each item's start and each field's value."""

    root: dict[str, int] = field(default_factory=dict)
    item_start: list[int] = field(default_factory=list)
    item_fields: list[dict[str, int]] = field(default_factory=list)

    @classmethod
    def of(cls, node: yaml.Node | None) -> _Lines:
        lines = cls()
        if not isinstance(node, yaml.MappingNode):
            return lines
        for key, value in node.value:
            lines.root[str(key.value)] = key.start_mark.line + 1
            if key.value == "items" and isinstance(value, yaml.SequenceNode):
                for entry in value.value:
                    lines.item_start.append(entry.start_mark.line + 1)
                    fields: dict[str, int] = {}
                    if isinstance(entry, yaml.MappingNode):
                        for k, v in entry.value:
                            fields[str(k.value)] = v.start_mark.line + 1
                    lines.item_fields.append(fields)
        return lines

    def item_line(self, index: int, name: str | None = None) -> int:
        if index >= len(self.item_start):
            return 0
        if name is not None and name in self.item_fields[index]:
            return self.item_fields[index][name]
        return self.item_start[index]


def _item_label(data: object, index: int) -> str:
    items = data.get("items") if isinstance(data, dict) else None
    if isinstance(items, list) and index < len(items):
        entry = items[index]
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            return f"item {entry['id']}"
    return f"item #{index + 1} (no id)"


def describe_error(error: ValidationError) -> tuple[list[str], str]:
    """The field name(s) an error concerns, relative to its instance, and a short message."""
    wanted = error.validator_value if isinstance(error.validator_value, list) else []
    if error.validator == "required":
        present = error.instance if isinstance(error.instance, dict) else {}
        missing = [name for name in wanted if name not in present]
        return missing, "is required"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = [name for name in error.instance if name not in known]
        return extra, "is not a known field"
    if error.validator == "enum":
        allowed = ", ".join(map(str, wanted))
        return [], f"must be one of {allowed} (got {error.instance!r})"
    if error.validator == "pattern":
        return [], f"must match {error.validator_value} (got {error.instance!r})"
    return [], error.message


def _schema_problems(path: Path, data: object, lines: _Lines) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    validator = Draft202012Validator(schema())
    for error in validator.iter_errors(data):
        names, message = describe_error(error)
        where = list(error.absolute_path)
        if len(where) >= 2 and where[0] == "items" and isinstance(where[1], int):
            index, inner = where[1], [str(p) for p in where[2:]]
            label = _item_label(data, index)
            fields = [".".join([*inner, n]) for n in names] if names else [".".join(inner)]
            for name in fields:
                line = lines.item_line(index, name.split(".")[0] or None)
                shown = name or "(item)"
                problems.append((line, f"{path}:{line}: {label}, field {shown}: {message}"))
        else:
            fields = [".".join([*map(str, where), n]) for n in names] or [
                ".".join(map(str, where)) or "(top level)"
            ]
            for name in fields:
                line = lines.root.get(name.split(".")[0], 1)
                problems.append((line, f"{path}:{line}: field {name}: {message}"))
    return problems


def _rule_problems(path: Path, data: object, lines: _Lines) -> list[tuple[int, str]]:
    """Rules the schema cannot say: ids are unique; only load items carry load fields; only probe
    items carry `attest` (a manual item is attested anyway)."""
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    problems: list[tuple[int, str]] = []
    first_line: dict[str, int] = {}
    for index, entry in enumerate(items):
        if not isinstance(entry, dict):
            continue
        item_id = entry.get("id")
        if isinstance(item_id, str):
            line = lines.item_line(index, "id")
            if item_id in first_line:
                problems.append(
                    (
                        line,
                        f"{path}:{line}: item {item_id}, field id: duplicate id "
                        f"(first used on line {first_line[item_id]})",
                    )
                )
            else:
                first_line[item_id] = line
        if entry.get("verify") != "load":
            for name in LOAD_FIELDS:
                if name in entry:
                    line = lines.item_line(index, name)
                    label = _item_label(data, index)
                    problems.append(
                        (
                            line,
                            f"{path}:{line}: {label}, field {name}: only load items carry "
                            f"{name} (verify is {entry.get('verify')!r})",
                        )
                    )
        if "attest" in entry and entry.get("verify") != "probe":
            line = lines.item_line(index, "attest")
            problems.append(
                (
                    line,
                    f"{path}:{line}: {_item_label(data, index)}, field attest: only probe items "
                    f"carry attest (verify is {entry.get('verify')!r})",
                )
            )
    return problems


def _item(entry: dict[str, Any], line: int) -> Item:
    value = entry.get("value")
    return Item(
        id=entry["id"],
        area=entry["area"],
        title=entry["title"],
        severity=entry["severity"],
        owner=entry["owner"],
        verify=entry["verify"],
        risk=entry["risk"],
        remediation=entry["remediation"],
        refs=tuple(entry["refs"]),
        source=entry["source"],
        line=line,
        metric=entry.get("metric"),
        comparison=entry.get("comparison"),
        value=float(value) if value is not None else None,
        scale=dict(entry.get("scale", {})),
        optional=tuple(
            OptionalPart(str(p["test"]), str(p["when_missing"])) for p in entry.get("optional", ())
        ),
        attest=bool(entry.get("attest", False)),
    )


def load_checklist(path: Path = DEFAULT_PATH) -> Checklist:
    """Read and validate a checklist; raise ChecklistInvalid listing every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ChecklistInvalid(str(path), [f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: object = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ChecklistInvalid(
            str(path), [f"{path}:{line}: not valid YAML: {exc.problem}"]
        ) from exc
    lines = _Lines.of(node)
    found = _schema_problems(path, data, lines) + _rule_problems(path, data, lines)
    if found:
        raise ChecklistInvalid(str(path), [message for _, message in sorted(found)])
    assert isinstance(data, dict)  # the schema guarantees it
    raw_gate = data["gate"]
    gate = {severity: tuple(outcomes) for severity, outcomes in raw_gate["must_be"].items()}
    policy = GatePolicy(
        must_be=gate,
        blocks=tuple(raw_gate.get("blocks", DEFAULT_BLOCKS)),
        warn_only=tuple(raw_gate.get("warn_only", ())),
    )
    items = tuple(_item(entry, lines.item_line(index)) for index, entry in enumerate(data["items"]))
    return Checklist(path=path, version=data["version"], gate=gate, items=items, policy=policy)

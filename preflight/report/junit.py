"""JUnit XML from a run record: one testsuite per area, one testcase per checklist item.

CI systems read it, so it says what the gate says: every item that blocks the release is a
`<failure>` whose type names its outcome (fail, error, unverified, skip), whatever that outcome
is; an item that does not block is a `<failure>` when it failed, an `<error>` when its probe
erred, `<skipped>` when nothing decided it (a sign-off item until its role signs the record, an
item the run did not select), and passes otherwise (waived and attested items with a note in
system-out saying why). Properties sit at testsuite level, where the Jenkins/Ant JUnit schema
(tests/schemas/junit-10.xsd) allows them: the run's verdict with its scope, then each item's
severity, owner, verify kind, outcome and blocking as `ITEM-ID.name`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping
from typing import Any

from preflight.checklist import AREAS
from preflight.outcomes import Outcome
from preflight.scope import coverage, scope, verdict_label

# Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
ITEM_PROPERTIES = ("severity", "owner", "verify", "outcome", "blocking")


def _clean(text: object) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def _seconds(item: Mapping[str, Any]) -> float:
    return round(sum(float(t["duration_s"]) for t in item["tests"]), 3)


def _details(item: Mapping[str, Any]) -> str:
    lines = [str(item["reason"]), f"risk: {item['risk']}", f"remediation: {item['remediation']}"]
    lines += [f"{t['outcome']}: {t['nodeid']} {t['message']}".rstrip() for t in item["tests"]]
    return _clean("\n".join(lines))


def _note(item: Mapping[str, Any]) -> str | None:
    waiver, attestation = item.get("waiver"), item.get("attestation")
    if item["outcome"] == Outcome.WAIVED and waiver:
        return (
            f"waived until {waiver['expires']} by {waiver['owner']} (approved by "
            f"{waiver['approver']}): {waiver['justification']}"
        )
    if item["outcome"] == Outcome.ATTESTED and attestation:
        return (
            f"attested by {attestation['signer']} as {attestation['role']} "
            f"(key {attestation['key_id']}) until {attestation['expires']}: {attestation['note']}"
        )
    return None


def result_element(item: Mapping[str, Any]) -> str | None:
    """The JUnit element an item's testcase carries: failure, error, skipped or None (passed)."""
    outcome = item["outcome"]
    if item["blocking"] or outcome == Outcome.FAIL:
        return "failure"
    if outcome == Outcome.ERROR:
        return "error"
    if outcome in (Outcome.SKIP, Outcome.UNVERIFIED):
        return "skipped"
    return None


def _testcase(suite: ET.Element, item: Mapping[str, Any]) -> str | None:
    case = ET.SubElement(
        suite,
        "testcase",
        classname=_clean(item["area"]),
        name=_clean(f"{item['id']} {item['title']}"),
        time=f"{_seconds(item):.3f}",
    )
    outcome, element = str(item["outcome"]), result_element(item)
    blocks = " (blocks the release)" if item["blocking"] else ""
    if element in ("failure", "error"):
        result = ET.SubElement(
            case, element, message=_clean(f"{item['reason']}{blocks}"), type=outcome
        )
        result.text = _details(item)
    elif element == "skipped":
        ET.SubElement(case, "skipped", message=_clean(f"{outcome}: {item['reason']}"))
    note = _note(item)
    if note is not None:
        ET.SubElement(case, "system-out").text = _clean(note)
    return element


def _properties(suite: ET.Element, record: Mapping[str, Any], items: list[Any]) -> None:
    properties = ET.SubElement(suite, "properties")

    def add(name: str, value: object) -> None:
        ET.SubElement(properties, "property", name=name, value=_clean(value))

    selected, total = coverage(record)
    add("run_id", record["run_id"])
    add("verdict", verdict_label(record))
    add("scope", scope(record) or f"every item, {selected} of {total}")
    for item in items:
        for name in ITEM_PROPERTIES:
            value = item[name]
            add(
                f"{item['id']}.{name}",
                ("true" if value else "false") if name == "blocking" else value,
            )
        note = _note(item)
        if note is not None:
            add(
                f"{item['id']}.{'waiver' if item['outcome'] == Outcome.WAIVED else 'attestation'}",
                note,
            )


def _counts(elements: Counter[str | None], tests: int) -> dict[str, str]:
    return {
        "tests": str(tests),
        "failures": str(elements["failure"]),
        "errors": str(elements["error"]),
    }


def render_junit(record: Mapping[str, Any]) -> bytes:
    root = ET.Element(
        "testsuites", name=_clean(f"preflight {record['run_id']}: {verdict_label(record)}")
    )
    areas = sorted(
        {str(i["area"]) for i in record["items"]},
        key=lambda a: AREAS.index(a) if a in AREAS else len(AREAS),
    )
    every: Counter[str | None] = Counter()
    total_time = 0.0
    for area in areas:
        items = [i for i in record["items"] if i["area"] == area]
        suite = ET.SubElement(
            root, "testsuite", name=_clean(area), timestamp=_clean(record["started_at"])
        )
        _properties(suite, record, items)
        elements = Counter(_testcase(suite, item) for item in items)
        seconds = sum(_seconds(i) for i in items)
        suite.attrib.update(
            _counts(elements, len(items)), skipped=str(elements["skipped"]), time=f"{seconds:.3f}"
        )
        every += elements
        total_time += seconds
    root.attrib.update(_counts(every, len(record["items"])), time=f"{total_time:.3f}")
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"

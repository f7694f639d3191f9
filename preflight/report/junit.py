"""JUnit XML from a run record: one testsuite per area, one testcase per checklist item.

CI systems read it: fail -> <failure>, error -> <error>, skip and unverified -> <skipped> (never
a plain pass); waived and attested items pass with a property and a note saying why.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from preflight.checklist import AREAS
from preflight.outcomes import Outcome

# Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


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


def _testcase(suite: ET.Element, item: Mapping[str, Any]) -> str:
    case = ET.SubElement(
        suite,
        "testcase",
        classname=_clean(item["area"]),
        name=_clean(f"{item['id']} {item['title']}"),
        time=f"{_seconds(item):.3f}",
    )
    properties = ET.SubElement(case, "properties")
    names = ("id", "severity", "owner", "verify", "outcome", "blocking")
    values = [*(item[n] for n in names[:-1]), "true" if item["blocking"] else "false"]
    for name, value in zip(names, values, strict=True):
        ET.SubElement(properties, "property", name=name, value=_clean(value))
    outcome = item["outcome"]
    blocks = " (blocks the release)" if item["blocking"] else ""
    if outcome == Outcome.FAIL:
        failure = ET.SubElement(
            case, "failure", message=_clean(f"{item['reason']}{blocks}"), type="fail"
        )
        failure.text = _details(item)
    elif outcome == Outcome.ERROR:
        error = ET.SubElement(
            case, "error", message=_clean(f"{item['reason']}{blocks}"), type="error"
        )
        error.text = _details(item)
    elif outcome in (Outcome.SKIP, Outcome.UNVERIFIED):
        ET.SubElement(case, "skipped", message=_clean(f"{outcome}{blocks}: {item['reason']}"))
    note = _note(item)
    if note is not None:
        kind = "waiver" if outcome == Outcome.WAIVED else "attestation"
        ET.SubElement(properties, "property", name=kind, value=_clean(note))
        ET.SubElement(case, "system-out").text = _clean(note)
    return str(outcome)


def _counts(outcomes: Sequence[str]) -> dict[str, str]:
    return {
        "tests": str(len(outcomes)),
        "failures": str(sum(o == Outcome.FAIL for o in outcomes)),
        "errors": str(sum(o == Outcome.ERROR for o in outcomes)),
        "skipped": str(sum(o in (Outcome.SKIP, Outcome.UNVERIFIED) for o in outcomes)),
    }


def render_junit(record: Mapping[str, Any]) -> bytes:
    root = ET.Element("testsuites", name=_clean(f"preflight {record['run_id']}"))
    areas = sorted(
        {str(i["area"]) for i in record["items"]},
        key=lambda a: AREAS.index(a) if a in AREAS else len(AREAS),
    )
    every: list[str] = []
    total_time = 0.0
    for area in areas:
        items = [i for i in record["items"] if i["area"] == area]
        suite = ET.SubElement(
            root, "testsuite", name=_clean(area), timestamp=_clean(record["started_at"])
        )
        outcomes = [_testcase(suite, item) for item in items]
        seconds = sum(_seconds(i) for i in items)
        suite.attrib.update(_counts(outcomes), time=f"{seconds:.3f}")
        every += outcomes
        total_time += seconds
    root.attrib.update(_counts(every), time=f"{total_time:.3f}")
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"

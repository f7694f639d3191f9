"""report.html and junit.xml rendered from a run record, and `preflight report`."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import struct
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from preflight.checklist import load_checklist
from preflight.cli import main
from preflight.outcomes import OUTCOMES
from preflight.record import RecordInvalid, load_record, validate_record, write_record
from preflight.report import write_reports
from preflight.report.html import format_value, image_size, render_html
from preflight.report.junit import render_junit
from preflight.signing import HARNESS, PANEL_ROLES
from tests.records import (
    ATTESTED_ID,
    BLOCKING_FAIL_ID,
    ERROR_ID,
    OPEN_FAIL_ID,
    PASS_ID,
    REDIS_DRILL,
    REPO,
    SIGNOFF_ID,
    SKIP_ID,
    WAIVED_ID,
    make_ready_record,
    make_record,
    png,
)

XSS = "<script>alert(1)</script>"


class _Page(HTMLParser):
    """The tags of a page, with their attributes, and the text of its <style> and <script>."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.inline: dict[str, list[str]] = {"style": [], "script": []}
        self._open: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._open = tag if tag in self.inline else None

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.inline[self._open].append(data)


def external_references(html: str) -> list[str]:
    """Everything in a page that would make a browser fetch something that is not in the page."""
    page = _Page(html)
    found = []
    for tag, attrs in page.tags:
        if tag == "link":
            found.append(f"<link {attrs}>")
            continue
        for name in ("src", "href", "srcset", "poster", "data", "action"):
            value = attrs.get(name)
            if value is not None and not value.startswith(("#", "data:")):
                found.append(f"<{tag} {name}={value}>")
    for css in page.inline["style"]:
        found += [f"css {m}" for m in re.findall(r"@import[^;]*|url\([^)]*\)", css)]
    return found


def _part(html: str, start: str, end: str) -> str:
    """The text after the first `start` up to the next `end`."""
    _, found, after = html.partition(start)
    assert found, f"{start!r} is not in the page"
    return after.partition(end)[0]


def content_security_policy(html: str) -> str:
    for tag, attrs in _Page(html).tags:
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy":
            return attrs["content"]
    raise AssertionError("the page sets no Content-Security-Policy")


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    return make_record()


@pytest.fixture(scope="module")
def html(record: dict[str, Any]) -> str:
    return render_html(record)


def test_write_reports_writes_both_files(record: dict[str, Any], tmp_path: Path) -> None:
    paths = write_reports(record, tmp_path)
    assert [p.name for p in paths] == ["report.html", "junit.xml"]
    assert paths[0].read_text() == render_html(record)
    assert paths[1].read_bytes() == render_junit(record)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml", "report.html"]


def test_the_html_is_self_contained(html: str) -> None:
    assert external_references(html) == []
    assert html.count("<script") == 1, "one inline script: it opens linked evidence"
    assert content_security_policy(html).startswith("default-src 'none'; ")


def test_the_self_contained_check_can_fail() -> None:
    page = (
        '<link rel="stylesheet" href="report.css"><script src="https://cdn.example/x.js">'
        '</script><img src="//cdn.example/a.png"><style>@import "x.css"; '
        "b{background:url(https://x/y.png)}</style>"
    )
    assert external_references(page) == [
        "<link {'rel': 'stylesheet', 'href': 'report.css'}>",
        "<script src=https://cdn.example/x.js>",
        "<img src=//cdn.example/a.png>",
        'css @import "x.css"',
        "css url(https://x/y.png)",
    ]


def test_the_csp_pins_exactly_the_inline_style_and_script(html: str) -> None:
    page, policy = _Page(html), content_security_policy(html)
    for kind in ("style", "script"):
        (text,) = page.inline[kind]
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}';" in policy


def test_record_text_is_escaped(tmp_path: Path) -> None:
    sample = make_record()
    item = sample["items"][0]
    item["title"] = f"Title with {XSS}"
    item["tests"][0]["evidence"] += [
        {"kind": "note", "text": XSS},
        {"kind": "attachment", "name": "x.html", "media_type": "text/html", "content": XSS},
        {"kind": "request", "method": "GET", "url": "https://e/", "status": 200, "body": XSS},
        {"kind": "figure", "name": XSS, "value": XSS},
    ]
    html = render_html(make_record(items=sample["items"]))
    assert XSS not in html
    assert "alert(1)</script>" not in html
    # title, note, attachment, response body, and the figure's name and value
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 6
    assert html.count("<script") == 1


def test_an_item_card_lists_the_broken_systems_shown_to_turn_it_red() -> None:
    sample = make_record()
    shown = {
        "defect": f"An edge without HSTS {XSS}.",
        "test": "tests/checks/test_edge_variants.py::test_an_edge_without_hsts_fails",
    }
    for item in sample["items"]:
        if item["id"] == PASS_ID:
            item["red_variants"] = [shown]
    record = make_record(items=sample["items"])
    validate_record(record)
    html = render_html(record)
    card = _part(html, f'id="item-{PASS_ID}"', "</article>")
    assert "Shown able to fail by:" in card
    assert "An edge without HSTS &lt;script&gt;alert(1)&lt;/script&gt;." in card
    assert f"<code>{shown['test']}</code>" in card
    other = _part(html, f'id="item-{BLOCKING_FAIL_ID}"', "</article>")
    assert "Shown able to fail by" not in other


def test_every_item_appears_once_with_its_anchor() -> None:
    record = make_record(every_item=True)
    html = render_html(record)
    assert len(record["items"]) == len(load_checklist(REPO / "checklist.yaml").items)
    anchors = re.findall(r'<article class="[^"]*" id="item-([A-Z0-9-]+)"', html)
    assert sorted(anchors) == sorted(i["id"] for i in record["items"])


def test_blocking_items_come_first(record: dict[str, Any], html: str) -> None:
    anchors = re.findall(r'<article class="[^"]*" id="item-([A-Z0-9-]+)"', html)
    blocking = set(record["verdict"]["blocking"])
    assert len(blocking) == 4
    assert set(anchors[: len(blocking)]) == blocking
    assert not blocking & set(anchors[len(blocking) :])
    # blocking evidence is open from the start; the rest opens on demand
    block = _part(html, f'id="item-{BLOCKING_FAIL_ID}"', "</article>")
    other = _part(html, f'id="item-{OPEN_FAIL_ID}"', "</article>")
    assert '<details class="evidence" open>' in block
    assert '<details class="evidence">' in other


def test_items_a_run_did_not_select_are_folded_away() -> None:
    items = make_record()["items"]
    for item in items:
        if item["area"] != "security":
            item.update(selected=False, outcome="skip", reason="not selected (--area security)")
    html = render_html(make_record(items=items))
    folded = _part(html, '<details class="group-details">', '<section id="waivers">')
    anchors = re.findall(r'<article class="[^"]*" id="item-([A-Z0-9-]+)"', html)
    inside = re.findall(r'<article class="[^"]*" id="item-([A-Z0-9-]+)"', folded)
    assert len(anchors) == len(items)
    assert sorted(inside) == sorted(i["id"] for i in items if i["area"] != "security")
    assert "Show the 10 items this run did not select" in html
    assert '<a href="#group-security">security</a>' in html
    assert '<th scope="row">backup</th>' in html, "no link to a group that does not exist"


def test_verdict_and_counts(record: dict[str, Any], html: str) -> None:
    assert '<section id="verdict" class="verdict not-ready">' in html
    assert '<p class="verdict-label">NOT READY</p>' in html
    assert record["verdict"]["summary"] in html
    counts = record["verdict"]["counts"]
    assert counts == {
        "pass": 3,
        "fail": 3,
        "error": 1,
        "skip": 1,
        "waived": 1,
        "attested": 1,
        "unverified": 3,
    }
    for outcome in OUTCOMES:
        tally = f'<li class="o-{outcome}"><span class="n">{counts[outcome]}</span>'
        assert tally in html
    security = re.search(r'<a href="#group-security">security</a></th>(.*?)</tr>', html, re.S)
    assert security is not None
    cells = re.findall(r"<td[^>]*>(\d*)</td>", security.group(1))
    assert cells == ["1", "2", "", "", "", "", "", "3"]  # pass, fail, ..., total


def test_ready_verdict() -> None:
    sample = make_record()
    ready = make_record(items=[i for i in sample["items"] if not i["blocking"]])
    html = render_html(ready)
    assert '<section id="verdict" class="verdict ready">' in html
    assert '<p class="verdict-label">READY</p>' in html
    assert "block the release" not in html


def test_item_details(html: str) -> None:
    item = _part(html, f'id="item-{OPEN_FAIL_ID}"', "</article>")
    assert "GET https://127.0.0.1:8443/v1/files \u2192 200" in item
    assert "# &lt;missing&gt; add_header X-Content-Type-Options nosniff always;" in item
    assert '<img src="data:image/png;base64,iVBORw0KGgo' in item
    assert "owner <strong>Security lead</strong>" in item
    assert "verified by <strong>probe</strong>" in item
    assert '<span class="sev sev-medium">medium</span>' in item
    waived = _part(html, f'id="item-{WAIVED_ID}"', "</article>")
    assert "Waiver, active" in waived
    assert "approved by cto" in waived
    attested = _part(html, f'id="item-{ATTESTED_ID}"', "</article>")
    assert "Attestation, valid" in attested
    assert "signed by Sam Ops as Ops lead" in attested
    error = _part(html, f'id="item-{ERROR_ID}"', "</article>")
    assert "redis.log (text/plain)" in error
    assert "Load figures" in html
    assert "scale reached" in html


def test_attachments_that_are_not_what_they_claim() -> None:
    sample = make_record()
    evidence = sample["items"][0]["tests"][0]["evidence"]
    evidence += [
        {"kind": "attachment", "name": "a.png", "media_type": "image/png", "content": "%%%"},
        {
            "kind": "attachment",
            "name": "b.png",
            "media_type": "image/png",
            "content": base64.b64encode(b"<svg onload=alert(1)>").decode(),
        },
        {
            "kind": "attachment",
            "name": "c.bin",
            "media_type": "application/x-tar",
            "content": base64.b64encode(b"\x00\x01binary").decode(),
        },
    ]
    html = render_html(make_record(items=sample["items"]))
    assert "content is not valid base64" in html
    assert "content is not a image/png image" in html
    assert "data:image/png;base64,PHN2Zy" not in html
    assert '<a download href="data:application/octet-stream;base64,AAFiaW5hcnk=">' in html


def test_waivers_changes_and_target(record: dict[str, Any], html: str) -> None:
    waivers = _part(html, '<section id="waivers">', "</section>")
    assert waivers.count("<tr>") == 3  # header and two waivers
    assert "expired" in waivers
    assert "active" in waivers
    changes = _part(html, '<section id="changes">', "</section>")
    kinds = re.findall(r'<span class="pill kind-([a-z-]+)">', changes)
    assert kinds == ["new-failure", "regression", "improvement", "added"]
    assert record["previous"]["run_id"] in changes
    target = _part(html, '<section id="target">', "</section>")
    for name, version in record["target"]["versions"].items():
        assert f'<th scope="row">{name}</th><td>{version}</td>' in target
    for digest in record["target"]["config_digests"].values():
        assert digest in target
    assert record["checklist"]["sha256"] in target


def test_signoff_panel(record: dict[str, Any], html: str) -> None:
    panel = _part(html, '<section id="signoff" class="signoff">', "</section>")
    roles = re.findall(r'<div class="role (signed|awaiting)" id="role-([a-z-]+)">', panel)
    assert roles == [
        ("signed", "dev-lead"),
        ("awaiting", "ops-lead"),
        ("signed", "security-lead"),
        ("awaiting", "product-manager"),
        ("awaiting", "cto"),
    ]
    assert panel.count("awaiting signature") == 3
    signature = next(s for s in record["signatures"] if s["role"] == "dev-lead")
    assert signature["key_id"] in panel
    assert signature["signed_at"] in panel
    assert "Harness:</strong>" in panel
    assert "preflight run on host ci-7" in panel
    assert panel.count("signature matches this record") == 3
    assert "awaiting Ops lead, Product manager, CTO." in html


def test_signoff_panel_after_the_record_was_edited() -> None:
    edited = make_record()
    edited["items"][0]["outcome"] = "fail"  # after signing, without re-signing
    forged = make_record()
    signature = forged["signatures"][1]
    signature["signature"] = base64.b64encode(b"\x00" * 64).decode()
    stale_html, forged_html = render_html(edited), render_html(forged)
    assert stale_html.count("signed a different version of this record") == 3
    assert "signature matches this record" not in stale_html
    assert '<div class="role signed"' not in stale_html
    assert forged_html.count("signature does not match its public key") == 1


def _top(html: str) -> str:
    """The page before its outcomes table: what a reader sees first."""
    return _part(html, "<body>", '<section id="outcomes">')


def test_the_banner_of_a_ready_record_every_role_signed_says_signed() -> None:
    html = render_html(make_ready_record(signed_by=(HARNESS, *PANEL_ROLES)))
    top = _top(html)
    assert '<section id="verdict" class="verdict ready">' in top
    assert '<p class="verdict-label">READY</p>' in top
    assert "SIGNED - READY, intact, signed by all 5 roles" in top
    assert "<title>SIGNED - READY - preflight run" in html
    item = _part(html, f'id="item-{SIGNOFF_ID}"', "</article>")
    assert "Signed: CTO signed this record" in item


def test_the_banner_says_who_has_still_to_sign_and_that_a_not_ready_run_cannot_be_signed_off(
    html: str,
) -> None:
    ready = _top(render_html(make_ready_record(signed_by=(HARNESS, "cto"))))
    assert "AWAITING SIGN-OFF - READY; 1 of 5 required roles signed (cto); missing dev-lead," in (
        ready
    )
    assert "NOT READY - the run&#39;s verdict is NOT READY; 2 of 5 required roles" in _top(html)
    item = _part(html, f'id="item-{SIGNOFF_ID}"', "</article>")
    assert "Awaiting signature: run `preflight sign --role cto RECORD`" in item


def test_a_record_edited_after_signing_says_edited_at_the_very_top() -> None:
    """The edit used to show only in the sign-off panel at the bottom of the page."""
    edited = make_ready_record(signed_by=(HARNESS, *PANEL_ROLES))
    reason = edited["items"][0]["reason"]
    edited["items"][0]["reason"] = ("X" if reason[0] != "X" else "Y") + reason[1:]
    html = render_html(edited)
    body = html.split("<body>", 1)[1].lstrip()
    assert body.startswith('<div id="edited" class="edited-banner" role="alert">')
    assert '<p class="edited-label">EDITED</p>' in body[:200]
    assert "the record was edited after it was signed by harness" in _top(html)
    assert '<section id="verdict" class="verdict edited">' in html
    assert "<title>EDITED - READY - preflight run" in html
    assert 'id="edited"' not in render_html(make_ready_record(signed_by=(HARNESS, *PANEL_ROLES)))


JUNIT_XSD = Path(__file__).parent / "schemas" / "junit-10.xsd"


def _partial(area: str = "security") -> dict[str, Any]:
    """The sample record of a run limited to one area."""
    items = make_record()["items"]
    for item in items:
        if item["area"] != area:
            item.update(selected=False, outcome="skip", reason=f"not selected (--area {area})")
    selection = {**make_record()["selection"], "areas": [area]}
    return make_record(items=items, selection=selection)


def test_junit(record: dict[str, Any]) -> None:
    root = ET.fromstring(render_junit(record))  # noqa: S314 - our own output
    assert root.tag == "testsuites"
    assert root.attrib["name"] == f"preflight {record['run_id']}: NOT READY"
    cases = root.findall("testsuite/testcase")
    assert len(cases) == len(record["items"])
    for suite in [*root.findall("testsuite"), root]:
        members = suite.findall(".//testcase")
        assert int(suite.attrib["tests"]) == len(members)
        for tag, attr in (("failure", "failures"), ("error", "errors")):
            assert int(suite.attrib[attr]) == sum(c.find(tag) is not None for c in members)
    for suite in root.findall("testsuite"):
        members = suite.findall("testcase")
        assert int(suite.attrib["skipped"]) == sum(c.find("skipped") is not None for c in members)
    assert {s.attrib["name"] for s in root.findall("testsuite")} == {
        i["area"] for i in record["items"]
    }
    assert root.findall(".//testcase/properties") == [], "the JUnit schemas reject them there"
    by_id = {c.attrib["name"].split(" ", 1)[0]: c for c in cases}
    props = {
        p.attrib["name"]: p.attrib["value"] for p in root.findall("testsuite/properties/property")
    }
    for item in record["items"]:
        case = by_id[item["id"]]
        assert case.attrib["classname"] == item["area"]
        assert case.attrib["name"] == f"{item['id']} {item['title']}"
        for name in ("severity", "owner", "verify", "outcome"):
            assert props[f"{item['id']}.{name}"] == item[name]
        assert props[f"{item['id']}.blocking"] == ("true" if item["blocking"] else "false")
        children = {child.tag for child in case} - {"system-out"}
        expected = {
            "fail": {"failure"},
            "error": {"error"},
            "skip": {"skipped"},
            "unverified": {"skipped"},
        }.get(item["outcome"], set())
        if item["blocking"]:
            expected = {"failure"}
        assert children == expected, (item["id"], item["outcome"], children)
    failure = by_id[BLOCKING_FAIL_ID].find("failure")
    assert failure is not None
    assert failure.attrib["message"].startswith("Content-Security-Policy")
    assert "(blocks the release)" in failure.attrib["message"]
    skipped = by_id[SIGNOFF_ID].find("skipped")
    assert skipped is not None
    assert skipped.attrib["message"].startswith("unverified: decided by cto's signature")
    assert by_id[SKIP_ID].find("skipped") is not None
    waived_out = by_id[WAIVED_ID].findtext("system-out") or ""
    assert waived_out.startswith("waived until 2027-01-31 by ops-lead (approved by cto)")
    attested_out = by_id[ATTESTED_ID].findtext("system-out") or ""
    assert attested_out.startswith("attested by Sam Ops as ops-lead")
    assert by_id[PASS_ID].find("system-out") is None


def test_junit_fails_every_item_that_blocks_the_release() -> None:
    """A NOT READY run once read failures="0" errors="1" skipped="51" in CI: its blocking
    unverified items were <skipped>, so merge-request widgets looked green."""
    record = make_record(every_item=True)
    blocking = record["verdict"]["blocking"]
    assert len(blocking) > 20
    root = ET.fromstring(render_junit(record))  # noqa: S314 - our own output
    failed = int(root.attrib["failures"]) + int(root.attrib["errors"])
    assert failed >= len(blocking)
    for case in root.iter("testcase"):
        item_id = case.attrib["name"].split(" ", 1)[0]
        if item_id in blocking:
            (result,) = list(case.iterfind("failure"))
            item = next(i for i in record["items"] if i["id"] == item_id)
            assert result.attrib["type"] == item["outcome"]
            assert result.attrib["message"].endswith("(blocks the release)")


@pytest.mark.parametrize(
    "sample",
    [make_record, lambda: make_record(every_item=True), _partial],
    ids=["sample", "every-item", "partial"],
)
def test_junit_is_valid_against_the_jenkins_junit_schema(sample: Any) -> None:
    xmlschema = pytest.importorskip("xmlschema")
    schema = xmlschema.XMLSchema(str(JUNIT_XSD))
    schema.validate(render_junit(sample()).decode())


def test_the_jenkins_junit_schema_rejects_what_junit_xml_used_to_carry() -> None:
    """Properties inside a testcase and `skipped` on testsuites: what the old junit.xml had."""
    xmlschema = pytest.importorskip("xmlschema")
    schema = xmlschema.XMLSchema(str(JUNIT_XSD))
    old = (
        '<testsuites skipped="1"><testsuite name="a" tests="1" failures="0" errors="0">'
        '<testcase name="x"><properties><property name="id" value="x"/></properties>'
        "</testcase></testsuite></testsuites>"
    )
    assert not schema.is_valid(old)


def test_a_partial_runs_verdict_says_what_it_covered() -> None:
    record = _partial()
    selected = sum(1 for i in record["items"] if i["selected"])
    label = f"NOT READY (security only, {selected} of {len(record['items'])} items)"
    root = ET.fromstring(render_junit(record))  # noqa: S314 - our own output
    assert root.attrib["name"] == f"preflight {record['run_id']}: {label}"
    for suite in root.iter("testsuite"):
        props = {p.attrib["name"]: p.attrib["value"] for p in suite.iter("property")}
        assert props["verdict"] == label
    html = render_html(record)
    assert f'<p class="verdict-label">{label}</p>' in html
    assert f"<title>{label} - preflight run" in html
    assert f"{label} - " in _part(html, '<p class="verdict-summary">', "</p>")


def test_junit_carries_text_xml_cannot() -> None:
    sample = make_record()
    sample["items"][1]["reason"] = "bell \x07 and escape \x1b in a probe message <&>"
    root = ET.fromstring(render_junit(make_record(items=sample["items"])))  # noqa: S314
    failure = root.find(f".//testcase[@name='{BLOCKING_FAIL_ID} {sample['items'][1]['title']}']")
    assert failure is not None
    message = failure.find("failure").attrib["message"]  # type: ignore[union-attr]
    assert message.startswith("bell \ufffd and escape \ufffd in a probe message <&>")


def test_the_sample_record_is_valid_and_a_broken_one_is_named(tmp_path: Path) -> None:
    validate_record(make_record(every_item=True))
    broken = make_record()
    broken["items"][2]["outcome"] = "passed"
    del broken["verdict"]["label"]
    file = tmp_path / "record.json"
    write_record(broken, file)
    with pytest.raises(RecordInvalid) as caught:
        load_record(tmp_path)
    message = str(caught.value)
    assert str(file) in message
    assert "$.items[2].outcome: 'passed' is not one of" in message
    assert "$.verdict: 'label' is a required property" in message
    with pytest.raises(RecordInvalid, match=r"\$\.items\[2\]\.outcome"):
        write_reports(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_many_problems_are_cut_short() -> None:
    broken = make_record()
    for item in broken["items"]:
        item["severity"] = "urgent"
    with pytest.raises(RecordInvalid) as caught:
        validate_record(broken, "r.json")
    message = str(caught.value)
    assert message.count("'urgent' is not one of") == 3
    assert "(and 10 more)" in message


def test_cli_report_renders_next_to_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = make_record()
    write_record(record, tmp_path / "record.json")
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'report.html'}" in out
    assert record["verdict"]["summary"] in out
    assert (tmp_path / "report.html").read_text() == render_html(record)
    assert (tmp_path / "junit.xml").read_bytes() == render_junit(record)

    elsewhere = tmp_path / "elsewhere"
    assert main(["report", str(tmp_path / "record.json"), "--out", str(elsewhere)]) == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == ["junit.xml", "report.html"]


def test_cli_report_refuses_a_broken_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = copy.deepcopy(make_record())
    record["items"][0]["waiver"] = {"justification": "x"}
    (tmp_path / "record.json").write_text(json.dumps(record))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("preflight: error: ")
    assert "$.items[0].waiver: 'owner' is a required property" in err
    assert not (tmp_path / "report.html").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run record" in capsys.readouterr().err


def _jpeg_header(width: int, height: int) -> bytes:
    """The start of a baseline JPEG: SOI, a JFIF APP0 segment and the SOF0 frame header."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + bytes(9)
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9)
    return b"\xff\xd8" + app0 + sof0


def test_screenshots_show_inline_at_their_size() -> None:
    """Screenshots of the browser journeys are laid out at their size and scale smoothly; small
    images keep their pixels."""
    sample = make_record()
    shot, phone = png(400, 300, (9, 105, 218)), _jpeg_header(360, 740)
    sample["items"][0]["tests"][0]["evidence"] += [
        {
            "kind": "attachment",
            "name": "screenshot: desktop",
            "media_type": "image/png",
            "encoding": "base64",
            "content": base64.b64encode(shot).decode(),
        },
        {
            "kind": "attachment",
            "name": "screenshot: phone",
            "media_type": "image/jpeg",
            "encoding": "base64",
            "content": base64.b64encode(phone).decode(),
        },
    ]
    html = render_html(make_record(items=sample["items"]))
    assert (
        f'<img src="data:image/png;base64,{base64.b64encode(shot).decode()}" '
        'alt="screenshot: desktop (image/png)" width="400" height="300" class="shot">'
    ) in html
    assert 'alt="screenshot: phone (image/jpeg)" width="360" height="740" class="shot">' in html
    assert re.search(
        r'<img src="data:image/png;base64,[^"]+" alt="[^"]+" width="24" height="12">', html
    )
    assert image_size(b"\xff\xd8\xff\xe0", "image/jpeg") == (0, 0)


def test_the_load_run_is_charted_inline_and_the_drills_are_listed(html: str) -> None:
    load = html[html.index('<section id="load">') : html.index('<section id="drills">')]
    assert load.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 2, (
        "latency and throughput charts, drawn inline"
    )
    assert "Latency over time" in load
    assert "<polyline" in load
    assert "<code>GET /v1/channels</code>" in load
    drills = html[html.index('<section id="drills">') : html.index('<section id="target">')]
    assert REDIS_DRILL in drills
    assert '<th scope="row">writes failed</th><td class="num">0</td>' in drills
    assert "31.2 s" in drills


def test_the_blockers_are_grouped_by_what_they_take_failures_first(
    record: dict[str, Any], html: str
) -> None:
    top = html[html.index('<section id="blockers"') : html.index('<section id="outcomes">')]
    headings = re.findall(r"<h3>([^<]+) <span", top)
    assert headings[0] == "Failed or could not be decided: fix first"
    assert "Needs the release load profile" in headings
    assert "Needs a signature" in headings
    assert any(h.startswith("Needs an attestation from") for h in headings) or (
        not any(i["verify"] == "manual" and i["blocking"] for i in record["items"])
    )
    fix = top[: top.index("Needs ")]
    for item_id in record["verdict"]["blocking"]:
        outcome = next(i["outcome"] for i in record["items"] if i["id"] == item_id)
        assert (f'href="#item-{item_id}"' in fix) == (outcome in ("fail", "error"))


def test_figures_are_formatted_with_units() -> None:
    assert format_value(84.0, "ms") == "84 ms"
    assert format_value(0.1234, "%") == "0.123 %"
    assert format_value(12345.6, "/s") == "12,346 /s"
    assert format_value({"api_p95_ms": 12.0, "ok": True}) == "api_p95_ms 12 ms; ok yes"
    assert format_value(None) == "not measured"


def test_the_system_at_full_scale_and_the_scaling_step_are_tabled(html: str) -> None:
    load = html[html.index('<section id="load">') : html.index('<section id="target">')]
    rows = [
        re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>.*?</tr>", load)
    ]
    assert ["api-0", "24.4 %", "0.489", "2.0", "4.3 %", "88", ""] in rows
    assert ["redis", "", "", "", "", "", "its process could not be read &lt;here&gt;"] in rows
    assert ["all of them (the host&#39;s cores)", "72.1 %", "", "", "", "", ""] in rows
    assert "Scaling step (closed loop, no think time): 1.02x" in load
    # The generator beside the system it measured.
    assert (
        "The load generator beside it, on 2 cores: one HTTP request cost the generator 25 ms "
        "of CPU and the target 15 ms"
    ) in load
    assert ["locust-worker-1", "41.5 %", "58.2 %"] in rows
    steps = [r for r in rows if r and r[0] in ("1", "2")]
    assert steps == [["1", "325.2", "3600.0", "0", ""], ["2", "330.9", "4700.0", "0", ""]]
    assert (
        "Each API worker limited to 0.25 CPU; throttled in 1 worker(s): api-1 97%; "
        "2 worker(s): api-1 91%, api-2 88%"
    ) in load

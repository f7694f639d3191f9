"""The edge's table of allowed methods (system/nginx/errors/allow.conf), which fills the Allow
header of the 405 nginx answers itself, against the API's OpenAPI document: every documented
resource gets exactly its documented methods (plus HEAD wherever GET is allowed), and the table
names no resource the document lacks."""

from __future__ import annotations

import re

from chatsdk.openapi import openapi_document

from preflight.targets.edge import TEMPLATE_DIR

ALLOW_CONF = TEMPLATE_DIR / "errors" / "allow.conf"
ENTRY = re.compile(r'^\s*"~(?P<pattern>[^"]+)"\s+"(?P<methods>[^"]+)";\s*$')
DEFAULT = re.compile(r'^\s*default\s+"(?P<methods>[^"]+)";\s*$')
METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH")


def table() -> tuple[list[tuple[re.Pattern[str], set[str]]], set[str]]:
    entries: list[tuple[re.Pattern[str], set[str]]] = []
    default: set[str] = set()
    for line in ALLOW_CONF.read_text().splitlines():
        if match := ENTRY.match(line):
            entries.append((re.compile(match["pattern"]), split(match["methods"])))
        elif match := DEFAULT.match(line):
            default = split(match["methods"])
    return entries, default


def split(methods: str) -> set[str]:
    return {m.strip() for m in methods.split(",")}


def allowed(uri: str) -> set[str]:
    entries, default = table()
    return next((methods for pattern, methods in entries if pattern.search(uri)), default)


def documented() -> dict[str, set[str]]:
    """Each documented path made concrete (a parameter becomes `p1`), with its methods."""
    resources: dict[str, set[str]] = {}
    for path, item in openapi_document()["paths"].items():
        methods = {m.upper() for m in item if m.upper() in METHODS}
        if "GET" in methods:
            methods.add("HEAD")
        resources[re.sub(r"\{[^}]+\}", "p1", path)] = methods
    return resources


def test_every_documented_resource_gets_its_documented_methods() -> None:
    wrong = {
        uri: (allowed(uri), methods)
        for uri, methods in documented().items()
        if allowed(uri) != methods
    }
    assert not wrong, f"allow.conf disagrees with the OpenAPI document (table, document): {wrong}"


def test_a_query_string_does_not_change_the_answer() -> None:
    for uri, methods in documented().items():
        assert allowed(f"{uri}?limit=1") == methods, uri


def test_the_table_names_no_resource_the_document_lacks() -> None:
    entries, _ = table()
    assert entries, f"no entries parsed from {ALLOW_CONF}"
    uris = documented()
    unused = [p.pattern for p, _ in entries if not any(p.search(uri) for uri in uris)]
    assert not unused, f"allow.conf patterns matching no documented path: {unused}"

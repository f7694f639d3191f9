"""The web client as the edge serves it, over plain HTTPS without a browser: its page (/app/) and
the static assets the page names (scripts, module preloads, stylesheets, icons)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from preflight.client import Response
from preflight.evidence import EvidenceLog
from preflight.probe_target import ProbeTarget

WEB_PATH = "/app/"
ASSET_RELS = frozenset({"stylesheet", "modulepreload", "preload", "icon"})
# A content fingerprint in a file name: a run of at least 8 hex digits as its own dot-separated
# part (app.3f2a9c1b.js, app.3f2a9c1b5e7d0a4c.css), as asset pipelines name them.
FINGERPRINT = re.compile(r"(?:^|[.-])(?P<hash>[0-9a-f]{8,64})(?:\.|$)")


class _AssetRefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "script" and values.get("src"):
            self.refs.append(values["src"])
        elif tag == "link" and values.get("href"):
            rels = set(values.get("rel", "").lower().split())
            if rels & ASSET_RELS:
                self.refs.append(values["href"])


@dataclass(frozen=True)
class WebClient:
    url: str
    page: Response
    assets: tuple[str, ...]  # paths on the edge, in the order the page names them


def web_client(target: ProbeTarget, evidence: EvidenceLog) -> WebClient:
    """The page at /app/ and its same-origin assets; skips when the target serves no web
    client (the browser journeys judge whether it should)."""
    url = target.edge_url + WEB_PATH
    response = target.http.get(WEB_PATH)
    evidence.request(response)
    content_type = response.headers.get("content-type", "")
    if response.status != 200 or not content_type.startswith("text/html"):
        pytest.skip(
            f"target {target.name} serves no web client at {url} (GET answered "
            f"{response.status} {content_type or 'without a Content-Type'})"
        )
    parser = _AssetRefs()
    parser.feed(response.body.decode("utf-8", errors="replace"))
    edge = urlsplit(target.edge_url)
    assets = []
    for ref in parser.refs:
        absolute = urlsplit(urljoin(url, ref))
        if (absolute.scheme, absolute.netloc) == (edge.scheme, edge.netloc):
            assets.append(absolute.path)
        else:
            evidence.note(f"{ref} is not on the edge's origin; not judged here")
    return WebClient(url, response, tuple(dict.fromkeys(assets)))


def fingerprint_of(path: str) -> str | None:
    """The content hash in an asset's file name, if it has one."""
    match = FINGERPRINT.search(path.rsplit("/", 1)[-1])
    return match["hash"] if match else None


def cache_directives(value: str) -> dict[str, str]:
    """Cache-Control directive name -> value ("" for flags), names lower-cased."""
    directives = {}
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            directives[name.lower()] = arg.strip().strip('"')
    return directives

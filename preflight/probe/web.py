"""`target.web`: the web client as the edge serves it, over plain HTTPS without a browser: its
page (/app/) and the same-origin static assets the page names (scripts, module preloads,
stylesheets, icons)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from preflight.client import ChatClient, Response
from preflight.evidence import EvidenceLog

WEB_PATH = "/app/"
ASSET_RELS = frozenset({"stylesheet", "modulepreload", "preload", "icon"})


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
    """The page and the paths of its assets on the edge."""

    url: str
    page: Response
    assets: tuple[str, ...]  # paths on the edge, in the order the page names them


class Web:
    """The web client of one target's edge."""

    def __init__(self, name: str, edge_url: str, http: Callable[[], ChatClient]) -> None:
        self._name = name
        self._edge_url = edge_url
        self._http = http

    def client(self, evidence: EvidenceLog) -> WebClient:
        """The page at /app/ and its same-origin assets; skips when the target serves no web
        client (the browser journeys judge whether it should)."""
        return web_client(self._name, self._edge_url, self._http(), evidence)


def web_client(name: str, edge_url: str, http: ChatClient, evidence: EvidenceLog) -> WebClient:
    """See Web.client."""
    url = edge_url + WEB_PATH
    response = http.get(WEB_PATH)
    evidence.request(response)
    content_type = response.headers.get("content-type", "")
    if response.status != 200 or not content_type.startswith("text/html"):
        pytest.skip(
            f"target {name} serves no web client at {url} (GET answered "
            f"{response.status} {content_type or 'without a Content-Type'})"
        )
    parser = _AssetRefs()
    parser.feed(response.body.decode("utf-8", errors="replace"))
    edge = urlsplit(edge_url)
    assets = []
    for ref in parser.refs:
        absolute = urlsplit(urljoin(url, ref))
        if (absolute.scheme, absolute.netloc) == (edge.scheme, edge.netloc):
            assets.append(absolute.path)
        else:
            evidence.note(f"{ref} is not on the edge's origin; not judged here")
    return WebClient(url, response, tuple(dict.fromkeys(assets)))

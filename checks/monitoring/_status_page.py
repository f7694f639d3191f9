"""The status page slo.yml declares, read as a user's browser reads it: the page (200, HTML) and
the JSON it names in `data-status-source` (each component's state), and the states compared
with what the probe itself sees of the target's stores, so a page that says "up" while
PostgreSQL or Redis does not answer is caught.

Only addresses on this machine's loopback are fetched; the page is either a path on the
target's edge (the bundled system's /status) or a full URL.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

from checks.monitoring._monitoring import HTTP_TIMEOUT_S
from preflight.probe.target import ProbeTarget

COMPONENTS = ("api", "database", "redis", "realtime")
STATES = ("up", "degraded", "down")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Published:
    """What the page at `url` publishes: the JSON it reads (`source`) and its components."""

    url: str
    source: str
    components: Mapping[str, str]
    checked_at: str


class _Source(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.source: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs).get("data-status-source")
        if found and self.source is None:
            self.source = found


def page_url(declared: str, edge_url: str) -> str:
    """The declared page as a URL: a path is on the target's edge."""
    return urljoin(edge_url.rstrip("/") + "/", declared) if declared.startswith("/") else declared


def on_loopback(url: str) -> bool:
    return urlsplit(url).hostname in LOOPBACK


def _get(url: str, context: ssl.SSLContext | None, what: str) -> tuple[str, bytes]:
    """(content type, body) of a 200 answer; anything else fails with `what` named."""
    __tracebackhide__ = True
    assert urlsplit(url).scheme in ("http", "https"), f"{what} {url} must be an http(s) URL"
    accept = {"Accept": "text/html, application/json"}
    request = urllib.request.Request(url, headers=accept)  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=context) as resp:  # noqa: S310 - loopback only
            return resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{what} {url} must answer 200 (got {exc.code})") from None
    except OSError as exc:
        raise AssertionError(f"{what} {url} must answer (got {exc})") from None


def read(url: str, context: ssl.SSLContext | None) -> Published:
    """The page at `url` and the states it publishes; fails saying what is missing."""
    __tracebackhide__ = True
    kind, body = _get(url, context, "the status page")
    assert kind.split(";")[0].strip() == "text/html", (
        f"the status page {url} must be an HTML page (got Content-Type {kind or 'none'})"
    )
    parser = _Source()
    parser.feed(body.decode("utf-8", "replace"))
    assert parser.source, (
        f"the status page {url} must name the states it shows (an element with "
        "data-status-source) (got none)"
    )
    source = urljoin(url, parser.source)
    assert on_loopback(source), f"the status page's source {source} must be on this machine"
    kind, raw = _get(source, context, "the status page's source")
    try:
        report: Any = json.loads(raw)
    except ValueError:
        raise AssertionError(f"the status page's source {source} must be JSON") from None
    components = report.get("components") if isinstance(report, dict) else None
    components = components if isinstance(components, dict) else {}
    missing = [c for c in COMPONENTS if components.get(c) not in STATES]
    assert not missing, (
        f"the status page's source {source} must report each of {', '.join(COMPONENTS)} as one "
        f"of {', '.join(STATES)} (got {json.dumps(components)[:200]})"
    )
    return Published(
        url, source, {c: components[c] for c in COMPONENTS}, str(report.get("checked_at", ""))
    )


def _answers(check: Any) -> bool:
    try:
        return bool(check())
    except Exception:  # any failure to answer is "down" here
        return False


def observed(target: ProbeTarget) -> dict[str, bool]:
    """Whether each store the target gives answers the probe now (stores it does not give are
    left out: nothing to compare with)."""
    stores = target.info.stores
    seen: dict[str, bool] = {}
    if stores.postgres_dsn:
        seen["database"] = _answers(lambda: target.pg.run(lambda c: c.fetchval("SELECT 1")) == 1)
    if stores.redis_url:

        def ping() -> bool:
            with target.redis.client() as client:
                return bool(client.ping())

        seen["redis"] = _answers(ping)
    return seen


def misreported(published: Published, seen: Mapping[str, bool]) -> list[str]:
    """The components whose published state contradicts what the probe sees: "up" for a store
    that does not answer, "down" for one that does, and live updates "up" without Redis."""
    wrong = [
        f"{name} {published.components[name]} while it {'answers' if up else 'does not answer'}"
        for name, up in sorted(seen.items())
        if (published.components[name] == "up") != up
    ]
    if seen.get("redis") is False and published.components["realtime"] == "up":
        wrong.append("realtime up while Redis, which carries its events, does not answer")
    return wrong

"""The web client's static assets and caching: every asset the page names carries a content
fingerprint in its name and a year of public caching, so browsers and any CDN keep it; the page
that names them is revalidated, so a release reaches everyone at once."""

from __future__ import annotations

import hashlib

import pytest

from checks._web import cache_directives, fingerprint_of
from preflight.client import Response
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

ONE_YEAR_S = 31_536_000
# The page names the fingerprinted assets: cached longer than this, a release would reach
# browsers (and a CDN) only after the old page expires.
PAGE_MAX_AGE_S = 300


def _record(evidence: EvidenceLog, target: ProbeTarget, path: str, response: Response) -> None:
    """The exchange without the body (an asset's bytes are not evidence)."""
    evidence.request(
        method="GET",
        url=target.edge_url + path,
        status=response.status,
        headers=dict(response.headers),
    )


def _max_age(directives: dict[str, str]) -> int:
    raw = directives.get("s-maxage") or directives.get("max-age") or "0"
    try:
        return int(raw)
    except ValueError:
        return 0


@pytest.mark.checklist("INF-NET-STATIC-CACHE")
def test_static_assets_are_fingerprinted_and_cached_for_a_year(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Uncacheable static assets put avoidable load and latency on the origin."""
    client = target.web.client(evidence)
    assert client.assets, (
        f"the page at {client.url} must name its static assets (scripts, styles); it names none"
    )
    problems = []
    for path in client.assets:
        response = target.http.get(path)
        _record(evidence, target, path, response)
        name = path.rsplit("/", 1)[-1]
        if response.status != 200:
            problems.append(f"{name} answered {response.status}")
            continue
        value = response.headers.get("cache-control", "")
        directives = cache_directives(value)
        uncacheable = {"no-store", "no-cache", "private"} & set(directives)
        if uncacheable or _max_age(directives) < ONE_YEAR_S:
            problems.append(f"{name} has Cache-Control {value or 'none'!r}")
        fingerprint = fingerprint_of(path)
        if fingerprint is None:
            problems.append(f"{name} has no content fingerprint in its name")
        elif hashlib.sha256(response.body).hexdigest().startswith(fingerprint):
            evidence.note(f"{name}: the fingerprint is the sha256 of the bytes served")
        else:
            evidence.note(f"{name}: the fingerprint is not a sha256 prefix (another hash)")
    evidence.figure("assets named by the page", len(client.assets))
    assert not problems, (
        f"every static asset of {client.url} must have a fingerprinted name and Cache-Control "
        f"public with max-age >= {ONE_YEAR_S} ({len(problems)} problems in "
        f"{len(client.assets)} assets: {'; '.join(problems[:4])})"
    )


@pytest.mark.checklist("INF-NET-STATIC-CACHE")
def test_the_page_that_names_the_assets_is_revalidated(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A long-cached page keeps naming old assets: a release would not reach its users."""
    client = target.web.client(evidence)
    value = client.page.headers.get("cache-control", "")
    directives = cache_directives(value)
    revalidated = "no-cache" in directives or "no-store" in directives
    short = "immutable" not in directives and _max_age(directives) <= PAGE_MAX_AGE_S
    assert revalidated or (value and short), (
        f"the page at {client.url} must be revalidated (Cache-Control no-cache, or max-age <= "
        f"{PAGE_MAX_AGE_S}) so a release's new asset names reach browsers (got {value or 'none'!r})"
    )

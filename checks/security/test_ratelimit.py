"""The edge's per-client rate limit: what a flood gets back, whether forged client addresses
escape it, and whether every location that does work sits under it."""

from __future__ import annotations

import pytest

from checks.security._edge import (
    FLOOD_LIMITED,
    Directive,
    files_of_dump,
    flood,
    live_config,
    parse,
    plain_flood,
)
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

# Directives that make a location do work (reach the API, read files); a location without any of
# them only answers with `return`, which runs before limit_req does (rewrite phase), so neither
# needs nor can get a limit.
CONTENT_HANDLERS = frozenset(
    {"proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "root", "alias"}
)


def _forged(i: int) -> dict[str, str]:
    address = f"198.51.{i // 256}.{i % 256}"
    return {"X-Forwarded-For": address, "X-Real-IP": address, "Forwarded": f"for={address}"}


@pytest.mark.checklist("SEC-RATELIMIT")
def test_a_flood_gets_429_with_an_integer_retry_after(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Without rate limits one client can exhaust the service for everyone."""
    result = plain_flood(target)
    statuses = result.statuses()
    evidence.note(f"GETs from one address, 16 connections at once: {result.describe()}: {statuses}")
    evidence.figure("limited", statuses.get(429, 0), "requests")
    url = f"{target.edge_url}/v1/health/live"
    assert 503 not in statuses, (
        f"a flood of {url} must be limited with 429, not 503 (got {statuses})"
    )
    assert statuses.get(429, 0) >= FLOOD_LIMITED, (
        f"a flood of {url} from one address must get at least {FLOOD_LIMITED} answers 429 "
        f"(got {statuses} for {result.describe()})"
    )
    limited = result.first(429)
    assert limited is not None
    evidence.request(limited)
    retry_after = limited.headers.get("retry-after", "")
    whole_seconds = retry_after.strip().isdigit() and int(retry_after) >= 1
    assert whole_seconds, (
        f"a 429 from {url} must carry Retry-After as whole seconds >= 1 (got {retry_after!r})"
    )


@pytest.mark.checklist("SEC-RATELIMIT")
def test_forged_client_addresses_do_not_escape_the_limit(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A limit keyed on a header the client writes is no limit."""
    result = flood(target, _forged)
    statuses = result.statuses()
    evidence.note(
        f"the same flood, each request forging a new X-Forwarded-For: {result.describe()}: "
        f"{statuses}"
    )
    assert statuses.get(429, 0) >= FLOOD_LIMITED, (
        f"a flood that forges X-Forwarded-For, X-Real-IP and Forwarded per request must still "
        f"get at least {FLOOD_LIMITED} answers 429 (got {statuses} for {result.describe()})"
    )


def uncovered_locations(tree: list[Directive]) -> list[str]:
    """Locations that do work without an enforced limit_req, as 'location ARGS (file:line)'."""
    found: list[str] = []

    def limits(block: list[Directive], inherited: list[Directive]) -> list[Directive]:
        own = [d for d in block if d.name == "limit_req"]
        return own or inherited

    def dry_run(block: list[Directive], inherited: bool) -> bool:
        own = [d for d in block if d.name == "limit_req_dry_run"]
        return own[-1].args == ["on"] if own else inherited

    def walk(block: list[Directive], inherited: list[Directive], dry: bool) -> None:
        for location in (d for d in block if d.name == "location" and d.block is not None):
            assert location.block is not None
            here = limits(location.block, inherited)
            here_dry = dry_run(location.block, dry)
            works = any(d.name in CONTENT_HANDLERS for d in location.block)
            internal = any(d.name == "internal" for d in location.block)
            if works and not internal and (not here or here_dry):
                why = "in dry-run mode" if here else "without limit_req"
                found.append(f"location {' '.join(location.args)} ({location.where}, {why})")
            walk(location.block, here, here_dry)

    for http in (d for d in tree if d.name == "http" and d.block is not None):
        assert http.block is not None
        http_limits, http_dry = limits(http.block, []), dry_run(http.block, False)
        for server in (d for d in http.block if d.name == "server" and d.block is not None):
            assert server.block is not None
            walk(
                server.block,
                limits(server.block, http_limits),
                dry_run(server.block, http_dry),
            )
    return found


@pytest.mark.checklist("SEC-RATELIMIT")
def test_every_location_that_does_work_is_rate_limited(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """One unlimited location is enough to exhaust the workers behind it."""
    dump = live_config(target)  # skips when the edge does not run on this host
    evidence.attach("nginx -T", dump, "text/plain")
    files = files_of_dump(dump)
    main = next(iter(files))
    uncovered = uncovered_locations(parse(files, main))
    assert not uncovered, (
        f"every location of the edge ({main}) that proxies or serves files must be under an "
        f"enforced limit_req (got {'; '.join(uncovered)})"
    )

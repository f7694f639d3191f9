"""What the edge does for clients' bandwidth and caches: compression of compressible responses,
and a declared caching policy on every response (private data never stored by shared caches)."""

from __future__ import annotations

import gzip

import pytest

from checks.security._actors import Actors
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

# The OpenAPI description is the API's largest unauthenticated JSON document (tens of KB).
COMPRESSIBLE = "/v1/openapi.json"
NO_STORE_TOKENS = frozenset({"no-store"})


@pytest.mark.checklist("PERF-GZIP")
def test_json_is_gzipped_when_the_client_accepts_it(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Uncompressed JSON wastes bandwidth and slows mobile clients."""
    url = target.edge_url + COMPRESSIBLE
    response = target.http.get(COMPRESSIBLE, headers={"Accept-Encoding": "gzip"})
    evidence.request(response)
    assert response.status == 200, f"{url} must be served (got {response.status})"
    encoding = response.headers.get("content-encoding", "identity")
    assert encoding == "gzip", (
        f"{url} ({len(response.body)} bytes of JSON) must be gzip-encoded for a client that "
        f"accepts gzip (got Content-Encoding {encoding})"
    )
    plain = gzip.decompress(response.body)
    evidence.figure("compression_ratio", round(len(plain) / max(len(response.body), 1), 1), "x")
    vary = response.headers.get("vary", "").lower()
    assert "accept-encoding" in vary, (
        f"{url} served gzip-encoded must send Vary: Accept-Encoding so caches keep both "
        f"encodings apart (got Vary {vary or 'none'})"
    )


@pytest.mark.checklist("PERF-CACHE-HEADERS")
@pytest.mark.parametrize("which", ["/v1/me", "/v1/channels", "messages", "upload-download"])
def test_private_responses_are_no_store(
    target: ProbeTarget, evidence: EvidenceLog, actors: Actors, which: str
) -> None:
    """Wrong cache headers leak private data through shared caches."""
    owner = actors.owner.client
    path = {
        "messages": f"/v1/channels/{actors.objects.channel_id}/messages",
        "upload-download": f"/v1/uploads/{actors.objects.upload_id}",
    }.get(which, which)
    response = owner.get(path)
    evidence.request(response)
    url = target.edge_url + path
    assert response.status == 200, f"authenticated GET {url} must succeed (got {response.status})"
    policy = response.headers.get("cache-control", "")
    tokens = {t.strip().split("=")[0].lower() for t in policy.split(",") if t.strip()}
    assert tokens & NO_STORE_TOKENS, (
        f"the authenticated response of {url} must carry Cache-Control: no-store "
        f"(got {policy or 'no Cache-Control'})"
    )


@pytest.mark.checklist("PERF-CACHE-HEADERS")
def test_the_public_security_contact_is_cacheable(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Uncacheable static data wastes capacity at the origin."""
    path = "/.well-known/security.txt"
    response = target.http.get(path)
    evidence.request(response)
    url = target.edge_url + path
    if response.status != 200:
        pytest.skip(f"{url} is not served (got {response.status}); OPS-CONTACT judges that")
    policy = response.headers.get("cache-control", "").lower()
    max_age = next(
        (
            int(t.split("=")[1])
            for t in policy.replace(" ", "").split(",")
            if t.startswith("max-age=") and t.split("=")[1].isdigit()
        ),
        0,
    )
    cacheable = "no-store" not in policy and "private" not in policy and max_age > 0
    assert cacheable, (
        f"the static file {url} must be cacheable with a positive max-age (got "
        f"{policy or 'no Cache-Control'})"
    )

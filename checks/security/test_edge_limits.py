"""Request bodies over the documented limit are refused by the edge from the declared size,
before the body is read or reaches an API worker."""

from __future__ import annotations

import pytest

from checks.security._edge import MAX_BODY_BYTES, raw_exchange, request_head
from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

ANSWER_TIMEOUT_S = 5.0


@pytest.mark.checklist("SEC-BODY-LIMIT")
@pytest.mark.parametrize("path", ["/v1/uploads", "/v1/channels"])
def test_a_body_over_the_limit_is_refused_with_413(
    target: ProbeTarget, evidence: EvidenceLog, path: str
) -> None:
    """Unbounded bodies let a client exhaust memory or disk."""
    declared = MAX_BODY_BYTES + 1
    head = request_head(
        target,
        "POST",
        path,
        {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(declared),
            # The edge answers 100 Continue if it would read the body, its 413 if not: no
            # need to send 100 MB to find out.
            "Expect": "100-continue",
        },
    )
    url = f"POST {target.edge_url}{path}"
    try:
        reply = raw_exchange(target, head, method="POST", timeout=ANSWER_TIMEOUT_S)
    except (TimeoutError, ConnectionError) as exc:
        raise AssertionError(
            f"{url} declaring {declared} bytes must be refused with 413 at once (got no answer "
            f"within {ANSWER_TIMEOUT_S:.0f} s: {exc})"
        ) from None
    evidence.request(reply.as_response("POST", path))
    got = "100 Continue (it would read the body)" if reply.status == 100 else str(reply.status)
    assert reply.status == 413, (
        f"{url} declaring {declared} bytes (limit {MAX_BODY_BYTES}) must be refused with 413 "
        f"(got {got})"
    )

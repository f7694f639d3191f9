"""Cross-origin requests: the edge and the API grant no foreign origin, and never pair a
wildcard or a reflected origin with credentials."""

from __future__ import annotations

import pytest

from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

FOREIGN_ORIGINS = ("https://evil.example", "null")


@pytest.mark.checklist("SEC-CORS")
@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        pytest.param("GET", "/v1/health/ready", {}, id="simple-get"),
        pytest.param("GET", "/v1/channels", {}, id="authenticated-get"),
        pytest.param(
            "OPTIONS",
            "/v1/channels",
            {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
            id="preflight",
        ),
    ],
)
def test_foreign_origins_are_not_granted(  # noqa: PLR0917 (pytest passes fixtures and cases)
    target: ProbeTarget,
    evidence: EvidenceLog,
    origin: str,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    """A permissive CORS policy lets any website act with a signed-in user's session."""
    response = target.http.request(method, path, headers={"Origin": origin, **headers})
    evidence.request(response)
    url = f"{method} {target.edge_url}{path}"
    allowed = response.headers.get("access-control-allow-origin")
    credentials = response.headers.get("access-control-allow-credentials", "").strip().lower()
    assert not (allowed and allowed.strip() == "*" and credentials == "true"), (
        f"{url} must never pair Access-Control-Allow-Origin * with credentials (got * and "
        f"Access-Control-Allow-Credentials: true)"
    )
    assert allowed is None or allowed.strip() not in (origin, "*"), (
        f"{url} from Origin {origin} must not be granted by CORS (got "
        f"Access-Control-Allow-Origin: {allowed}"
        f"{', Access-Control-Allow-Credentials: true' if credentials == 'true' else ''})"
    )

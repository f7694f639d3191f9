"""The security contact the edge publishes (RFC 9116). The item is an operations item
(OPS-CONTACT); it lives with the edge probes because the edge serves the file."""

from __future__ import annotations

import datetime as dt

import pytest

from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

PATH = "/.well-known/security.txt"


def fields(text: str) -> dict[str, list[str]]:
    """RFC 9116 section 4: `Name: value` lines; comments and blank lines skipped."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        name, value = stripped.split(":", 1)
        found.setdefault(name.strip().lower(), []).append(value.strip())
    return found


@pytest.mark.checklist("OPS-CONTACT")
def test_security_txt_names_a_contact_and_has_not_expired(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Reporters of vulnerabilities cannot reach anyone, and outdated contacts fail silently."""
    url = target.edge_url + PATH
    response = target.http.get(PATH)
    evidence.request(response)
    assert response.status == 200, f"{url} must be served (got {response.status})"
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    assert media_type == "text/plain", f"{url} must be text/plain (got {media_type or 'none'})"
    found = fields(response.body.decode("utf-8", errors="replace"))
    contacts = found.get("contact", [])
    usable = [c for c in contacts if c.startswith(("mailto:", "https://", "tel:"))]
    assert usable, f"{url} must name a Contact (mailto:, https: or tel:) (got {contacts or 'none'})"
    expires = found.get("expires", [])
    assert len(expires) == 1, f"{url} must carry exactly one Expires field (got {len(expires)})"
    try:
        when = dt.datetime.fromisoformat(expires[0].replace("Z", "+00:00"))
    except ValueError:
        raise AssertionError(
            f"Expires in {url} must be an RFC 3339 date-time (got {expires[0]!r})"
        ) from None
    left = when - dt.datetime.now(dt.UTC)
    evidence.figure("security_txt_days_left", left.days, "days")
    assert left > dt.timedelta(0), f"Expires in {url} must be in the future (got {expires[0]})"

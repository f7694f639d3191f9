"""The privacy policy and the terms of service, as users reach them: served by the target's edge
from the web client, linked from its page, dated, not in the future, and (the privacy policy) naming
the data the service keeps and how long. Whether legal reviewed them is the product manager's
attestation."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pytest

from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget

DATED = re.compile(r'<time datetime="(\d{4}-\d{2}-\d{2})">')
# What the privacy policy must speak of: the data the service keeps (API.md "Personal data") and
# the rights to it.
PRIVACY_TOPICS = ("messages", "files", "how long", "export", "erase")
PAGES = {
    "CMP-PRIVACY-POLICY": ("/app/legal/privacy.html", "Privacy policy", PRIVACY_TOPICS),
    "CMP-TOS": ("/app/legal/terms.html", "Terms of service", ("acceptable use",)),
}


def _served(target: ProbeTarget, evidence: EvidenceLog, path: str, title: str) -> str:
    __tracebackhide__ = True
    response = target.http.get(path)
    evidence.request(response)
    assert response.status == 200, (
        f"GET {path} through the edge must serve the {title} ({response})"
    )
    kind = response.headers.get("content-type", "")
    assert kind.startswith("text/html"), f"GET {path} must be HTML (Content-Type {kind!r})"
    page = response.body.decode("utf-8", "replace")
    assert f"<h1>{title}</h1>" in page, f"{path} must be headed `{title}`"
    dated = DATED.search(page)
    assert dated, f'{path} must say when it was last updated (`<time datetime="YYYY-MM-DD">`)'
    updated = date.fromisoformat(dated.group(1))
    evidence.note(f"{path}: last updated {updated}")
    assert updated <= datetime.now(UTC).date(), f"{path} is dated in the future ({updated})"
    return page


def _page_and_link(target: ProbeTarget, evidence: EvidenceLog, item: str) -> None:
    __tracebackhide__ = True
    path, title, topics = PAGES[item]
    page = _served(target, evidence, path, title).lower()
    missing = [t for t in topics if t not in page]
    assert not missing, f"{path} must speak of {', '.join(missing)}"
    client = target.http.get("/app/")
    evidence.request(client)
    link = path.removeprefix("/app/")
    assert f'href="{link}"' in client.body.decode("utf-8", "replace"), (
        f"the web client's page (/app/) must link to {link}"
    )


@pytest.mark.checklist("CMP-PRIVACY-POLICY")
def test_the_privacy_policy_is_served_dated_and_linked(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """A privacy policy users cannot reach, or cannot date, does not inform them."""
    _page_and_link(target, evidence, "CMP-PRIVACY-POLICY")


@pytest.mark.checklist("CMP-TOS")
def test_the_terms_are_served_dated_and_linked(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """Terms users cannot reach leave abuse handling and liability undefined."""
    _page_and_link(target, evidence, "CMP-TOS")

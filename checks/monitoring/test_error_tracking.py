"""Error tracking, end to end: an unhandled server error, raised on purpose by the API's
error-tracking verification route (POST /v1/admin/debug/error, admin only), answers the
contract's JSON 500 and reaches the error tracker as an event tagged with the same request id,
the release and the exception, with no credential in it.

The events are read from the file the target names as `error_events` (the native and containers
targets run a stand-in for Sentry's ingestion endpoint that writes one JSON line per event). A
target without one skips; reading a real Sentry's API is a later addition.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from checks._chat import call
from preflight.evidence import EvidenceLog
from preflight.jsonlines import json_records
from preflight.polling import until
from preflight.probe.target import ProbeTarget

VERIFY_PATH = "/v1/admin/debug/error"
EXCEPTION_TYPE = "ErrorTrackingVerification"  # what the verification route raises
EVENT_TIMEOUT_S = 10.0
LEAKS = re.compile(r"Traceback \(most recent call last\)|File \"/[^\"]+\", line \d+|\.py\", line")


def events_file(target: ProbeTarget) -> Path:
    path = target.info.observability.error_events
    if path is None:
        pytest.skip(
            f"target {target.info.name} gives no error_events; name the file your error tracker "
            "writes its received events to (one JSON line per Sentry event) under error_events "
            "in the target file to decide this item."
        )
    return path


def tags_of(event: dict[str, Any]) -> dict[str, str]:
    """An event's tags: a mapping, or a list of [key, value] pairs (both are valid)."""
    tags = event.get("tags") or {}
    pairs = tags.items() if isinstance(tags, dict) else tags
    return {str(k): str(v) for k, v in pairs}


def exception_types(event: dict[str, Any]) -> list[str]:
    values = (event.get("exception") or {}).get("values") or []
    return [str(v.get("type")) for v in values if isinstance(v, dict)]


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event the error tracker's sink received, oldest first (none before the first)."""
    return [event for _, event in json_records([path])]


def tagged(path: Path, request_id: str) -> dict[str, Any] | None:
    for event in read_events(path):
        if tags_of(event).get("request_id") == request_id:
            return event
    return None


def running_version(target: ProbeTarget) -> str | None:
    response = call(target.admin, "GET", "/v1/admin/runtime")
    if response.status != 200:
        return None
    version = response.json().get("version")
    return str(version) if version else None


@pytest.mark.checklist("MON-ERROR-TRACKING")
def test_an_unhandled_error_reaches_error_tracking_with_its_request_id(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Errors that only appear in a log line are missed."""
    path = events_file(target)
    url = f"{target.edge_url}{VERIFY_PATH}"
    response = call(target.admin, "POST", VERIFY_PATH)
    answered = time.monotonic()
    evidence.request(response)
    assert response.status == 500, (
        f"POST {url} as admin (the error-tracking verification route) must answer 500 for its "
        f"deliberate unhandled error (got {response.status}: {response.body[:200]!r})"
    )
    try:
        request_id = str(response.json()["error"]["request_id"])
    except (ValueError, KeyError, TypeError):
        request_id = ""
    assert request_id not in ("", "-"), (
        f"the 500 of POST {url} must be the contract's JSON error with a request id "
        f"(got {response.body[:200]!r})"
    )
    header = response.headers.get("x-request-id", "")
    assert header == request_id, (
        f"the 500 of POST {url} must carry its request id {request_id} in X-Request-ID too "
        f"(got {header or 'no header'!r})"
    )
    leak = LEAKS.search(response.body.decode(errors="replace"))
    assert leak is None, (
        f"the 500 of POST {url} must not show a stack trace (got {leak.group(0)!r} in the body)"
    )

    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        event = tagged(path, request_id)
        if event is not None:
            found.append(event)
        return event is not None

    until(arrived, EVENT_TIMEOUT_S, interval=0.2)
    received = len(read_events(path))
    assert found, (
        f"the error tracker must receive an event tagged request_id={request_id} within "
        f"{EVENT_TIMEOUT_S:g} s of the unhandled error of POST {url} (got no such event; "
        f"{received} events received in all, in {path})"
    )
    event = found[0]
    evidence.figure("event arrived after", round(time.monotonic() - answered, 3), "s")
    evidence.attach("the error event", json.dumps(event, indent=2), "application/json")
    release = str(event.get("release") or "")
    types = exception_types(event)
    evidence.note(
        f"event {event.get('event_id')}: release {release or 'none'}, environment "
        f"{event.get('environment') or 'none'}, tags {tags_of(event)}, exceptions {types}"
    )
    version = running_version(target)
    named = bool(release) if version is None else version in release
    assert named, (
        f"the error event of request {request_id} must name the release running "
        f"({version or 'any'}) (got {release or 'no release'!r})"
    )
    assert EXCEPTION_TYPE in types, (
        f"the error event of request {request_id} must carry the exception raised "
        f"({EXCEPTION_TYPE}) (got {types or 'no exception'})"
    )
    text = json.dumps(event)
    leaked = [
        "the admin key" if secret == target.admin_key else "a secret of the target"
        for secret in target.secrets
        if secret in text
    ]
    assert not leaked, (
        f"the error event of request {request_id} must hold no credential (got "
        f"{', '.join(dict.fromkeys(leaked))} in it)"
    )

"""Static assets come from the edge (or a CDN in front of it), never from the API workers. Each
asset request carries its own request id; the logs then show the edge answered it from disk (no
upstream) and no API worker ever saw it, nor any other request for the web client's files."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from preflight.evidence import EvidenceLog
from preflight.jsonlines import json_records
from preflight.polling import poll
from preflight.probe.target import ProbeTarget
from preflight.probe.web import WEB_PATH

LOG_WAIT_S = 5.0
# A worker that is handed a copy of the request (nginx `mirror`) may log it just after the edge
# answered the client: the logs are read once more after this grace.
GRACE_S = 1.0
NO_UPSTREAM = ("", "-")


def _path_of(record: dict[str, Any]) -> str:
    fields = record.get("fields")
    path = fields.get("path") if isinstance(fields, dict) else None
    return str(path or record.get("uri") or record.get("path") or "")


@pytest.mark.checklist("PERF-STATIC-CDN")
def test_static_assets_are_served_by_the_edge_not_the_api_workers(
    target: ProbeTarget, evidence: EvidenceLog
) -> None:
    """Serving static files from application workers steals capacity from the API."""
    client = target.web.client(evidence)
    files = target.info.observability.log_files
    if not files:
        pytest.skip(
            f"target {target.name} gives no log_files; list the edge's access log and the API's "
            "logs under log_files in the target file to decide this item"
        )
    marker = f"preflight-static-{secrets.token_hex(6)}"
    sent = {}
    for n, path in enumerate((WEB_PATH, *client.assets)):
        request_id = f"{marker}-{n}"
        response = target.http.get(path, headers={"X-Request-ID": request_id})
        evidence.request(
            method="GET", url=target.edge_url + path, status=response.status,
            request_headers={"X-Request-ID": request_id}, headers=dict(response.headers),
        )  # fmt: skip
        assert response.status == 200, f"{target.edge_url}{path} must be served (got {response})"
        sent[request_id] = path

    def logged_by_the_edge() -> dict[str, dict[str, Any]]:
        return {
            str(r["request_id"]): r
            for _path, r in json_records(files)
            if "upstream" in r and str(r.get("request_id", "")).startswith(marker)
        }

    edge = poll(logged_by_the_edge, LOG_WAIT_S, accept=lambda found: len(found) == len(sent)).value
    missing = sorted(set(sent) - set(edge))
    assert not missing, (
        f"the edge's access log must record each static asset request by its request id "
        f"(found {len(edge)} of {len(sent)} in {len(files)} log files; missing {missing[:3]})"
    )
    proxied = {
        sent[rid]: str(r.get("upstream")) for rid, r in edge.items()
        if str(r.get("upstream", "")) not in NO_UPSTREAM
    }  # fmt: skip
    assert not proxied, (
        f"the edge must serve static assets itself, not pass them upstream (it passed "
        f"{len(proxied)} of {len(sent)}: {sorted(proxied.items())[:3]})"
    )

    time.sleep(GRACE_S)
    seen_by_workers = [
        f"{_path_of(r) or r.get('message', '?')} (request id {r.get('request_id')})"
        for _path, r in json_records(files)
        if "upstream" not in r
        and (str(r.get("request_id", "")).startswith(marker) or _path_of(r).startswith(WEB_PATH))
    ]
    evidence.figure("static requests checked", len(sent))
    evidence.figure("static requests seen by API workers", len(seen_by_workers))
    assert not seen_by_workers, (
        f"no API worker may see requests for the web client's static files (the workers logged "
        f"{len(seen_by_workers)}: {'; '.join(seen_by_workers[:3])})"
    )

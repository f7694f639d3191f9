"""The live probes of the original's compliance and WebSocket claims against the bundled system
on the native target: the legal pages it serves, its realtime frame limit, and its retention
period. The shipped system passes the first two and fails the 7-year retention it does not
keep; a system with the legal pages gone or undated, the frame limit off and a 7-year retention
turns the first two red and passes the third."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from preflight.outcomes import Outcome
from preflight.targets.native import NativeTestOptions
from preflight.targets.web import WEB_DIR
from tests.checks.support import native, outcomes, probe

PROBES = (
    "compliance/test_legal_pages.py",
    "compliance/test_retention_period.py",
    "security/test_ws_frame_rate.py",
)
ITEMS = {"CMP-PRIVACY-POLICY", "CMP-TOS", "CMP-RETENTION-PERIOD", "SEC-WS-FRAME-RATE"}


def test_the_shipped_system_serves_its_pages_limits_frames_and_keeps_seven_years() -> None:
    with native() as info:
        decided = outcomes(probe(info, *PROBES, items=ITEMS))
    assert {i: o for i, (o, _) in decided.items()} == {
        "CMP-PRIVACY-POLICY": Outcome.PASS,
        "CMP-TOS": Outcome.PASS,
        "SEC-WS-FRAME-RATE": Outcome.PASS,
        "CMP-RETENTION-PERIOD": Outcome.PASS,
    }, decided


def _web_without_terms_and_an_undated_policy(tmp: Path) -> Path:
    web = tmp / "web"
    shutil.copytree(WEB_DIR, web)
    (web / "legal" / "terms.html").unlink()
    policy = web / "legal" / "privacy.html"
    policy.write_text(policy.read_text().replace('<time datetime="2026-12-07">', "<time>"))
    return web


@pytest.mark.turns_red(
    "CMP-PRIVACY-POLICY",
    "CMP-TOS",
    "SEC-WS-FRAME-RATE",
    "CMP-RETENTION-PERIOD",
    defect="The web client serves no terms and an undated privacy policy, the realtime "
    "handler lets a socket send any number of frames per second, and messages and uploads are "
    "deleted after 365 days instead of seven years.",
)
def test_missing_pages_and_no_frame_limit_turn_their_items_red(tmp_path: Path) -> None:
    env = {
        "CHATSDK_FAULTS": "no_ws_frame_limit",
        "CHATSDK_RETENTION_MESSAGES_DAYS": "365",
        "CHATSDK_RETENTION_UPLOADS_DAYS": "365",
    }
    test = NativeTestOptions(web_dir=_web_without_terms_and_an_undated_policy(tmp_path))
    with native(worker_env=env, test=test) as info:
        decided = outcomes(probe(info, *PROBES, items=ITEMS))
    red = {i: reason for i, (o, reason) in decided.items() if o is Outcome.FAIL}
    assert set(red) == {
        "CMP-PRIVACY-POLICY",
        "CMP-TOS",
        "SEC-WS-FRAME-RATE",
        "CMP-RETENTION-PERIOD",
    }, decided
    assert "must say when it was last updated" in red["CMP-PRIVACY-POLICY"]
    assert "/app/legal/terms.html" in red["CMP-TOS"]
    assert "still open" in red["SEC-WS-FRAME-RATE"]
    assert "deletes messages after 365 days" in red["CMP-RETENTION-PERIOD"]

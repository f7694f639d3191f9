"""The shipped gate policy against a real defect of low severity: an edge with `server_tokens on`
turns SEC-SERVER-TOKENS red, and the release is NOT READY for it alone (exit 1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from preflight.checklist import load_checklist
from preflight.decide import decide_probe, gate, not_selected
from preflight.outcomes import Outcome
from preflight.targets.native import NativeTestOptions
from tests.checks.support import CHECKLIST, edge_templates, native, probe

ITEM = "SEC-SERVER-TOKENS"


@pytest.mark.turns_red(
    "SEC-SERVER-TOKENS", defect="An edge with server_tokens on: NGINX names its version."
)
@pytest.mark.native
def test_server_tokens_on_is_red_and_blocks_under_the_shipped_policy(tmp_path: Path) -> None:
    def tokens_on(text: str) -> str:
        return re.sub(r"server_tokens off;", "server_tokens on;", text)

    templates = edge_templates(tmp_path, {"nginx.conf.j2": tokens_on})
    with native(test=NativeTestOptions(edge_template_dir=templates)) as info:
        results = probe(info, "security/test_headers.py", items=[ITEM])
    checklist = load_checklist(CHECKLIST)
    decisions = [
        decide_probe(item, results) if item.id == ITEM else not_selected(item, "this test")
        for item in checklist.items
    ]
    red = next(d for d in decisions if d.item.id == ITEM)
    assert red.item.severity == "low"
    assert red.outcome is Outcome.FAIL
    assert "must not reveal a version" in red.reason
    verdict = gate(checklist, decisions)
    assert (verdict.ready, verdict.blocking) == (False, (ITEM,))  # `preflight run` exits 1
    assert verdict.summary(1).startswith("NOT READY (policy: any fail or error blocks;")

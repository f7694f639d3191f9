"""The edge probes against deliberately broken edges: each defect turns exactly its items red."""

from __future__ import annotations

import re
from pathlib import Path

from tests.checks.support import edge_templates, failing, native, probe


def test_an_edge_without_hsts_fails_exactly_the_hsts_item(tmp_path: Path) -> None:
    def drop_hsts(text: str) -> str:
        return re.sub(r"(?m)^add_header Strict-Transport-Security .*$", "", text)

    templates = edge_templates(tmp_path, {"security/baseline.conf": drop_hsts})
    with native(edge_template_dir=templates) as info:
        results = probe(info, "security")
    red = failing(results)
    assert set(red) == {"SEC-HDR-HSTS"}, red
    assert "Strict-Transport-Security" in red["SEC-HDR-HSTS"]

"""The browser journeys and the web client's edge probes against deliberately broken variants:
a web client with a defect per journey, an edge that relaxes the CSP everywhere, caches nothing
and hands asset requests to the workers, an edge without the web client, and a system without
its demo sign-in. Each defect turns exactly its items red, with a reason that names it; the
healthy system passes them all in the repository run (tests/test_run.py)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from preflight.outcomes import Outcome
from preflight.targets.native import NativeTestOptions
from preflight.targets.web import WEB_DIR
from tests.checks.support import apply_edits, edge_templates, failing, native, outcomes, probe

# The suite's heavy modules run one at a time (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_heavy_module_at_a_time")

JOURNEYS = "testing/test_browser_journeys.py"
EDGE_PROBES = (
    "security/test_web_csp.py",
    "infrastructure/test_static_assets.py",
    "performance/test_static_edge.py",
)
JOURNEY_ITEMS = (
    "TST-E2E-MESSAGE",
    "TST-E2E-REALTIME",
    "TST-E2E-POLL",
    "TST-E2E-UPLOAD",
    "TST-MOBILE-CLIENT",
)

Edit = Callable[[str], str]


def _replace(old: str, new: str) -> Edit:
    return lambda text: text.replace(old, new, 1)


def _sub(pattern: str, replacement: str) -> Edit:
    return lambda text: re.sub(pattern, replacement, text, count=1, flags=re.MULTILINE)


def _append(line: str) -> Edit:
    return lambda text: text + line + "\n"


def web_client(tmp: Path, edits: Mapping[str, Edit]) -> Path:
    """A copy of system/web with the edits applied."""
    copy = tmp / "web"
    shutil.copytree(WEB_DIR, copy)
    return apply_edits(copy, edits)


# One defect per journey but the message journey, which stays green beside them.
WEB_DEFECTS: dict[str, Edit] = {
    # Polls: every vote goes to the first option, whatever was clicked. Realtime: a message
    # beyond the next seq is shown without fetching the ones before it (the gap stays) ...
    "app.js": lambda text: _replace("if (gap) fillGap(state.conv, message.seq);", "")(
        _replace("choice = [optionId];", "choice = [poll.options[0].option_id];")(text)
    ),
    # ... and a (re)subscription asks for live events only, so a reconnect backfills nothing.
    "realtime.js": _sub(r"^\s*if \(Number\.isInteger\(after\).*$", ""),
    # Uploads: only the first half of the file leaves the browser.
    "api.js": _replace("xhr.send(file);", "xhr.send(file.slice(0, Math.ceil(file.size / 2)));"),
    # Mobile: a layout that assumes a desktop-wide screen.
    "app.css": _append(".chat, .signin { min-width: 720px; }"),
}
WEB_EXPECTED = {
    "TST-E2E-POLL": "votes No",
    "TST-E2E-REALTIME": "while he was offline",
    "TST-E2E-UPLOAD": "must download the bytes",
    "TST-MOBILE-CLIENT": "must be on screen",
}

WEB_CLIENT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSETS_MIRRORED = """
location = /__assets_mirror {
    internal;
    include proxy/headers.conf;
    proxy_pass http://api$request_uri;
}
"""
EDGE_DEFECTS: dict[str, Edit] = {
    # The web client's relaxed policy on every response, the API's included.
    "security/headers.conf": _sub(
        r"^add_header Content-Security-Policy .*$",
        f'add_header Content-Security-Policy "{WEB_CLIENT_CSP}" always;',
    ),
    # Assets that no cache may keep, and a copy of every asset request handed to the workers.
    "static/web-client.conf": lambda text: (
        text.replace(
            'add_header Cache-Control "public, max-age=31536000, immutable" always;',
            'add_header Cache-Control "no-cache" always;\n    mirror /__assets_mirror;',
        )
        + ASSETS_MIRRORED
    ),
}
EDGE_EXPECTED = {
    "SEC-HDR-CSP": "must allow nothing to load outside the web client",
    "INF-NET-STATIC-CACHE": "'no-cache'",
    "PERF-STATIC-CDN": "no API worker may see",
}


@pytest.mark.native
@pytest.mark.turns_red(
    "TST-E2E-POLL",
    "TST-E2E-REALTIME",
    "TST-E2E-UPLOAD",
    "TST-MOBILE-CLIENT",
    defect="A web client that votes for the first option, leaves gaps after a reconnect, uploads "
    "half of each file and needs a desktop-wide screen.",
)
def test_each_web_client_defect_turns_exactly_its_journey_red(tmp_path: Path) -> None:
    with native(test=NativeTestOptions(web_dir=web_client(tmp_path, WEB_DEFECTS))) as info:
        results = probe(info, JOURNEYS)
    red = failing(results)
    assert set(red) == set(WEB_EXPECTED), red
    for item, named in WEB_EXPECTED.items():
        assert named in red[item], (item, red[item])
    assert outcomes(results)["TST-E2E-MESSAGE"][0] is Outcome.PASS
    # A journey that failed shows what each person's screen showed when it stopped.
    for result in results.for_item("TST-E2E-POLL"):
        shots = [
            e["name"]
            for e in result.evidence
            if e["kind"] == "attachment" and e["name"].endswith("when the journey stopped")
        ]
        assert shots == [f"screenshot of browser {n} when the journey stopped" for n in (1, 2)]


@pytest.mark.native
@pytest.mark.turns_red(
    "SEC-HDR-CSP",
    "INF-NET-STATIC-CACHE",
    "PERF-STATIC-CDN",
    defect="An edge that sends the web client's relaxed CSP on every response, lets no cache keep "
    "assets and hands asset requests to the API workers.",
)
def test_edge_defects_turn_the_csp_cache_and_cdn_items_red_and_no_demo_skips_the_journeys(
    tmp_path: Path,
) -> None:
    templates = edge_templates(tmp_path, EDGE_DEFECTS)
    with native(test=NativeTestOptions(edge_template_dir=templates), demo=False) as info:
        results = probe(info, *EDGE_PROBES, JOURNEYS)
    red = failing(results)
    assert set(red) == set(EDGE_EXPECTED), red
    for item, named in EDGE_EXPECTED.items():
        assert named in red[item], (item, red[item])
    decided = outcomes(results)
    for item in JOURNEY_ITEMS:
        outcome, reason = decided[item]
        assert outcome is Outcome.SKIP, (item, outcome, reason)
        assert "no demo sign-in" in reason, reason


@pytest.mark.native
@pytest.mark.turns_red(
    "TST-E2E-MESSAGE",
    "TST-E2E-REALTIME",
    "TST-E2E-POLL",
    "TST-E2E-UPLOAD",
    "TST-MOBILE-CLIENT",
    defect="An edge that does not serve the web client (/app/ answers 404).",
)
def test_an_edge_without_the_web_client_turns_every_journey_red(tmp_path: Path) -> None:
    templates = edge_templates(
        tmp_path, {"nginx.conf.j2": _sub(r"^\s*include static/web-client\.conf;$", "")}
    )
    with native(test=NativeTestOptions(edge_template_dir=templates)) as info:
        results = probe(info, *EDGE_PROBES, JOURNEYS)
    red = failing(results)
    assert set(red) == set(JOURNEY_ITEMS), red
    for item in JOURNEY_ITEMS:
        assert re.search(r"/app/.* 404\b|/app/.*\(got 404\)", red[item]), (item, red[item])
    decided = outcomes(results)
    for item in ("INF-NET-STATIC-CACHE", "PERF-STATIC-CDN"):
        assert decided[item][0] is Outcome.SKIP, decided[item]
        assert "serves no web client" in decided[item][1], decided[item]

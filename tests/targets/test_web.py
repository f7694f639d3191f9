"""Staging the web client for the edge: fingerprinted names that change exactly when the bytes
behind them (or behind anything they import) change, and the page naming them."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from preflight.errors import EdgeConfigInvalid
from preflight.targets.web import WEB_DIR, fingerprinted, stage_web_client


def _copy(tmp_path: Path) -> Path:
    source = tmp_path / "web"
    shutil.copytree(WEB_DIR, source)
    return source


def test_every_asset_is_named_by_the_hash_of_what_is_served(tmp_path: Path) -> None:
    build = stage_web_client(WEB_DIR, tmp_path / "out")
    assets = build.root / "app" / "assets"
    staged = sorted(p.name for p in assets.iterdir())
    assert staged == sorted(build.assets.values())
    for path in assets.iterdir():
        stem, digest, suffix = path.name.rsplit(".", 2)
        assert re.fullmatch(r"[0-9a-f]{16}", digest), path.name
        assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(digest), path.name
        assert f"{stem}.{suffix}" in build.assets


def test_the_page_names_the_staged_assets_and_preloads_the_modules(tmp_path: Path) -> None:
    build = stage_web_client(WEB_DIR, tmp_path / "out")
    page = build.entry.read_text()
    assert f'<script type="module" src="assets/{build.assets["app.js"]}">' in page
    assert f'href="assets/{build.assets["app.css"]}"' in page
    for name, staged in build.assets.items():
        if name.endswith(".js"):
            assert f'<link rel="modulepreload" href="assets/{staged}">' in page
    assert "<!-- modulepreload -->" not in page
    app = (build.root / "app" / "assets" / build.assets["app.js"]).read_text()
    assert f'from "./{build.assets["api.js"]}"' in app
    assert 'from "./api.js"' not in app


def test_the_status_page_names_the_staged_assets_from_its_own_path(tmp_path: Path) -> None:
    build = stage_web_client(WEB_DIR, tmp_path / "out")
    page = (build.root / "app" / "status.html").read_text()
    # Served at /status, not under /app/: it names the assets by their absolute path.
    assert f'<script type="module" src="/app/assets/{build.assets["status.js"]}">' in page
    assert f'href="/app/assets/{build.assets["status.css"]}"' in page
    assert 'data-status-source="/v1/status"' in page
    assert re.search(r"""<(?:script|link)[^>]*(?:src|href)=["'](?!/app/assets/)""", page) is None


def test_a_change_renames_the_file_and_everything_that_imports_it(tmp_path: Path) -> None:
    source = _copy(tmp_path)
    before = stage_web_client(source, tmp_path / "before").assets
    (source / "dom.js").write_text((source / "dom.js").read_text() + "\n// changed\n")
    after = stage_web_client(source, tmp_path / "after").assets
    changed = {name for name in before if before[name] != after[name]}
    # dom.js, and the modules that import it directly or through another module.
    assert changed == {"dom.js", "api.js", "views.js", "app.js", "status.js"}, changed
    assert after["app.css"] == before["app.css"]


def test_staging_is_repeatable(tmp_path: Path) -> None:
    first = stage_web_client(WEB_DIR, tmp_path / "out")
    again = stage_web_client(WEB_DIR, tmp_path / "out")
    assert first.assets == again.assets
    assert fingerprinted("a.js", b"x") == f"a.{hashlib.sha256(b'x').hexdigest()[:16]}.js"


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("app.js", 'import { x } from "./missing.js";\n', "refers to ./missing.js"),
        ("loop.js", 'import "./loop.js";\n', "import in a cycle"),
        ("notes.txt", "not an asset\n", "is not a web asset"),
        ("bad name.js", "export {};\n", "not a plain asset name"),
    ],
)
def test_a_broken_client_is_refused_naming_the_problem(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    source = _copy(tmp_path)
    (source / name).write_text(content)
    with pytest.raises(EdgeConfigInvalid, match=re.escape(problem)):
        stage_web_client(source, tmp_path / "out")


def test_a_page_naming_a_missing_file_is_refused(tmp_path: Path) -> None:
    source = _copy(tmp_path)
    page = source / "index.html"
    page.write_text(page.read_text().replace("app.css", "gone.css"))
    with pytest.raises(EdgeConfigInvalid, match=re.escape("refers to gone.css")):
        stage_web_client(source, tmp_path / "out")


def test_the_legal_pages_are_staged_as_they_are_and_nothing_else_beside_them(
    tmp_path: Path,
) -> None:
    build = stage_web_client(WEB_DIR, tmp_path / "out")
    for name in ("privacy.html", "terms.html"):
        staged = build.root / "app" / "legal" / name
        assert staged.read_bytes() == (WEB_DIR / "legal" / name).read_bytes()
    source = _copy(tmp_path)
    (source / "legal" / "notes.txt").write_text("draft")
    with pytest.raises(EdgeConfigInvalid, match="is not a legal page"):
        stage_web_client(source, tmp_path / "again")

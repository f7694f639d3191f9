"""Stage the web client (system/web) for the edge: every asset under a fingerprinted name.

The client is plain ES modules and one stylesheet: nothing is downloaded or bundled. Staging
copies each asset to `app/assets/<stem>.<sha256 prefix><suffix>`, rewriting the relative imports
between modules (and the references in index.html) to those names, so a name changes exactly
when the bytes behind it (or behind anything it imports) change. The edge then serves assets with
a year of immutable caching and the page itself with `no-cache` (INF-NET-STATIC-CACHE), from
disk, never through the API workers (PERF-STATIC-CDN).

The status page (status.html, served at /status) is staged the same way, naming the same assets
by their absolute path, since it is not served under /app/.

Layout written under `dest`: `app/index.html`, `app/status.html` (where the source has one),
`app/assets/*` and the legal pages `app/legal/*.html` (the privacy policy and the terms, plain
pages copied as they are), as the edge's web locations (system/nginx/static/web-client.conf)
expect with `root <dest>`.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from preflight.errors import EdgeConfigInvalid

# preflight/targets/web.py -> <repo>/system/web
WEB_DIR = Path(__file__).resolve().parents[2] / "system" / "web"
ENTRY = "index.html"
STATUS_PAGE = "status.html"
# Each page and the prefix its references to assets take: the client's page is at /app/, the
# status page at /status.
PAGES = {ENTRY: "", STATUS_PAGE: "/app/"}
ASSET_DIR = "assets"
ASSET_SUFFIXES = frozenset({".js", ".css", ".svg", ".png", ".webmanifest"})
FINGERPRINT_HEX = 16
PRELOAD_MARKER = "<!-- modulepreload -->"
LEGAL_DIR = "legal"  # plain HTML pages served as they are: /app/legal/<name>.html

_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*\.[a-z]+"
# `import x from "./a.js"`, `export {y} from "./b.js"`, `import "./c.js"`, `import("./d.js")`.
_JS_IMPORT = re.compile(
    r"""(?P<head>\b(?:from|import)\s*\(?\s*)(?P<quote>["'])\./(?P<name>[^"']+)(?P=quote)"""
)
_HTML_REF = re.compile(
    rf"""(?P<head>\b(?:src|href)=)(?P<quote>["'])(?:\./)?(?P<name>{_NAME})(?P=quote)"""
)
_SAFE_NAME = re.compile(rf"^{_NAME}$")


@dataclass(frozen=True)
class WebBuild:
    root: Path  # the edge's `root`: root/app/index.html and root/app/assets/
    assets: dict[str, str]  # source file name -> staged (fingerprinted) name

    @property
    def entry(self) -> Path:
        return self.root / "app" / ENTRY


def fingerprinted(name: str, content: bytes) -> str:
    stem, dot, suffix = name.rpartition(".")
    digest = hashlib.sha256(content).hexdigest()[:FINGERPRINT_HEX]
    return f"{stem}.{digest}{dot}{suffix}"


def stage_web_client(source: Path, dest: Path) -> WebBuild:
    """Copy `source` (a copy of system/web) into `dest` with fingerprinted asset names."""
    if not (source / ENTRY).is_file():
        raise EdgeConfigInvalid(f"{source}/{ENTRY} is missing; point the web source at system/web")
    sources: dict[str, bytes] = {}
    for path in sorted(source.iterdir()):
        if path.name in PAGES or path.name == LEGAL_DIR or path.name.startswith("."):
            continue
        if path.is_dir() or path.suffix not in ASSET_SUFFIXES:
            raise EdgeConfigInvalid(
                f"{path} is not a web asset ({', '.join(sorted(ASSET_SUFFIXES))}); the web client "
                "is a flat folder of modules, one stylesheet and images"
            )
        if not _SAFE_NAME.match(path.name):
            raise EdgeConfigInvalid(
                f"{path.name} is not a plain asset name (letters, digits, '_' and '-', one suffix)"
            )
        sources[path.name] = path.read_bytes()

    staged: dict[str, str] = {}
    contents: dict[str, bytes] = {}

    def stage(name: str, chain: tuple[str, ...]) -> str:
        if name in staged:
            return staged[name]
        if name in chain:
            cycle = " -> ".join((*chain, name))
            raise EdgeConfigInvalid(f"the web client's modules import in a cycle: {cycle}")
        if name not in sources:
            raise EdgeConfigInvalid(f"{chain[-1]} refers to ./{name}, which {source} does not have")
        content = sources[name]
        if name.endswith(".js"):

            def imported(m: re.Match[str]) -> str:
                quote = m["quote"]
                return f"{m['head']}{quote}./{stage(m['name'], (*chain, name))}{quote}"

            content = _JS_IMPORT.sub(imported, content.decode("utf-8")).encode("utf-8")
        staged[name] = fingerprinted(name, content)
        contents[name] = content
        return staged[name]

    for name in sources:
        stage(name, ("(assets)",))

    pages = {
        name: _page(source / name, prefix, staged)
        for name, prefix in PAGES.items()
        if (source / name).is_file()
    }

    shutil.rmtree(dest, ignore_errors=True)
    assets = dest / "app" / ASSET_DIR
    assets.mkdir(parents=True)
    for directory in (dest, dest / "app", assets):
        directory.chmod(0o755)  # nginx's workers (nobody) read them
    for name, content in contents.items():
        target = assets / staged[name]
        target.write_bytes(content)
        target.chmod(0o644)
    for name, page in pages.items():
        written = dest / "app" / name
        written.write_text(page, encoding="utf-8")
        written.chmod(0o644)
    _stage_legal(source / LEGAL_DIR, dest / "app" / LEGAL_DIR)
    return WebBuild(dest, dict(staged))


def _page(path: Path, prefix: str, staged: dict[str, str]) -> str:
    """The page at `path` naming its assets by their staged names under `prefix`, with a
    modulepreload of every module where it has the marker."""
    page = path.read_text(encoding="utf-8")

    def page_ref(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in staged:
            raise EdgeConfigInvalid(
                f"{path.name} refers to {name}, which {path.parent} does not have"
            )
        return f"{match['head']}{match['quote']}{prefix}{ASSET_DIR}/{staged[name]}{match['quote']}"

    page = _HTML_REF.sub(page_ref, page)
    preload = "\n".join(
        f'<link rel="modulepreload" href="{prefix}{ASSET_DIR}/{staged[n]}">'
        for n in sorted(staged)
        if n.endswith(".js")
    )
    return page.replace(PRELOAD_MARKER, preload)


def _stage_legal(source: Path, dest: Path) -> None:
    """Copy the legal pages (flat `*.html`) as they are; nothing else may be in their folder."""
    if not source.is_dir():
        return
    dest.mkdir()
    dest.chmod(0o755)
    for path in sorted(source.iterdir()):
        if path.suffix != ".html" or not _SAFE_NAME.match(path.name):
            raise EdgeConfigInvalid(f"{path} is not a legal page (a plain `<name>.html`)")
        copied = dest / path.name
        copied.write_bytes(path.read_bytes())
        copied.chmod(0o644)

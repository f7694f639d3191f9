"""Judging the web client's assets: the content fingerprint in a file name and the
Cache-Control directives an asset is served with (the page and its assets: `target.web`)."""

from __future__ import annotations

import re

# A content fingerprint in a file name: a run of at least 8 hex digits as its own dot-separated
# part (app.3f2a9c1b.js, app.3f2a9c1b5e7d0a4c.css), as asset pipelines name them.
FINGERPRINT = re.compile(r"(?:^|[.-])(?P<hash>[0-9a-f]{8,64})(?:\.|$)")


def fingerprint_of(path: str) -> str | None:
    """The content hash in an asset's file name, if it has one."""
    match = FINGERPRINT.search(path.rsplit("/", 1)[-1])
    return match["hash"] if match else None


def cache_directives(value: str) -> dict[str, str]:
    """Cache-Control directive name -> value ("" for flags), names lower-cased."""
    directives = {}
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            directives[name.lower()] = arg.strip().strip('"')
    return directives

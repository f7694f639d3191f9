"""The hosts of a database URL: one, or several in libpq's multi-host form
(postgresql://chatsdk@primary:5432,standby:5432/chatsdk?target_session_attrs=read-write), which
asyncpg and libpq try in order, taking the first that accepts writes."""

from __future__ import annotations

from urllib.parse import urlsplit


def hosts(url: str) -> list[tuple[str, int | None]]:
    """(host, port or None) of each host the URL names, in order; ValueError on a bad port."""
    hostlist = urlsplit(url).netloc.rpartition("@")[2]
    named = []
    for item in hostlist.split(","):
        parts = urlsplit(f"//{item}")
        named.append((parts.hostname or "", parts.port))
    return named

"""Whether a server of the native target answers: a URL that answers 200."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False

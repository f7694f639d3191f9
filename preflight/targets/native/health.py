"""Whether a server of the native target answers: a URL that answers 200, and an API worker that
can serve (ready, or close enough that the edge may send it requests)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0, context=context) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def can_serve(ready_url: str) -> bool:
    """The worker is ready, or it listens, has its database and Redis, and has settled its
    migrations: what it needs to answer requests. Settled includes `failed` (a changed
    migration file): such a worker serves and says so in its readiness, as it did before the
    edge learnt of restarts; `pending` only lasts until it reaches the database once."""
    try:
        with urllib.request.urlopen(ready_url, timeout=1.0) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            return False
        checks = body.get("checks") or {}
        return bool(
            body.get("status") != "draining"
            and checks.get("database") == "ok"
            and checks.get("redis") == "ok"
            and checks.get("migrations") not in (None, "pending")
        )
    except (urllib.error.URLError, OSError):
        return False

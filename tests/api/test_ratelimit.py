"""The API's own per-user, per-action rate limits (token buckets in Redis), and their chosen
behaviour while Redis is down (a per-worker bucket in memory)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from preflight.targets.native import NativeTarget
from tests.api.conftest import AppCtx, UserCtx

BURST = 100  # the "default" action: 50/s, burst 100


def writer(user: UserCtx) -> Callable[[int], tuple[int, str | None]]:
    def write(i: int) -> tuple[int, str | None]:
        resp = user.client.patch("/v1/me", {"name": f"n{i}"})
        return resp.status, resp.headers.get("retry-after")

    return write


def hammer(user: UserCtx, count: int, threads: int = 16) -> list[tuple[int, str | None]]:
    """`count` writes from `threads` connections at once: faster than the bucket refills even
    on a busy machine (one connection at a time can fall below 50 requests/s there)."""
    return in_parallel(writer(user), count, threads)


def in_parallel(
    write: Callable[[int], tuple[int, str | None]], count: int, threads: int = 16
) -> list[tuple[int, str | None]]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(write, range(count)))


def until_limited(
    write: Callable[[int], tuple[int, str | None]], within_s: float = 30.0
) -> list[tuple[int, str | None]]:
    """Rounds of BURST + 60 writes until one meets the limit, for at most `within_s`: a busy
    machine (the suite runs in parallel) can serve one round slower than the bucket refills,
    never every round for that long (50/s refill x 30 s is far past what it serves)."""
    results: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        results += in_parallel(write, BURST + 60)
        if any(status == 429 for status, _ in results):
            break
    return results


def test_a_user_past_the_bucket_gets_429_with_retry_after(app: AppCtx) -> None:
    user, bystander = app.user(), app.user()
    results = until_limited(writer(user))
    statuses = [s for s, _ in results]
    assert statuses.count(200) >= BURST, "the burst itself must be served"
    limited = [ra for s, ra in results if s == 429]
    assert limited, f"{len(results)} writes in bursts over 30 s never met the limit"
    assert all(ra is not None and ra.isdigit() and int(ra) >= 1 for ra in limited)
    # Buckets are per user: another user of the same app is not affected.
    assert bystander.client.patch("/v1/me", {"name": "b"}).status == 200


def test_the_bucket_refills(app: AppCtx) -> None:
    user = app.user()
    hammer(user, BURST + 20)
    time.sleep(1.1)
    assert user.client.patch("/v1/me", {"name": "again"}).status == 200


def direct_patch(worker_url: str, token: str) -> int:
    url = urlsplit(worker_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    try:
        conn.request(
            "PATCH",
            "/v1/me",
            body=json.dumps({"name": "x"}),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_with_redis_down_limits_hold_per_worker_and_writes_go_on(
    stack: NativeTarget, app: AppCtx
) -> None:
    assert stack.info is not None
    user = app.user()
    redis_control = stack.info.drills.control["redis"]
    redis_control.stop()
    try:
        # Rounds from 16 connections at once until one outpaces the in-memory bucket.
        results = until_limited(
            lambda _: (direct_patch(stack.worker_urls[0], user.access_token), None)
        )
    finally:
        redis_control.start()
    statuses = [status for status, _ in results]
    assert statuses.count(200) >= BURST, "writes must go on while Redis is down"
    assert 429 in statuses, (
        f"the in-memory fallback must still limit ({len(statuses)} writes in rounds over 30 s "
        "never met it)"
    )
    assert 503 not in statuses
    assert 500 not in statuses

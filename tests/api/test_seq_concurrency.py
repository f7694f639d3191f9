"""Per-channel seq under concurrency: many senders on both API workers (through NGINX and
directly), with repeated client_msg_ids racing each other, still leave seqs 1..N with no gap and
no duplicate, and exactly one message per client_msg_id."""

from __future__ import annotations

import http.client
import json
import random
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from preflight.client import expect
from preflight.targets.native import NativeTarget
from tests.api.conftest import AppCtx, UserCtx

SENDERS = 8
PER_SENDER = 25
REPEATS_PER_SENDER = 5  # client_msg_ids sent twice, at the same time; stays within the burst


def post_direct(worker_url: str, token: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    url = urlsplit(worker_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=15)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_concurrent_senders_on_every_worker_leave_no_gaps(stack: NativeTarget, app: AppCtx) -> None:
    owner = app.user()
    senders = [owner] + [app.user() for _ in range(SENDERS - 1)]
    body = {"name": "busy", "kind": "public", "member_ids": [u.user_id for u in senders[1:]]}
    cid = expect(owner.client.post("/v1/channels", body), 201)["channel_id"]
    path = f"/v1/channels/{cid}/messages"

    firsts: list[tuple[UserCtx, str]] = [
        (user, f"s{s}-m{i}") for s, user in enumerate(senders) for i in range(PER_SENDER)
    ]
    random.Random(7).shuffle(firsts)
    # Each repeat goes right after its original, so the two race on different routes.
    jobs: list[tuple[UserCtx, str]] = []
    for user, cmid in firsts:
        jobs.append((user, cmid))
        if int(cmid.rsplit("m", 1)[1]) < REPEATS_PER_SENDER:
            jobs.append((user, cmid))
    routes = ["edge", *stack.worker_urls]

    def send(i: int) -> tuple[str, int, Any]:
        user, cmid = jobs[i]
        msg = {"text": f"text of {cmid}", "client_msg_id": cmid}
        route = routes[i % len(routes)]
        if route == "edge":
            resp = user.client.post(path, msg)
            return cmid, resp.status, resp.json()
        status, data = post_direct(route, user.access_token, path, msg)
        return cmid, status, data

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(send, range(len(jobs))))

    by_cmid: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for cmid, status, data in results:
        assert status in (200, 201), f"send of {cmid} must succeed (got {status} {data})"
        by_cmid[cmid].append((status, data))
    distinct = SENDERS * PER_SENDER
    assert len(by_cmid) == distinct
    for cmid, answers in by_cmid.items():
        statuses = sorted(s for s, _ in answers)
        assert statuses.count(201) == 1, f"{cmid} must be stored once (answers {statuses})"
        assert len({d["message_id"] for _, d in answers}) == 1, f"{cmid} answers differ"

    # The whole history, paged forward by seq.
    history: list[Any] = []
    after = 0
    while True:
        page = expect(owner.client.get(path, query={"after_seq": after, "limit": 200}), 200)
        history += page["messages"]
        if not page["has_more"]:
            break
        after = page["messages"][-1]["seq"]
    seqs = [m["seq"] for m in history]
    assert seqs == list(range(1, distinct + 1)), "seqs must be exactly 1..N without gaps"
    assert sorted(m["client_msg_id"] for m in history) == sorted(by_cmid)
    stored = {m["client_msg_id"]: m["message_id"] for m in history}
    assert all(stored[c] == a[0][1]["message_id"] for c, a in by_cmid.items())
    assert expect(owner.client.get(f"/v1/channels/{cid}"), 200)["last_seq"] == distinct

"""The transactional outbox and its drainer against the real stack: rows are published and
marked, rows nobody woke the drainer for are found by its poll, and outages of Redis or
PostgreSQL delay events but lose none."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable

from preflight.client import ChatClient, expect
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTarget
from tests.api.conftest import AppCtx
from tests.api.test_messages import sql
from tests.api.test_realtime import make_channel, open_socket, send


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `check` held; fails with `what` after `timeout`."""
    __tracebackhide__ = True
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s (it did not)")


def published(info: TargetInfo, channel_id: str, seq: int) -> bool:
    rows = sql(
        info,
        "SELECT published_at FROM outbox WHERE channel_id = $1 AND type = 'message.new' "
        "AND seq = $2",
        channel_id,
        seq,
    )
    assert len(rows) == 1, f"message {seq} of {channel_id} must have exactly one outbox row"
    return rows[0]["published_at"] is not None


def published_total(stack: NativeTarget) -> float:
    total = 0.0
    for url in stack.worker_urls:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:  # noqa: S310
            text = resp.read().decode()
        match = re.search(r"^outbox_events_published_total (\S+)$", text, re.MULTILINE)
        assert match, f"{url}/metrics must expose outbox_events_published_total"
        total += float(match.group(1))
    return total


def test_event_is_published_and_marked_at_once(
    stack: NativeTarget, info: TargetInfo, app: AppCtx
) -> None:
    owner = app.user()
    channel = make_channel(owner)
    before = published_total(stack)
    seq = send(owner, channel)
    took = wait_for(lambda: published(info, channel, seq), 2.0, "the outbox row must be published")
    assert took < 1.0, f"a woken drainer must publish within 1 s (took {took:.2f} s)"
    assert published_total(stack) > before, "outbox_events_published_total must count it"


def test_row_nobody_woke_the_drainer_for_is_published_by_the_poll(
    chat: ChatClient, info: TargetInfo, app: AppCtx
) -> None:
    """As left by a worker that committed and crashed before publishing."""
    owner = app.user()
    channel = make_channel(owner)
    with open_socket(chat, owner.access_token) as socket:
        socket.subscribe(channel)
        data = {"channel_id": channel, "name": "renamed by a crashed worker"}
        sql(
            info,
            "INSERT INTO outbox (app_id, channel_id, type, data) VALUES ($1, $2, $3, $4::jsonb)",
            app.app_id,
            channel,
            "channel.updated",
            json.dumps(data),
        )
        frame = socket.until(lambda f: f.get("type") == "channel.updated", timeout=3)
    assert frame["data"] == data, f"the event must arrive as stored (got {frame})"


def test_redis_outage_keeps_rows_until_they_are_published(info: TargetInfo, app: AppCtx) -> None:
    """A failed publish rolls back: nothing is marked published that Redis did not take."""
    owner = app.user()
    channel = make_channel(owner)
    redis = info.drills.control["redis"]
    redis.stop()
    try:
        seq = send(owner, channel, "while Redis is down")
        time.sleep(1.0)  # several drain attempts fail meanwhile
        assert not published(info, channel, seq), "a row must stay due while Redis is down"
    finally:
        redis.start()
    wait_for(lambda: published(info, channel, seq), 15.0, "the row must be published after Redis")


def test_drainer_and_sockets_survive_a_postgres_outage(
    chat: ChatClient, info: TargetInfo, app: AppCtx
) -> None:
    owner, reader = app.user(), app.user()
    channel = make_channel(owner, reader)
    postgres = info.drills.control["postgres"]
    with open_socket(chat, reader.access_token) as socket:
        socket.subscribe(channel)
        postgres.stop()
        try:
            failed = owner.client.post(f"/v1/channels/{channel}/messages", {"text": "no db"})
            assert failed.status == 503, f"a send without PostgreSQL must answer 503 ({failed})"
            assert failed.headers.get("retry-after", "").isdigit()
            assert failed.error_code == "dependency_unavailable"
            time.sleep(0.5)
        finally:
            postgres.start()

        def sent() -> bool:
            resp = owner.client.post(f"/v1/channels/{channel}/messages", {"text": "db is back"})
            return resp.status == 201

        wait_for(sent, 20.0, "sends must work again after PostgreSQL is back")
        frame = socket.until(lambda f: f.get("type") == "message.new", timeout=10)
        assert frame["data"]["text"] == "db is back"
    expect(chat.get("/v1/health/ready"), 200)

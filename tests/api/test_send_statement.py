"""The one-statement send (messages.SEND_SQL): what a single CTE in autocommit could get wrong
that the other suites would not notice. The races are made deterministic by holding the
channel row from a test connection until the sends are seen waiting on it in PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest
from chatsdk.messages import CREATED_AT_ISO

from preflight.client import expect
from preflight.targets.base import TargetInfo
from preflight.targets.native import NativeTarget
from tests.api.conftest import AppCtx, UserCtx
from tests.api.test_messages import create, insert_upload, send, sql
from tests.api.test_seq_concurrency import post_direct

WAIT_S = 10.0
WAITING_SENDS = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    "AND query LIKE '%UPDATE channels SET last_seq%' AND datname = current_database()"
)


def channel_rows(info: TargetInfo, cid: str) -> tuple[int, list[Any], list[Any]]:
    """last_seq, the messages and the message.new outbox rows of a channel."""
    last_seq = sql(info, "SELECT last_seq FROM channels WHERE id = $1", cid)[0]["last_seq"]
    messages = sql(info, "SELECT * FROM messages WHERE channel_id = $1 ORDER BY seq", cid)
    events = sql(
        info,
        "SELECT * FROM outbox WHERE channel_id = $1 AND type = 'message.new' ORDER BY seq",
        cid,
    )
    return int(last_seq), messages, events


def while_channel_is_held(
    info: TargetInfo,
    cid: str,
    waiters: int,
    sends: list[Callable[[], tuple[int, Any]]],
    before_release: str | None = None,
    *args: Any,
) -> list[tuple[int, Any]]:
    """Run `sends` while a test transaction holds the channel row; once `waiters` of them wait
    on it in PostgreSQL, run `before_release` in that transaction and commit."""

    async def hold(pool: ThreadPoolExecutor) -> list[Future[tuple[int, Any]]]:
        holder = await asyncpg.connect(info.stores.postgres_dsn, timeout=5)
        watcher = await asyncpg.connect(info.stores.postgres_dsn, timeout=5)
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM channels WHERE id = $1 FOR UPDATE", cid)
                futures = [pool.submit(s) for s in sends]
                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT_S
                while await watcher.fetchval(WAITING_SENDS) < waiters:
                    assert loop.time() < deadline, f"{waiters} sends must wait on the channel row"
                    await asyncio.sleep(0.05)
                if before_release is not None:
                    await holder.execute(before_release, *args)
            return futures
        finally:
            await holder.close(timeout=5)
            await watcher.close(timeout=5)

    with ThreadPoolExecutor(len(sends)) as pool:
        futures = asyncio.run(hold(pool))
        return [f.result(timeout=30) for f in futures]


def direct(
    stack: NativeTarget, user: UserCtx, cid: str, body: dict[str, Any], worker: int
) -> Callable[[], tuple[int, Any]]:
    """A POST straight to one API worker, so two copies surely run on different workers."""
    url = stack.worker_urls[worker % len(stack.worker_urls)]
    path = f"/v1/channels/{cid}/messages"
    return lambda: post_direct(url, user.access_token, path, body)


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-25 19:02:00+00",
        "2026-11-25 19:02:00.000001+00",
        "2026-11-25 19:02:00.12+00",
        "2026-11-25 19:02:59.999999+00",
        "2026-01-01 00:00:00.5+05:30",
    ],
)
def test_created_at_in_sql_is_the_isoformat_of_the_response(info: TargetInfo, stamp: str) -> None:
    """The event's created_at (built in SQL) must be the response's string (built in Python),
    whatever the microseconds and the session's time zone."""

    async def run() -> tuple[datetime.datetime, str]:
        conn = await asyncpg.connect(info.stores.postgres_dsn, timeout=5)
        try:
            await conn.execute("SET TimeZone = 'America/New_York'")
            row = await conn.fetchrow(
                f"SELECT m.created_at, {CREATED_AT_ISO} AS iso "  # noqa: S608
                "FROM (SELECT $1::text::timestamptz AS created_at) AS m",
                stamp,
            )
            assert row is not None
            return row["created_at"], row["iso"]
        finally:
            await conn.close(timeout=5)

    decoded, iso = asyncio.run(run())
    assert iso == decoded.isoformat(), f"created_at of {stamp} must read {decoded.isoformat()}"


@pytest.mark.parametrize("variant", ["plain", "client_msg_id", "reply", "uploads", "all"])
def test_event_data_is_the_response_for_every_variant(
    app: AppCtx, info: TargetInfo, variant: str
) -> None:
    """Sockets and webhooks get message.new's data from the outbox row: it must be exactly the
    201's body, with the attachments linked in the same commit."""
    owner = app.user()
    cid = create(owner)
    root = send(owner, cid, "root")
    body: dict[str, Any] = {"text": f"the {variant} send"}
    if variant in ("client_msg_id", "all"):
        body["client_msg_id"] = f"c-{variant}"
    if variant in ("reply", "all"):
        body["parent_id"] = root["message_id"]
    if variant in ("uploads", "all"):
        body["upload_ids"] = sorted(insert_upload(info, owner) for _ in range(3))[::-1]
    sent = send(owner, cid, **body)
    rows = sql(
        info,
        "SELECT * FROM outbox WHERE channel_id = $1 AND seq = $2 AND type = 'message.new'",
        cid,
        sent["seq"],
    )
    assert len(rows) == 1, f"message {sent['seq']} must have one outbox row (got {len(rows)})"
    event = rows[0]
    assert (event["app_id"], event["user_id"]) == (app.app_id, owner.user_id)
    assert json.loads(event["data"]) == sent, f"the event must be the response (got {event})"
    links = sql(
        info,
        "SELECT upload_id FROM message_uploads WHERE message_id = $1 ORDER BY upload_id",
        sent["message_id"],
    )
    assert [r["upload_id"] for r in links] == sorted(body.get("upload_ids", []))


def test_duplicate_client_msg_id_racing_itself_is_stored_once(
    stack: NativeTarget, app: AppCtx, info: TargetInfo
) -> None:
    """Both copies pass the lookup before the lock (nothing is committed yet) and wait on the
    channel row: the second must meet the first in the unique index, give its seq back and
    answer 200 with the original."""
    owner = app.user()
    cid = create(owner)
    body = {"text": "once", "client_msg_id": "dup-1"}
    sends = [direct(stack, owner, cid, body, worker) for worker in range(2)]
    answers = while_channel_is_held(info, cid, 2, sends)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 201], f"a racing duplicate must answer 201 then 200 (got {answers})"
    assert answers[0][1] == answers[1][1], "both copies must answer the same message"
    last_seq, messages, events = channel_rows(info, cid)
    assert [m["seq"] for m in messages] == [1], "the duplicate must not be stored"
    assert last_seq == 1, f"the duplicate's seq must be given back (last_seq {last_seq})"
    assert [e["seq"] for e in events] == [1], "the duplicate must announce nothing"


def test_send_racing_a_channel_delete_writes_nothing(
    stack: NativeTarget, app: AppCtx, info: TargetInfo
) -> None:
    """Sends already waiting on the channel row when it is deleted must answer 404 and leave no
    message, seq or event behind."""
    owner = app.user()
    cid = create(owner)
    send(owner, cid, "before")
    sends = [direct(stack, owner, cid, {"text": f"late {i}"}, i) for i in range(4)]
    answers = while_channel_is_held(
        info, cid, 4, sends, "UPDATE channels SET deleted_at = now() WHERE id = $1", cid
    )
    assert [status for status, _ in answers] == [404] * 4, f"got {answers}"
    assert all(data["error"]["code"] == "not_found" for _, data in answers)
    last_seq, messages, events = channel_rows(info, cid)
    assert (last_seq, len(messages), len(events)) == (1, 1, 1), "nothing may be written"


def test_attachment_failure_takes_the_message_and_event_with_it(
    stack: NativeTarget, app: AppCtx, info: TargetInfo
) -> None:
    """An upload removed after the check fails the attachment insert: the message, its seq and
    its event must go with it (one statement, one transaction)."""
    owner = app.user()
    cid = create(owner)
    upload = insert_upload(info, owner)
    sends = [direct(stack, owner, cid, {"text": "with file", "upload_ids": [upload]}, 0)]
    answers = while_channel_is_held(
        info, cid, 1, sends, "DELETE FROM uploads WHERE id = $1", upload
    )
    assert answers[0][0] == 500, f"the send must fail (got {answers})"
    last_seq, messages, events = channel_rows(info, cid)
    assert (last_seq, len(messages), len(events)) == (0, 0, 0), "nothing may be written"
    assert expect(owner.client.get(f"/v1/channels/{cid}"), 200)["last_seq"] == 0

"""The restore drill's data set of a real size: at least a million messages and a gigabyte of
message text in one channel of the drill's own tenant, loaded straight into the target's database
with COPY (asyncpg's copy_records_to_table), so the backup and the restore that BAK-RTO times
carry a database of that size, not a handful of rows. Removed again after the drill."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg

# BAK-RTO's data set: a million messages of about 1 KiB of text each, a GiB in all.
MESSAGES = 1_000_000
TEXT_BYTES = 1 << 30
BODY_BYTES = -(-TEXT_BYTES // MESSAGES)  # ceiling: the bodies reach the GiB
# Bodies are slices of this much text of random words: chat-like to compress (a dump of it
# shrinks as a real one does), and no slice repeats another within gzip's window.
POOL_BYTES = 8 << 20
WORDS = 4096
COLUMNS = ("id", "app_id", "channel_id", "seq", "user_id", "kind", "text")
LOAD_TIMEOUT_S = 3600.0
# Tests of other defects may load fewer (a number of messages of the same size): BAK-RTO then
# stays undecided, never passed, since a small restore says nothing of the item's.
SIZE_VARIABLE = "PREFLIGHT_DRILL_MESSAGES"


def messages_to_load() -> int:
    """MESSAGES, or fewer where $PREFLIGHT_DRILL_MESSAGES asks."""
    asked = os.environ.get(SIZE_VARIABLE)
    return MESSAGES if not asked else max(1, min(MESSAGES, int(asked)))


@dataclass(frozen=True)
class DataSet:
    """What was loaded, and how long it took."""

    channel_id: str
    messages: int
    text_bytes: int
    database_growth_bytes: int  # pg_database_size after the load minus before
    load_s: float


def _pool(rng: random.Random) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(WORDS)]
    text: list[str] = []
    size = 0
    while size < POOL_BYTES + BODY_BYTES:
        word = rng.choice(words)
        text.append(word)
        size += len(word) + 1
    return " ".join(text)


def _records(
    app_id: str, channel_id: str, user_id: str, messages: int
) -> Iterator[tuple[str, str, str, int, str, str, str]]:
    rng = random.Random(channel_id)  # noqa: S311 - filler text, not a secret
    pool = _pool(rng)
    for seq in range(1, messages + 1):
        head = f"rto {seq} "
        start = rng.randrange(POOL_BYTES)
        yield (
            f"msg_rto{seq:07d}_{channel_id}",
            app_id,
            channel_id,
            seq,
            user_id,
            "text",
            head + pool[start : start + BODY_BYTES - len(head)],
        )


async def _connect(dsn: str) -> asyncpg.Connection:
    """A connection without the role's statement timeout: a load of a GiB outlasts it."""
    conn = await asyncpg.connect(dsn, timeout=10.0, command_timeout=LOAD_TIMEOUT_S)
    await conn.execute("SET statement_timeout = 0")
    return conn


async def _load(dsn: str, app_id: str, channel_id: str, user_id: str, messages: int) -> DataSet:
    conn = await _connect(dsn)
    try:
        before = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        t0 = time.monotonic()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "messages",
                records=_records(app_id, channel_id, user_id, messages),
                columns=COLUMNS,
            )
            await conn.execute(
                "UPDATE channels SET last_seq = $2 WHERE id = $1", channel_id, messages
            )
        load_s = time.monotonic() - t0
        text = int(
            await conn.fetchval(
                "SELECT sum(octet_length(text)) FROM messages WHERE channel_id = $1", channel_id
            )
        )
        after = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()
    return DataSet(channel_id, messages, text, after - before, load_s)


def load(dsn: str, app_id: str, channel_id: str, user_id: str) -> DataSet:
    """MESSAGES messages of `user_id` (fewer where $PREFLIGHT_DRILL_MESSAGES asks) into the
    (empty) channel, in one transaction."""
    return asyncio.run(_load(dsn, app_id, channel_id, user_id, messages_to_load()))


async def _remove(dsn: str, channel_id: str) -> None:
    conn = await _connect(dsn)
    try:
        # Cascades to the messages; autovacuum makes their space the next writes' again.
        await conn.execute("DELETE FROM channels WHERE id = $1", channel_id)
    finally:
        await conn.close()


def remove(dsn: str, channel_id: str) -> None:
    """The data set's channel and its messages, gone from the target's database."""
    asyncio.run(_remove(dsn, channel_id))

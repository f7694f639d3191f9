"""Stopping the API's background tasks at shutdown, even when one swallows its cancellation.

A single `task.cancel(); await task` waits forever on a task that catches the CancelledError and
carries on. Libraries do that by accident: Python 3.11's asyncio.wait_for (inside asyncpg and
redis-py) can drop a cancellation that arrives while the inner call completes, and redis-py's
get_message can as well. The loop then takes its next turn and the drain hangs until the
supervisor's SIGKILL (seen in the rolling-restart drill under load). So cancel again at every
turn, and give up on a task after a bounded wait instead of holding the whole drain.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("chatsdk.background")

STOP_TIMEOUT = 1.0
RECANCEL_INTERVAL = 0.05


async def stop_task(task: asyncio.Task[None], within: float = STOP_TIMEOUT) -> bool:
    """Cancel `task` until it has ended or `within` seconds pass; True when it ended.

    Its result, or any exception it ended with, is consumed here: at shutdown a failing
    background task has nothing left to do but be logged.
    """
    deadline = time.monotonic() + within
    while not task.done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.warning(
                "background task did not stop within %.1f s; leaving it",
                within,
                extra={"fields": {"task": task.get_name()}},
            )
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(RECANCEL_INTERVAL, remaining))
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning(
            "background task ended with an error: %s",
            type(exc).__name__,
            extra={"fields": {"task": task.get_name()}},
        )
    return True

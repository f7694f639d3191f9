"""Background tasks stop at shutdown even when one swallows its cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest
from chatsdk.background import stop_task


async def _swallows_first_cancellation(turns: list[str]) -> None:
    """What Python 3.11's asyncio.wait_for inside a client library can do: a cancellation that
    arrives as the inner call completes is lost, and the loop takes its next turn."""
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True
            turns.append("swallowed")


def test_a_task_that_swallows_a_cancellation_is_stopped() -> None:
    async def scenario() -> tuple[bool, list[str]]:
        turns: list[str] = []
        task = asyncio.create_task(_swallows_first_cancellation(turns))
        await asyncio.sleep(0.05)
        return await stop_task(task, within=2.0), turns

    stopped, turns = asyncio.run(scenario())
    assert stopped
    assert turns == ["swallowed"], "the task must have swallowed one cancellation"


def test_cancelling_once_hangs_on_such_a_task() -> None:
    """Control: the single cancel that stop_task replaced never ends such a task."""

    async def scenario() -> bool:
        task = asyncio.create_task(_swallows_first_cancellation([]))
        await asyncio.sleep(0.05)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.5)
        await stop_task(task)
        return bool(done)

    assert asyncio.run(scenario()) is False


def test_a_task_that_never_stops_is_left_after_the_wait(caplog: pytest.LogCaptureFixture) -> None:
    async def stubborn(done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    async def scenario() -> tuple[bool, float]:
        done = asyncio.Event()
        task = asyncio.create_task(stubborn(done), name="stubborn")
        await asyncio.sleep(0.02)
        started = time.monotonic()
        stopped = await stop_task(task, within=0.3)
        waited = time.monotonic() - started
        done.set()
        await task
        return stopped, waited

    with caplog.at_level(logging.WARNING, logger="chatsdk.background"):
        stopped, waited = asyncio.run(scenario())
    assert not stopped
    assert 0.3 <= waited < 5.0, "bounded: the drain goes on without it"
    assert [r.getMessage() for r in caplog.records] == [
        "background task did not stop within 0.3 s; leaving it"
    ]
    assert caplog.records[0].fields == {"task": "stubborn"}  # type: ignore[attr-defined]


def test_a_task_that_failed_is_consumed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def scenario() -> bool:
        task = asyncio.create_task(fails(), name="failing")
        await asyncio.sleep(0.01)
        return await stop_task(task)

    with caplog.at_level(logging.WARNING, logger="chatsdk.background"):
        assert asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        "background task ended with an error: RuntimeError"
    ]

"""Waiting for something to come true: ask again every `interval` seconds until it does or
`timeout` seconds have passed. The one polling loop of the harness, its targets and its probes;
what to do when the time is up (fail, raise, carry on) stays with the caller."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

INTERVAL_S = 0.1


@dataclass(frozen=True)
class Polled(Generic[T]):
    """How a wait ended: the last answer, whether it was the one waited for, and the seconds
    from the first question to that answer."""

    value: T
    held: bool
    seconds: float


def poll(
    read: Callable[[], T],
    timeout: float,
    *,
    interval: float = INTERVAL_S,
    accept: Callable[[T], object] = bool,
) -> Polled[T]:
    """Call `read` until `accept` takes its answer (by default: a true one) or `timeout` seconds
    have passed, sleeping `interval` seconds in between. It is always asked at least once, the
    last time at the deadline or just after it; an exception from `read` ends the wait with it."""
    start = time.monotonic()
    while True:
        value = read()
        seconds = time.monotonic() - start
        if accept(value):
            return Polled(value, True, seconds)
        if seconds >= timeout:
            return Polled(value, False, seconds)
        time.sleep(interval)


def until(condition: Callable[[], bool], timeout: float, *, interval: float = INTERVAL_S) -> bool:
    """Whether `condition` came true within `timeout` seconds (see poll)."""
    return poll(condition, timeout, interval=interval).held


def waited(
    condition: Callable[[], bool], timeout: float, *, interval: float = INTERVAL_S
) -> float | None:
    """Seconds until `condition` came true, or None when it did not within `timeout` (see poll)."""
    polled = poll(condition, timeout, interval=interval)
    return polled.seconds if polled.held else None

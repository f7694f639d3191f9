"""Time budgets for probes: a probe phase that runs past its budget is interrupted with
`BudgetExceeded`, carrying the stack it was stuck in, so one hung probe cannot hang the gate.

In the main thread (where `preflight run` and `pytest checks/` run the probes) the budget is a
SIGALRM timer, which interrupts blocking waits (locks, sockets, sleeps, joins) as well as Python
code. Elsewhere a watchdog thread raises the exception asynchronously in the probe's thread; that
reaches it at its next Python bytecode, not inside a blocking C call.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from types import FrameType

DEFAULT_BUDGET_S = 180.0  # a probe phase (setup, call or teardown) unless its marker says more
TARGET_START_BUDGET_S = 900.0  # added to the first setup when the session starts the target


class BudgetExceeded(BaseException):
    """A probe phase ran past its budget. A BaseException, so a probe's `except Exception`
    does not swallow it; pytest still records it as the phase's outcome."""

    def __init__(self, seconds: float = 0.0, stack: str = "") -> None:
        super().__init__(f"ran past its time budget of {seconds:g} s")
        self.seconds = seconds
        self.stack = stack


def _stack(frame: FrameType | None) -> str:
    return "".join(traceback.format_stack(frame)) if frame is not None else ""


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Run the body with a budget of `seconds`; past it, BudgetExceeded is raised in it."""
    if threading.current_thread() is threading.main_thread():
        with _alarm(seconds):
            yield
    else:
        with _watchdog(seconds):
            yield


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def expire(_signum: int, frame: FrameType | None) -> None:
        # Raise once; a probe that catches BaseException gets another chance a second later.
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        raise BudgetExceeded(seconds, _stack(frame))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    target = threading.get_ident()
    done = threading.Event()
    exceeded: list[BudgetExceeded] = []

    def watch() -> None:
        if done.wait(seconds):
            return
        frame = sys._current_frames().get(target)
        exceeded.append(BudgetExceeded(seconds, _stack(frame)))
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(target), ctypes.py_object(BudgetExceeded)
        )

    watcher = threading.Thread(target=watch, name="preflight-budget", daemon=True)
    watcher.start()
    try:
        yield
    except BudgetExceeded:
        # The asynchronous exception arrives as a bare class: give it its budget and stack.
        if exceeded:
            raise exceeded[0] from None
        raise
    finally:
        done.set()
        watcher.join()
        if exceeded:
            # It may not have arrived yet (a blocking C call): clear it so it cannot hit later.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), None)

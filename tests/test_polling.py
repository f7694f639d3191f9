"""The one polling loop: asks until the answer is accepted or the time is up, always at least
once, and tells what it last saw and when."""

from __future__ import annotations

import itertools
import time

import pytest

from preflight.polling import poll, until, waited


def test_it_stops_at_the_first_accepted_answer() -> None:
    answers = itertools.count()
    polled = poll(lambda: next(answers), 5.0, interval=0.001, accept=lambda n: n >= 3)
    assert (polled.value, polled.held) == (3, True)
    assert next(answers) == 4, "asked no more after the answer it waited for"


def test_the_time_up_gives_the_last_answer_after_the_deadline() -> None:
    asked: list[float] = []

    def read() -> str:
        asked.append(time.monotonic())
        return "503"

    polled = poll(read, 0.05, interval=0.01, accept=lambda s: s == "200")
    assert (polled.value, polled.held) == ("503", False)
    assert polled.seconds >= 0.05
    assert asked[-1] - asked[0] >= 0.05, "the last question comes at the deadline or after it"
    assert len(asked) > 1


def test_it_asks_once_even_with_no_time() -> None:
    assert until(lambda: True, 0.0)
    assert not until(lambda: False, 0.0)


def test_waited_gives_seconds_or_none() -> None:
    started = time.monotonic()
    seconds = waited(lambda: time.monotonic() - started >= 0.02, 5.0, interval=0.005)
    assert seconds is not None
    assert 0.02 <= seconds < 5.0
    assert waited(lambda: False, 0.01, interval=0.005) is None


def test_an_exception_ends_the_wait_with_it() -> None:
    def broken() -> bool:
        raise RuntimeError("the child died")

    with pytest.raises(RuntimeError, match="the child died"):
        until(broken, 5.0)

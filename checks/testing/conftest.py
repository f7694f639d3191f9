"""The testing probes' hook: whether a probe's body failed, for fixtures that keep what it left
behind as evidence (the browser journeys' screenshots of every open page)."""

from __future__ import annotations

from collections.abc import Generator

import pytest

CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report

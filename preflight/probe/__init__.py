"""What probes are given: the `target` object (probe/target.py) and the clients it builds on
first use, one module a job: PostgreSQL (pg.py), Redis (redis.py), the log files (logs.py), the
API workers' /metrics and runtime reports (metrics.py) and the web client (web.py)."""

from typing import NoReturn

import pytest

from preflight.outcomes import UNDECIDED


def undecided(reason: str) -> NoReturn:
    """End the probe without a verdict because the target holds nothing to decide from yet (no
    production history over the item's window, say): its item is `unverified` with `reason`,
    never `pass`, and unlike a skip it does not read as "not applicable"."""
    pytest.skip(UNDECIDED + reason)

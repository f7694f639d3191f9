"""The monitoring probes' fixture: the monitoring artefacts of the repository they judge."""

from __future__ import annotations

import pytest

from checks.deployment._artefacts import Repo
from checks.monitoring._monitoring import Monitoring


@pytest.fixture(scope="session")
def monitoring(repo: Repo) -> Monitoring:
    """system/monitoring of the repository given by --repo-dir (default: this one)."""
    return Monitoring.of(repo.root)

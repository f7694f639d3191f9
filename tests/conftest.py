"""Suite-wide guards."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def no_temp_dir_left_behind() -> Iterator[None]:
    """Every target, edge and database a test starts must remove its temp dir."""
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("preflight-*")) | set(tmp.glob("chatsdk-*"))
    yield
    after = set(tmp.glob("preflight-*")) | set(tmp.glob("chatsdk-*"))
    left = sorted(str(p) for p in after - before)
    assert not left, f"tests left temp dirs behind: {left}"

"""Suite-wide guards."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

WORKER_TMP_PREFIX = "xdist-tmp-"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker process gets a temp dir of its own (for itself and every
    process it starts), so the guard below sees only what its own tests left behind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    base = Path(tempfile.gettempdir())
    private = base / f"{WORKER_TMP_PREFIX}{os.getpid()}-{worker}"
    private.mkdir()
    private.chmod(0o1777)  # like /tmp: PostgreSQL runs as its own user and must reach its dirs
    os.environ["TMPDIR"] = str(private)
    tempfile.tempdir = None  # recomputed from TMPDIR on next use
    config.stash[_PRIVATE] = private


def pytest_unconfigure(config: pytest.Config) -> None:
    private = config.stash.get(_PRIVATE, None)
    if private is not None:
        shutil.rmtree(private, ignore_errors=True)


_PRIVATE = pytest.StashKey[Path]()


@pytest.fixture(scope="session", autouse=True)
def no_temp_dir_left_behind() -> Iterator[None]:
    """Every target, edge and database a test starts must remove its temp dir."""
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("preflight-*")) | set(tmp.glob("chatsdk-*"))
    yield
    after = set(tmp.glob("preflight-*")) | set(tmp.glob("chatsdk-*"))
    left = sorted(str(p) for p in after - before)
    assert not left, f"tests left temp dirs behind: {left}"


STACK_LOCK = Path("/run/lock" if Path("/run/lock").is_dir() else tempfile.gettempdir())


@pytest.fixture(scope="module")
def one_heavy_module_at_a_time() -> Iterator[None]:
    """The suite's heavy modules run one at a time across its processes (a file lock for the
    module's duration): the containers targets, fifteen containers each, and the native browser
    journeys, whose timing a deployment starting beside them on a 2-core machine starves."""
    with (STACK_LOCK / "preflight-test-heavy.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

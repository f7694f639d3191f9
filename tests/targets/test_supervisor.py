"""The native target's supervision of its API workers, with real processes standing in for a
worker (one that holds a port, one that exits at once): what is restarted, with which backoff,
what is counted and reported, and what a drill's stop, kill and start do to it."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from preflight.polling import until
from preflight.targets.native.supervisor import ChildControl, RestartPolicy, Supervisor
from preflight.targets.procs import Child, free_port

QUICK = RestartPolicy(first_delay_s=0.1, max_delay_s=0.4, burst=5, interval_s=60.0)
BACK_WITHIN_S = 10.0  # a generous bound on a restart that is due after at most 0.4 s
# How long a test waits to see that nothing is restarted: many times the backoff it gives.
QUIET_S = 1.5

# A stand-in worker: it holds its port (a second one on the same port exits at once) and runs
# until killed.
HOLD_PORT = (
    "import socket, sys, time\n"
    "s = socket.socket()\n"
    "s.bind(('127.0.0.1', int(sys.argv[1])))\n"
    "s.listen()\n"
    "time.sleep(600)\n"
)


class Watched:
    """One supervisor with one stand-in worker api-0, and what it told its log."""

    def __init__(self, tmp: Path, policy: RestartPolicy | None, code: str = HOLD_PORT) -> None:
        self.port = free_port()
        self.supervisor = Supervisor(policy)
        self.lines: list[str] = []
        self.marker = f"supervised-stand-in-{self.port}"
        argv = [sys.executable, "-c", code, str(self.port), self.marker]
        self.child = self.supervisor.spawn(Child("api-0", argv, tmp / "api-0.log"))
        self.control: ChildControl = self.supervisor.controls()["api-0"]
        self.supervisor.supervise(self.lines.append)

    def log(self) -> str:
        return "\n".join(self.lines)

    def holders(self) -> list[int]:
        """Pids of the processes running the stand-in on this port (at most one may)."""
        return [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and self.marker in _cmdline(entry)
        ]


def _cmdline(entry: Path) -> str:
    try:
        return (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Watched]:
    w = Watched(tmp_path, QUICK)
    yield w
    w.supervisor.stop_all({})


def _restarted_from(w: Watched, old: int) -> bool:
    return w.child.running() and w.child.pid != old


def test_a_worker_killed_from_outside_is_restarted_and_counted(
    watched: Watched,
) -> None:
    first = watched.child.pid
    os.kill(first, signal.SIGKILL)
    assert until(lambda: _restarted_from(watched, first), BACK_WITHIN_S)
    assert watched.supervisor.restarts == {"api-0": 1}
    assert f"api-0 (pid {first}) exited unasked with signal SIGKILL" in watched.log()
    assert "restarting it in 0.1 s" in watched.log()
    assert f"api-0 restarted (pid {first} -> {watched.child.pid}), restart 1" in watched.log()
    assert watched.supervisor.crashed() == []
    # The backoff doubles with each restart within the interval.
    second = watched.child.pid
    os.kill(second, signal.SIGTERM)  # any exit it was not asked for, not only SIGKILL
    assert until(lambda: _restarted_from(watched, second), BACK_WITHIN_S)
    assert "exited unasked with signal SIGTERM; restarting it in 0.2 s" in watched.log()
    assert watched.supervisor.restarts == {"api-0": 2}
    assert watched.holders() == [watched.child.pid]


def test_a_worker_that_keeps_exiting_is_given_up_and_reported(tmp_path: Path) -> None:
    policy = RestartPolicy(first_delay_s=0.05, max_delay_s=0.1, burst=3, interval_s=60.0)
    w = Watched(tmp_path, policy, code="raise SystemExit(3)")
    try:
        assert until(lambda: "api-0" in w.supervisor.given_up, BACK_WITHIN_S)
        assert w.supervisor.restarts == {"api-0": 3}
        assert "exited unasked with exit code 3 after 3 restarts within 60 s" in w.log()
        assert "giving up on api-0, it stays down" in w.log()
        assert [c.name for c in w.supervisor.crashed()] == ["api-0"]
        assert "exit code 3" in w.supervisor.crashed()[0].crashed_message()
    finally:
        w.supervisor.stop_all({})


def test_a_drills_stop_is_deliberate_and_its_start_brings_the_worker_back(
    watched: Watched,
) -> None:
    watched.control.stop()
    time.sleep(QUIET_S)
    assert not watched.child.running()
    assert watched.supervisor.restarts == {}
    assert watched.supervisor.crashed() == []
    watched.control.start()
    assert watched.child.running()
    assert watched.holders() == [watched.child.pid]


def test_a_drills_kill_is_a_crash_the_supervisor_restarts(watched: Watched) -> None:
    first = watched.child.pid
    watched.control.kill()
    assert until(lambda: _restarted_from(watched, first), BACK_WITHIN_S)
    assert watched.supervisor.restarts == {"api-0": 1}
    # The drill's own start afterwards finds it running and changes nothing.
    restarted = watched.child.pid
    watched.control.start()
    assert watched.child.pid == restarted
    assert watched.holders() == [restarted]


def test_a_drills_start_before_the_restart_is_due_cancels_it(tmp_path: Path) -> None:
    """One process on the worker's port, started by the drill; the supervisor starts none."""
    slow = RestartPolicy(first_delay_s=0.5, max_delay_s=0.5, burst=5, interval_s=60.0)
    w = Watched(tmp_path, slow)
    try:
        first = w.child.pid
        w.control.kill()
        assert until(lambda: "exited unasked with signal SIGKILL" in w.log(), BACK_WITHIN_S)
        w.control.start()
        started = w.child.pid
        assert started != first
        time.sleep(QUIET_S)  # well past when the supervisor's restart was due
        assert w.child.pid == started
        assert w.child.running()
        assert w.supervisor.restarts == {}
        assert "api-0 started by a drill before its restart was due" in w.log()
        assert w.holders() == [started]
    finally:
        w.supervisor.stop_all({})


def test_unsupervised_a_kill_from_outside_is_reported_and_a_drills_kill_is_not(
    tmp_path: Path,
) -> None:
    w = Watched(tmp_path, None)
    try:
        first = w.child.pid
        os.kill(first, signal.SIGKILL)
        assert until(lambda: not w.child.running(), BACK_WITHIN_S)
        time.sleep(QUIET_S)
        assert not w.child.running()
        assert [c.name for c in w.supervisor.crashed()] == ["api-0"]
        w.control.start()
        assert w.supervisor.crashed() == []
        w.control.kill()  # deliberate: the drill starts it again itself
        assert w.supervisor.crashed() == []
        assert not w.child.running()
        assert w.lines == []
    finally:
        w.supervisor.stop_all({})


def test_stopping_everything_ends_supervision_and_leaves_nothing_running(
    watched: Watched,
) -> None:
    os.kill(watched.child.pid, signal.SIGKILL)
    watched.supervisor.stop_all({})
    time.sleep(QUIET_S)
    assert watched.holders() == []

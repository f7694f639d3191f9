"""The native target's child processes: each started and remembered with how it was started, so
that a drill can stop, kill and start it again the same way; stopped in order; reported when
one exits without being asked to.

The API workers are supervised as systemd's `Restart=on-failure` supervises a service: a worker
that exits without being asked to (a crash, a signal such as the OOM killer's SIGKILL, a
non-zero exit) is started again after a backoff that doubles with each restart; the edge sends
it requests again once it listens (it never left the edge's upstream). A worker that keeps
exiting (more restarts within an interval than the policy allows, systemd's StartLimitBurst and
StartLimitIntervalSec) is given up and reported as crashed, like every other component that
exits unasked.

What a drill does through its control (ChildControl) is not a crash, with one exception:
- `stop()` is deliberate (`systemctl stop`): the worker stays down until `start()`.
- `kill()` of a supervised worker simulates a crash, so the supervisor restarts it, as it would
  in production. Killing any other component, or a worker while supervision is off, is
  deliberate: the drill starts it again itself.
- `start()` starts the component unless it already runs, under the same lock as the
  supervisor's restart: a drill that starts a worker the supervisor already restarted changes
  nothing, and a drill that starts it before its restart is due cancels that restart. Either
  way one process serves the worker's port, and `start()` never fails because of the other.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from preflight.errors import PreflightError
from preflight.targets.procs import Child, RunAs

Launch = tuple[dict[str, str] | None, RunAs | None]  # a child's environment and user
WATCH_INTERVAL_S = 0.1  # how often the supervisor looks at its workers


def is_worker(name: str) -> bool:
    """API workers are the children named api-0, api-1, ..."""
    return name.startswith("api-")


@dataclass(frozen=True)
class RestartPolicy:
    """When a supervised worker that exited unasked starts again: the n-th restart within
    `interval_s` waits `first_delay_s` * 2**(n-1), at most `max_delay_s`; one more exit after
    `burst` restarts within `interval_s` and the worker is given up."""

    first_delay_s: float = 0.5
    max_delay_s: float = 8.0
    burst: int = 5
    interval_s: float = 60.0

    def delay(self, recent: int) -> float:
        """The wait before the next restart, after `recent` restarts within the interval."""
        return float(min(self.first_delay_s * 2**recent, self.max_delay_s))


@dataclass(frozen=True)
class ChildControl:
    """Drill control over one child process of the native target (base.ComponentControl); see
    the module's docstring for what is a crash and what is deliberate."""

    child: Child
    supervisor: Supervisor

    def stop(self) -> int | None:
        with self.supervisor.lock(self.child.name):
            return self.child.stop()

    def kill(self) -> None:
        self.child.kill(expected=not self.supervisor.supervises(self.child))

    def start(self) -> None:
        self.supervisor.start_again(self.child)


class Supervisor:
    """The children of one native target, in the order they were started, and, once
    `supervise` is called with a policy, the supervision of its API workers."""

    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.children: list[Child] = []
        self.start_args: dict[str, Launch] = {}
        self.policy = policy  # None: nothing is restarted (NativeOptions.supervise=False)
        # Per worker: how many times the supervisor restarted it, and the workers given up.
        self.restarts: dict[str, int] = {}
        self.given_up: set[str] = set()
        self._recent: dict[str, list[float]] = {}  # monotonic times of recent restarts
        self._due: dict[str, float] = {}  # a restart waiting out its backoff
        self._locks: dict[str, threading.Lock] = {}
        self._log: Callable[[str], None] = lambda _msg: None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def spawn(
        self, child: Child, env: dict[str, str] | None = None, run_as: RunAs | None = None
    ) -> Child:
        child.start(env=env, run_as=run_as)
        self.children.append(child)
        self.start_args[child.name] = (env, run_as)
        return child

    def child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def lock(self, name: str) -> threading.Lock:
        """Held while a child is stopped or started, by a drill or by the supervisor."""
        return self._locks.setdefault(name, threading.Lock())

    def _launch(self, child: Child) -> None:
        # Looked up at each start: a worker put on another release restarts on that release.
        env, run_as = self.start_args[child.name]
        child.start(env=env, run_as=run_as)

    def start_again(self, child: Child) -> bool:
        """Start `child` as it was last started unless it runs (a drill's start); whether it
        did. A restart of the supervisor still waiting out its backoff is cancelled."""
        with self.lock(child.name):
            if self._due.pop(child.name, None) is not None:
                self._log(f"{child.name} started by a drill before its restart was due")
            if child.running():
                return False
            self._launch(child)
            return True

    def relaunch(self, child: Child, env: dict[str, str]) -> int | None:
        """Stop `child` gracefully and start it again with `env` (kept for later restarts); the
        old process's exit code."""
        with self.lock(child.name):
            code = child.stop()
            run_as = self.start_args[child.name][1]
            self.start_args[child.name] = (env, run_as)
            self._due.pop(child.name, None)
            self._launch(child)
        return code

    def controls(self) -> dict[str, ChildControl]:
        """A control per child. A graceful stop of an API worker is a bare SIGTERM: the worker
        drains itself and the edge copes (system/nginx), nothing takes it out first."""
        return {c.name: ChildControl(c, self) for c in self.children}

    # -- supervision ---------------------------------------------------------------------------

    def supervise(self, log: Callable[[str], None]) -> None:
        """From now on, restart API workers that exit unasked (nothing without a policy); every
        exit, restart and give-up is told to `log` with the exit's reason."""
        if self.policy is None or self._thread is not None:
            return
        self._log = log
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def supervises(self, child: Child) -> bool:
        """Whether `child` is restarted when it exits unasked."""
        return self._thread is not None and is_worker(child.name)

    def _watch(self) -> None:
        while not self._closing.wait(WATCH_INTERVAL_S):
            for child in list(self.children):
                if not is_worker(child.name):
                    continue
                lock = self.lock(child.name)
                if not lock.acquire(blocking=False):
                    continue  # a drill is stopping, starting or redeploying it
                try:
                    self._look_at(child, time.monotonic())
                finally:
                    lock.release()

    def _look_at(self, child: Child, now: float) -> bool:
        """One look at a worker (its lock held): note an unasked exit and when to restart it,
        restart it once that is due, or give it up; whether it was restarted."""
        assert self.policy is not None
        name = child.name
        if child.running() or child.expected_exit or name in self.given_up:
            self._due.pop(name, None)
            return False
        due = self._due.get(name)
        if due is None:
            window = now - self.policy.interval_s
            recent = self._recent[name] = [t for t in self._recent.get(name, []) if t > window]
            how = f"{name} (pid {child.pid}) exited unasked with {child.exit_reason()}"
            if len(recent) >= self.policy.burst:
                self._give_up(
                    name, f"{how} after {len(recent)} restarts within {self.policy.interval_s:g} s"
                )
                return False
            delay = self.policy.delay(len(recent))
            self._due[name] = now + delay
            self._log(f"{how}; restarting it in {delay:g} s")
            return False
        if now < due:
            return False
        del self._due[name]
        old = child.pid
        try:
            self._launch(child)
        except (OSError, PreflightError) as exc:
            self._give_up(name, f"{name} could not be restarted: {exc}")
            return False
        self._recent[name].append(now)
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self._log(f"{name} restarted (pid {old} -> {child.pid}), restart {self.restarts[name]}")
        return True

    def _give_up(self, name: str, why: str) -> None:
        self.given_up.add(name)
        self._log(f"{why}: giving up on {name}, it stays down")

    # -- the end -------------------------------------------------------------------------------

    def stop_all(self, order: Mapping[str, int]) -> None:
        """End supervision, SIGTERM every API worker so they drain in parallel, then stop every
        child in `order` (a rank per name; unnamed children rank 1), whatever fails on the way."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for c in self.children:
            if is_worker(c.name):
                c.expected_exit = True
                c.signal(signal.SIGTERM)
        for child in sorted(self.children, key=lambda c: order.get(c.name, 1)):
            with contextlib.suppress(Exception):
                child.stop()
        self.children.clear()

    def crashed(self) -> list[Child]:
        """Children that exited without being asked to, but for supervised workers still
        being restarted (a worker given up is reported)."""
        return [
            c
            for c in self.children
            if not c.expected_exit
            and not c.running()
            and not (self.supervises(c) and c.name not in self.given_up)
        ]
